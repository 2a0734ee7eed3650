/**
 * Writes an image (format.ts) after the bytes already in a bundle file: walks the app
 * directory in sorted order, stores each distinct content once on a 4 KiB boundary, then the
 * index and the footer. Same directory in, same bytes out.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { Blake3 } from '../hash/blake3.js';
import { alignUp, encodeFooter, FLAG_SIGNED, IMAGE_VERSION, sha256, type ImageAddon, type ImageEntry, type ImageIndex } from './format.js';

export interface ImageSource {
  appDir: string;
  manifest: unknown;
  /** Native addons to ship: name in the bundle → file on disk. */
  addons: Array<{ name: string; file: string }>;
  /** Called for paths that are skipped (special files) with the reason. */
  onWarning?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
  /** Sets the footer's SIGNED flag: the caller appends a signature trailer (signature.ts) next. */
  signed?: boolean;
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
      const names = raw.map((b) => {
        const name = b.toString('utf8');
        // The index is JSON text: a name that is not valid UTF-8 cannot be stored faithfully.
        if (!Buffer.from(name, 'utf8').equals(b)) {
          throw new BuildError(real, 'readdir', `${real} holds a file name that is not valid UTF-8 (bytes ${b.toString('hex')}); rename it before building`);
        }
        return name;
      });
      for (const name of names.sort()) visit(rel === '/' ? `/${name}` : `${rel}/${name}`, path.join(real, name));
    } else if (st.isSymbolicLink()) {
      const target = fs.readlinkSync(real);
      const resolved = path.resolve(path.dirname(real), target);
      if (path.isAbsolute(target) || !resolved.startsWith(src.appDir + path.sep)) {
        src.onWarning?.(`${rel}: symlink points outside the app (${target}); stored as a link, it will resolve on the user's machine`);
      }
      out.push({ ...base, type: 'symlink', size: Buffer.byteLength(target), target });
    } else if (st.isFile()) {
      try {
        fs.accessSync(real, fs.constants.R_OK);
      } catch {
        throw new BuildError(real, 'read', `${real} is not readable; fix its permissions or remove it from the app`);
      }
      out.push({ ...base, type: 'file', size: st.size, xattrs: readXattrs(real) });
    } else {
      src.onWarning?.(`${rel}: skipped (fifos, sockets and device nodes cannot be stored in an image)`);
    }
  };
  visit('/', src.appDir);
  return out;
}

/** Appends the image to `bundle` (which holds the executable) and returns what was stored. */
export async function appendImage(bundle: string, src: ImageSource): Promise<ImageStats> {
  const entries = walk(src);
  const fd = fs.openSync(bundle, 'r+');
  try {
    let pos = fs.fstatSync(fd).size;
    const imageStart = alignUp(pos);
    pos = imageStart;
    const stored = new Map<string, number>(); // hash → offset
    const stats: ImageStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0, storedBytes: 0, dedupSaved: 0 };
    const buf = Buffer.alloc(1 << 20);
    const copyIn = (real: string, size: number, hasher?: Blake3): number => {
      const offset = alignUp(pos);
      const rfd = fs.openSync(real, 'r');
      try {
        let done = 0;
        while (done < size) {
          const n = fs.readSync(rfd, buf, 0, Math.min(buf.length, size - done), done);
          if (n === 0) throw new BuildError(real, 'read', `${real} shrank while being read`);
          hasher?.update(buf.subarray(0, n));
          fs.writeSync(fd, buf, 0, n, offset + done);
          done += n;
        }
      } finally {
        fs.closeSync(rfd);
      }
      pos = offset + size;
      return offset;
    };
    const files = entries.filter((e) => e.type === 'file');
    let done = 0;
    for (const e of entries) {
      if (e.type === 'dir') stats.dirs++;
      if (e.type === 'symlink') stats.symlinks++;
      if (e.type !== 'file') continue;
      // One synchronous pass per file: hash while copying it in at the end of the bundle, and
      // if the content turns out to be stored already, cut the copy off again (the bundle
      // always ends at `pos`, so truncating restores it exactly). Hashing first with async
      // reads and copying in a second pass took 4x longer than mksquashfs on node_modules.
      const before = pos;
      const h = new Blake3();
      const offset = copyIn(e.real, e.size, h);
      const hash = h.digest().toString('hex');
      e.hash = hash;
      stats.files++;
      stats.bytes += e.size;
      const known = stored.get(hash);
      if (known !== undefined) {
        fs.ftruncateSync(fd, before);
        pos = before;
        e.offset = known;
        stats.dedupSaved += e.size;
      } else {
        e.offset = offset;
        stored.set(hash, offset);
        stats.storedBytes += e.size;
      }
      src.onProgress?.(++done, files.length);
    }
    const addons: ImageAddon[] = [];
    for (const a of src.addons) {
      const size = fs.statSync(a.file).size;
      const hash = sha256(fs.readFileSync(a.file)).toString('hex');
      addons.push({ name: a.name, hash, size, offset: copyIn(a.file, size) });
    }
    const index: ImageIndex = {
      format: 'overpack-image',
      version: IMAGE_VERSION,
      manifest: src.manifest,
      entries: entries.map(({ real: _real, ...e }) => e),
      addons,
    };
    const indexBytes = Buffer.from(JSON.stringify(index), 'utf8');
    const indexOffset = pos;
    fs.writeSync(fd, indexBytes, 0, indexBytes.length, indexOffset);
    const footer = encodeFooter({ version: IMAGE_VERSION, flags: src.signed ? FLAG_SIGNED : 0, imageStart, indexOffset, indexLength: indexBytes.length, indexHash: sha256(indexBytes) });
    fs.writeSync(fd, footer, 0, footer.length, indexOffset + indexBytes.length);
    fs.ftruncateSync(fd, indexOffset + indexBytes.length + footer.length);
    return stats;
  } finally {
    fs.closeSync(fd);
  }
}
