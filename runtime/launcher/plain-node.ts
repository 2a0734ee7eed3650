/**
 * The `node` on the app's PATH: the bundle's own Node as a plain Node. A single executable
 * does not parse Node's command line (it hands every argument to its main script), so a bundle
 * cannot stand in for `node -p ...`, `node --test`, `node -` or the REPL. The runtime
 * executable's bytes with the single-executable fuse set back to '0' are exactly that Node, of
 * the same version. Copied once per runtime (the index records its size, SHA-256 and the
 * fuse's offset) to `$XDG_CACHE_HOME/overpack/node/<sha256>/node`, shared by every bundle with
 * that runtime; checked against the SHA-256 while it is copied.
 */
import fs from 'node:fs';
import path from 'node:path';
import { crypto } from '../builtins.js';
import type { RuntimeRecord } from '../image/format.js';
import { privateDir } from './paths.js';
import { execCacheRoot } from './exec-dir.js';
import { loadedByLoader } from './self.js';

const CHUNK = 4 << 20;

export function plainNodePath(record: RuntimeRecord): string {
  return path.join(execCacheRoot(), 'node', record.sha256.slice(0, 32), 'node');
}

/**
 * The plain Node for this bundle's runtime, copied out on first use; null for older bundles.
 * Copied from the running runtime's own file: the bundle's first bytes when it is stored raw,
 * the loader's decompressed runtime otherwise.
 */
export function plainNode(record: RuntimeRecord | undefined): string | null {
  if (!record) return null;
  const file = plainNodePath(record);
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (st && st.size === record.size) return file;
  privateDir(path.dirname(file));
  const tmp = `${file}.tmp-${process.pid}`;
  if (loadedByLoader()) {
    // The runtime's own file is exactly the runtime, checked by the loader (zstd's checksum)
    // when it was decompressed: copied by the kernel, not hashed again.
    try {
      fs.copyFileSync('/proc/self/exe', tmp);
      const out = fs.openSync(tmp, 'r+');
      try {
        fs.writeSync(out, '0', record.seaFuse);
      } finally {
        fs.closeSync(out);
      }
      fs.chmodSync(tmp, 0o700);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    fs.renameSync(tmp, file);
    return file;
  }
  const out = fs.openSync(tmp, 'w', 0o700);
  const self = fs.openSync('/proc/self/exe', 'r');
  try {
    const hash = crypto().createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; pos < record.size; ) {
      const n = fs.readSync(self, buf, 0, Math.min(CHUNK, record.size - pos), pos);
      if (n <= 0) throw new Error('the runtime executable ends before its recorded size');
      hash.update(buf.subarray(0, n));
      fs.writeSync(out, buf, 0, n, pos);
      pos += n;
    }
    if (hash.digest('hex') !== record.sha256) throw new Error("the bundle's runtime executable does not match its SHA-256 in the index");
    fs.writeSync(out, '0', record.seaFuse);
  } catch (err) {
    fs.closeSync(out);
    fs.rmSync(tmp, { force: true });
    throw err;
  } finally {
    fs.closeSync(self);
  }
  fs.closeSync(out);
  fs.renameSync(tmp, file); // another launch may have won the race: its copy is the same
  return file;
}
