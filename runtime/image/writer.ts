/**
 * Writes an image (format.ts) after the bytes already in a bundle file: walks the app
 * directory in sorted order, stores each distinct content once, back to back, then the tree
 * (tree.ts), the index and the footer. Same directory in, same bytes out.
 */
import { isUtf8 } from 'node:buffer';
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { Blake3, blake3 } from '../hash/blake3.js';
import { alignUp, encodeFooter, FLAG_SIGNED, IMAGE_VERSION, sha256, type ImageAddon, type ImageEntry, type ImageIndex, type ImageRuntime, type RuntimeRecord } from './format.js';
import { CHUNK_SIZE, encodeTree } from './tree.js';

export interface ImageSource {
  appDir: string;
  manifest: unknown;
  /** Native addons to ship: name in the bundle → file on disk. */
  addons: Array<{ name: string; file: string }>;
  /** What the bundle runs on, recorded in the index (inspect, --overpack-info). */
  runtime?: ImageRuntime;
  /** Called for paths that are skipped (special files) with the reason. */
  onWarning?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
  /** Sets the footer's SIGNED flag: the caller appends a signature trailer (signature.ts) next. */
  signed?: boolean;
  /** What the bundle's first bytes are (the runtime executable), recorded in the index. */
  executable?: RuntimeRecord;
}

export interface ImageStats {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number; // sum of file sizes
  storedBytes: number; // after dedup
  dedupSaved: number;
}

export class BuildError extends Error {
  constructor(readonly path: string, readonly op: string, message: string) {
    super(message);
    this.name = 'BuildError';
  }
}

function readXattrs(p: string): Record<string, string> | undefined {
  let names: string[];
  try {
    names = xattr.listAttributesSync(p);
  } catch {
    return undefined;
  }
  if (names.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const n of names.sort()) out[n] = xattr.getAttributeSync(p, n).toString('base64');
  return out;
}

/** Collects entries in a fixed order: a directory's children sorted by name, depth first. */
function walk(src: ImageSource): Array<ImageEntry & { real: string }> {
  const out: Array<ImageEntry & { real: string }> = [];
  const visit = (rel: string, real: string) => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(real);
    } catch (err) {
      throw new BuildError(real, 'lstat', `cannot read ${real}: ${(err as Error).message}`);
    }
    const base = { path: rel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.floor(st.mtimeMs), real };
    if (st.isDirectory()) {
      out.push({ ...base, type: 'dir', size: 0, xattrs: readXattrs(real) });
      let raw: Buffer[];
      try {
        raw = fs.readdirSync(real, { encoding: 'buffer' });
      } catch (err) {
        throw new BuildError(real, 'readdir', `cannot list ${real}: ${(err as Error).message}`);
      }
      // Byte order, the order the tree keeps siblings in (JS string order differs for some
      // characters outside the BMP).
      const names = raw.sort(Buffer.compare).map((b) => {
        // Paths are JS strings from here to the mount: other bytes would not survive the trip.
        if (!isUtf8(b)) {
          throw new BuildError(real, 'readdir', `${real} holds a file name that is not valid UTF-8 (bytes ${b.toString('hex')}); rename it before building`);
        }
        return b.toString('utf8');
      });
      for (const name of names) visit(rel === '/' ? `/${name}` : `${rel}/${name}`, `${real}/${name}`);
    } else if (st.isSymbolicLink()) {
      const target = fs.readlinkSync(real);
      const resolved = path.resolve(path.dirname(real), target);
      if (path.isAbsolute(target) || !resolved.startsWith(src.appDir + path.sep)) {
        src.onWarning?.(`${rel}: symlink points outside the app (${target}); stored as a link, it will resolve on the user's machine`);
      }
      out.push({ ...base, type: 'symlink', size: Buffer.byteLength(target), target });
    } else if (st.isFile()) {
      out.push({ ...base, type: 'file', size: st.size, xattrs: readXattrs(real) });
    } else {
      src.onWarning?.(`${rel}: skipped (fifos, sockets and device nodes cannot be stored in an image)`);
    }
  };
  visit('/', src.appDir);
  return out;
}

/**
 * Appends file contents at the end of a bundle through a staging buffer: small files (most of
 * a node_modules) cost no write call of their own, and a duplicate is dropped by rewinding.
 */
class DataWriter {
  private readonly stage = Buffer.allocUnsafe(4 << 20);
  private staged = 0;
  /** Big files stream through this, one verification piece (tree.ts) at a time. */
  private readonly chunk = Buffer.allocUnsafe(CHUNK_SIZE);

  /** `pos`: where the next byte goes in the bundle. */
  constructor(private readonly fd: number, public pos: number) {}

  private flush(): void {
    for (let done = 0; done < this.staged; ) done += fs.writeSync(this.fd, this.stage, done, this.staged - done, this.pos - this.staged + done);
    this.staged = 0;
  }

  /**
   * Appends the `size` bytes of file `real` and returns where they start, their BLAKE3 and,
   * past CHUNK_SIZE, the BLAKE3 of each piece. `undo()` right after takes them back (the
   * content was a duplicate).
   */
  append(real: string, size: number): { offset: number; hash: Buffer; chunks?: Buffer } {
    let rfd: number;
    try {
      rfd = fs.openSync(real, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new BuildError(real, 'read', code === 'EACCES' ? `${real} is not readable; fix its permissions or remove it from the app` : `cannot read ${real}: ${(err as Error).message}`);
    }
    const start = this.pos;
    this.last = { start, staged: this.staged, size };
    let hash: Buffer;
    let chunks: Buffer | undefined;
    try {
      if (size <= CHUNK_SIZE) {
        // Small: read into the stage and hash it there in one call.
        if (this.staged + size > this.stage.length) this.flush();
        this.last.staged = this.staged;
        this.fill(rfd, real, this.stage, this.staged, size);
        hash = blake3(this.stage.subarray(this.staged, this.staged + size));
        this.staged += size;
      } else {
        this.flush();
        this.last.staged = -1;
        const hasher = new Blake3();
        const pieces: Buffer[] = [];
        for (let done = 0; done < size; ) {
          const n = this.fill(rfd, real, this.chunk, 0, Math.min(this.chunk.length, size - done));
          hasher.update(this.chunk.subarray(0, n));
          pieces.push(blake3(this.chunk.subarray(0, n)));
          fs.writeSync(this.fd, this.chunk, 0, n, start + done);
          done += n;
        }
        hash = hasher.digest();
        chunks = Buffer.concat(pieces);
      }
    } finally {
      fs.closeSync(rfd);
    }
    this.pos = start + size;
    return { offset: start, hash, chunks };
  }

  private last: { start: number; staged: number; size: number } | null = null;

  /** Takes back the last append. */
  undo(): void {
    const l = this.last!;
    if (l.staged >= 0) this.staged = l.staged;
    else fs.ftruncateSync(this.fd, l.start);
    this.pos = l.start;
    this.last = null;
  }

  /** Reads exactly `size` bytes of `rfd` (from its current position) into `buf` at `at`. */
  private fill(rfd: number, real: string, buf: Buffer, at: number, size: number): number {
    let done = 0;
    while (done < size) {
      const n = fs.readSync(rfd, buf, at + done, size - done, null);
      if (n === 0) throw new BuildError(real, 'read', `${real} shrank while being read`);
      done += n;
    }
    return size;
  }

  /** Writes `bytes` at the end and returns where they start. */
  appendBytes(bytes: Buffer): number {
    this.flush();
    const start = this.pos;
    for (let done = 0; done < bytes.length; ) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, start + done);
    this.pos += bytes.length;
    return start;
  }

  end(): number {
    this.flush();
    return this.pos;
  }
}

/** Appends the image to `bundle` (which holds the executable) and returns what was stored. */
export async function appendImage(bundle: string, src: ImageSource): Promise<ImageStats> {
  const entries = walk(src);
  const fd = fs.openSync(bundle, 'r+');
  try {
    const imageStart = alignUp(fs.fstatSync(fd).size);
    const out = new DataWriter(fd, imageStart);
    const stored = new Map<string, { offset: number; chunks?: Buffer }>(); // content hash → where
    const stats: ImageStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0, storedBytes: 0, dedupSaved: 0 };
    const files = entries.filter((e) => e.type === 'file');
    let done = 0;
    for (const e of entries) {
      if (e.type === 'dir') stats.dirs++;
      if (e.type === 'symlink') stats.symlinks++;
      if (e.type !== 'file') continue;
      // One pass per file: hash while copying it in, and if the content turns out to be
      // stored already, take the copy back. Hashing first and copying in a second pass took
      // 4x longer than mksquashfs on node_modules.
      const { offset, hash: digest, chunks } = out.append(e.real, e.size);
      const hash = digest.toString('hex');
      e.hash = hash;
      e.chunks = chunks;
      stats.files++;
      stats.bytes += e.size;
      const known = stored.get(hash);
      if (known !== undefined) {
        out.undo();
        e.offset = known.offset;
        stats.dedupSaved += e.size;
      } else {
        e.offset = offset;
        stored.set(hash, { offset, chunks });
        stats.storedBytes += e.size;
      }
      if (++done % 256 === 0 || done === files.length) src.onProgress?.(done, files.length);
    }
    const addons: ImageAddon[] = [];
    for (const a of src.addons) {
      const size = fs.statSync(a.file).size;
      const hash = sha256(fs.readFileSync(a.file)).toString('hex');
      addons.push({ name: a.name, hash, size, offset: out.append(a.file, size).offset });
    }
    const tree = encodeTree(entries.map(({ real: _real, ...e }) => e));
    const treeOffset = out.appendBytes(tree.bytes);
    const index: ImageIndex = {
      format: 'overpack-image',
      version: IMAGE_VERSION,
      manifest: src.manifest,
      addons,
      ...(src.runtime ? { runtime: src.runtime } : {}),
      tree: { offset: treeOffset, ...tree.location },
      ...(src.executable ? { executable: src.executable } : {}),
    };
    const indexBytes = Buffer.from(JSON.stringify(index), 'utf8');
    const indexOffset = out.appendBytes(indexBytes);
    const footer = encodeFooter({ version: IMAGE_VERSION, flags: src.signed ? FLAG_SIGNED : 0, imageStart, indexOffset, indexLength: indexBytes.length, indexHash: sha256(indexBytes) });
    out.appendBytes(footer);
    fs.ftruncateSync(fd, out.end());
    return stats;
  } finally {
    fs.closeSync(fd);
  }
}
