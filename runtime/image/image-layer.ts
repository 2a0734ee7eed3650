/**
 * The image as a read-only Layer: the lower of a bundle's overlay. Metadata comes from the
 * index held in memory; file data is read on demand with positioned reads from the bundle, and
 * each file's BLAKE3 is checked the first time it is opened: wrong bytes are never served.
 */
import fs from 'node:fs';
import { Blake3 } from '../hash/blake3.js';
import { FsError } from '../overlay/errors.js';
import { S_IFDIR, S_IFLNK, S_IFREG, type DirEntry, type EntryStat, type Layer, type LayerFile } from '../overlay/layer.js';
import type { ImageEntry, ImageIndex } from './format.js';

const TYPE_BITS = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK } as const;

function pread(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

export class ImageLayer implements Layer {
  readonly description: string;
  private readonly byPath = new Map<string, { entry: ImageEntry; ino: number }>();
  private readonly children = new Map<string, DirEntry[]>();
  private readonly verified = new Set<string>();
  private readonly verifying = new Map<string, Promise<void>>();
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;

  /**
   * `fd` is an open descriptor of the bundle, kept for the layer's lifetime. Entries appear
   * owned by the user running the bundle (as files they unpacked would be), so the app can
   * change its own files through the overlay.
   */
  constructor(readonly bundle: string, private readonly fd: number, index: ImageIndex, private readonly onCorrupt?: (path: string) => void) {
    this.description = `image ${bundle}`;
    index.entries.forEach((entry, i) => {
      this.byPath.set(entry.path, { entry, ino: i + 1 });
      this.children.set(entry.path, []);
      if (entry.path !== '/') {
        const parent = entry.path.slice(0, entry.path.lastIndexOf('/')) || '/';
        this.children.get(parent)!.push({ name: entry.path.slice(entry.path.lastIndexOf('/') + 1), type: entry.type });
      }
    });
  }

  entries(): IterableIterator<ImageEntry> {
    return [...this.byPath.values()].map((v) => v.entry)[Symbol.iterator]();
  }

  async lstat(path: string): Promise<EntryStat | null> {
    const hit = this.byPath.get(path);
    if (!hit) return null;
    const e = hit.entry;
    return {
      mode: TYPE_BITS[e.type] | e.mode,
      uid: this.uid,
      gid: this.gid,
      size: e.size,
      nlink: e.type === 'dir' ? 2 : 1,
      ino: hit.ino,
      dev: 0,
      rdev: 0,
      blocks: Math.ceil(e.size / 512),
      blksize: 4096,
      atimeMs: e.mtimeMs,
      mtimeMs: e.mtimeMs,
      ctimeMs: e.mtimeMs,
    };
  }

  private need(path: string, type: ImageEntry['type']): ImageEntry {
    const hit = this.byPath.get(path);
    if (!hit) throw new FsError('ENOENT', 'image', path);
    if (hit.entry.type !== type) throw new FsError(type === 'dir' ? 'ENOTDIR' : 'EINVAL', 'image', path);
    return hit.entry;
  }

  async readdir(path: string): Promise<DirEntry[]> {
    this.need(path, 'dir');
    return this.children.get(path) ?? [];
  }

  async readlink(path: string): Promise<string> {
    return this.need(path, 'symlink').target!;
  }

  /** Hashes the stored bytes of `path` once; a mismatch is EIO now and on every later open. */
  private verify(path: string, e: ImageEntry): Promise<void> {
    if (this.verified.has(path)) return Promise.resolve();
    let p = this.verifying.get(path);
    if (!p) {
      p = (async () => {
        const h = new Blake3();
        const buf = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(e.size, 1)));
        for (let done = 0; done < e.size; ) {
          const n = await pread(this.fd, buf, 0, Math.min(buf.length, e.size - done), e.offset! + done);
          if (n === 0) break;
          h.update(buf.subarray(0, n));
          done += n;
        }
        if (h.digest().toString('hex') !== e.hash) {
          this.onCorrupt?.(path);
          throw new FsError('EIO', 'verify', path, 'content does not match the image index');
        }
        this.verified.add(path);
      })().finally(() => this.verifying.delete(path));
      this.verifying.set(path, p);
    }
    return p;
  }

  async open(path: string): Promise<LayerFile> {
    const e = this.need(path, 'file');
    await this.verify(path, e);
    return {
      read: async (buf, offset, length, position) => {
        const n = Math.max(0, Math.min(length, e.size - position));
        return n === 0 ? 0 : pread(this.fd, buf, offset, n, e.offset! + position);
      },
      close: async () => undefined,
    };
  }

  async listXattrs(path: string): Promise<string[]> {
    const hit = this.byPath.get(path);
    return hit?.entry.xattrs ? Object.keys(hit.entry.xattrs) : [];
  }

  async getXattr(path: string, name: string): Promise<Buffer | null> {
    const v = this.byPath.get(path)?.entry.xattrs?.[name];
    return v === undefined ? null : Buffer.from(v, 'base64');
  }

  async copyFileTo(path: string, dest: string): Promise<void> {
    const file = await this.open(path);
    const e = this.need(path, 'file');
    const out = fs.openSync(dest, 'wx', 0o600);
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let done = 0; done < e.size; ) {
        const n = await file.read(buf, 0, buf.length, done);
        if (n === 0) break;
        await new Promise<void>((resolve, reject) => fs.write(out, buf, 0, n, done, (err) => (err ? reject(err) : resolve())));
        done += n;
      }
    } finally {
      fs.closeSync(out);
    }
  }
}
