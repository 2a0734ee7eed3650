/**
 * Writes an image (format.ts) after the bytes already in a bundle file: walks the app
 * directory in sorted order, stores each distinct content once in frames (writer-frames.ts),
 * then the tree (tree-encode.ts), the index and the footer. Same directory in, same bytes out.
 */
import { isUtf8 } from 'node:buffer';
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { DEFAULT_COMPRESSION, describeCompression, type Compression } from './codec.js';
import { alignUp, encodeFooter, FLAG_SIGNED, IMAGE_VERSION, sha256, type ImageAddon, type ImageEntry, type ImageIndex, type ImageRuntime, type LoaderRecord, type RuntimeRecord } from './format.js';
import { encodeTree } from './tree-encode.js';
import { BuildError, FrameWriter, type StoredContent } from './writer-frames.js';

export { BuildError } from './writer-frames.js';

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
  /** How file contents are stored; DEFAULT_COMPRESSION when absent. */
  compression?: Compression;
  /** The bundle starts with the loader and the runtime compressed (format.ts). */
  loader?: LoaderRecord;
}

export interface ImageStats {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number; // sum of file sizes
  distinctBytes: number; // after dedup
  dedupSaved: number;
  /** Bytes the contents take in the bundle, after dedup and compression. */
  storedBytes: number;
  frames: number;
  compression: string;
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

/** Appends the image to `bundle` (which holds the executable) and returns what was stored. */
export async function appendImage(bundle: string, src: ImageSource): Promise<ImageStats> {
  const entries = walk(src);
  const compression = src.compression ?? DEFAULT_COMPRESSION;
  const fd = fs.openSync(bundle, 'r+');
  try {
    const imageStart = alignUp(fs.fstatSync(fd).size);
    const out = new FrameWriter(fd, imageStart, compression);
    const stored = new Map<string, StoredContent>(); // content hash → where
    const stats: ImageStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0, distinctBytes: 0, dedupSaved: 0, storedBytes: 0, frames: 0, compression: describeCompression(compression) };
    const files = entries.filter((e) => e.type === 'file');
    let done = 0;
    for (const e of entries) {
      if (e.type === 'dir') stats.dirs++;
      if (e.type === 'symlink') stats.symlinks++;
      if (e.type !== 'file') continue;
      const content = out.store(e.real, e.size, (hash) => stored.get(hash), e.path);
      const hash = content.hash.toString('hex');
      Object.assign(e, { hash, pieces: content.pieces, pieceHashes: content.pieceHashes });
      stats.files++;
      stats.bytes += e.size;
      if (content.duplicate) stats.dedupSaved += e.size;
      else {
        stored.set(hash, content);
        stats.distinctBytes += e.size;
      }
      if (++done % 256 === 0 || done === files.length) src.onProgress?.(done, files.length);
    }
    out.finish();
    stats.storedBytes = out.storedBytes;
    stats.frames = out.frames;
    // Addons are loaded from the bundle as they are stored: raw, one run of bytes each.
    const addons: ImageAddon[] = [];
    for (const a of src.addons) {
      const bytes = fs.readFileSync(a.file);
      addons.push({ name: a.name, hash: sha256(bytes).toString('hex'), size: bytes.length, offset: out.appendRaw(bytes) });
    }
    const tree = encodeTree(entries.map(({ real: _real, ...e }) => e));
    const treeOffset = out.appendRaw(tree.bytes);
    const index: ImageIndex = {
      format: 'overpack-image',
      version: IMAGE_VERSION,
      manifest: src.manifest,
      addons,
      ...(src.runtime ? { runtime: src.runtime } : {}),
      tree: { offset: treeOffset, ...tree.location },
      ...(src.executable ? { executable: src.executable } : {}),
      ...(src.loader ? { loader: src.loader } : {}),
      content: { compression: stats.compression, bytes: stats.distinctBytes, storedBytes: stats.storedBytes, frames: stats.frames },
    };
    const indexBytes = Buffer.from(JSON.stringify(index), 'utf8');
    const indexOffset = out.appendRaw(indexBytes);
    const footer = encodeFooter({ version: IMAGE_VERSION, flags: src.signed ? FLAG_SIGNED : 0, imageStart, indexOffset, indexLength: indexBytes.length, indexHash: sha256(indexBytes) });
    out.appendRaw(footer);
    fs.ftruncateSync(fd, out.pos);
    return stats;
  } finally {
    fs.closeSync(fd);
  }
}
