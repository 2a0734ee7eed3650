/**
 * The image as a read-only Layer: the lower of a bundle's overlay. Metadata comes from the
 * tree (tree.ts), read in pages on demand; file data is read and decoded piece by piece
 * (content.ts), and checked against its BLAKE3 before any byte is served: a small file whole
 * the first time it is opened, a big one piece by piece as its bytes are asked for. A damaged
 * index or content is EIO for the app and reported once per path.
 */
import fs from 'node:fs';
import { blake3 } from '../hash/blake3.js';
import { kernelCopyRange } from '../native/copy-range.js';
import { constants as osc } from 'node:os';
import { FsError, type Errno } from '../vfs/index.js';
import { type DirEntry, type Layer, type LayerFile } from '../overlay/layer.js';
import { childOf, S_IFDIR, S_IFLNK, S_IFREG, type EntryStat } from '../vfs/index.js';
import { ContentError, ContentReader } from './content.js';
import type { ImageTree } from './tree.js';
import { PIECE_SIZE, pieceCount, pieceLength, TreeError, type TreeEntry, type TreeRecord } from './tree-layout.js';

/** Pieces of a big file checked ahead of a read (4 MiB, a little past the kernel's readahead). */
const PIECES_AHEAD = 4;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

const TYPE_BITS = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK } as const;

const hasBit = (bits: Uint8Array, i: number) => (bits[i >> 3]! & (1 << (i & 7))) !== 0;
const setBit = (bits: Uint8Array, i: number) => void (bits[i >> 3]! |= 1 << (i & 7));

export class ImageLayer implements Layer {
  readonly immutable = true;
  readonly description: string;
  /** One bit per record: content checked against its hash. */
  private readonly verified: Uint8Array;
  private readonly verifying = new Map<number, Promise<void>>();
  private readonly content: ContentReader;
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;
  /** Stored (non-hole) bytes of big files, for st_blocks. */
  private readonly allocated = new Map<number, number>();

  /**
   * `fd` is an open descriptor of the bundle, kept for the layer's lifetime. Entries appear
   * owned by the user running the bundle (as files they unpacked would be), so the app can
   * change its own files through the overlay.
   */
  constructor(
    readonly bundle: string,
    private readonly fd: number,
    private readonly tree: ImageTree,
    private readonly onCorrupt?: (path: string) => void,
  ) {
    this.description = `image ${bundle}`;
    this.verified = new Uint8Array(Math.ceil(tree.entries / 8));
    this.content = new ContentReader(fd, tree);
  }

  /** Every entry, parents first (extraction and verification read the whole tree). */
  entries(): Generator<TreeEntry> {
    return this.tree.walk();
  }

  /** Runs a tree read; an inconsistent index is EIO for the caller, reported once. */
  private read<T>(path: string, op: string, f: () => T): T {
    try {
      return f();
    } catch (err) {
      if (!(err instanceof TreeError)) throw err;
      this.onCorrupt?.(path);
      throw new FsError('EIO', op, path, err.message);
    }
  }

  /** Runs a content read; stored bytes that cannot be read or decoded are EIO, reported. */
  private async load<T>(path: string, op: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (err instanceof ContentError) {
        this.onCorrupt?.(path);
        throw new FsError('EIO', op, path, `bytes ${err.from}-${err.to}: ${err.detail}`);
      }
      if (err instanceof TreeError) {
        this.onCorrupt?.(path);
        throw new FsError('EIO', op, path, err.message);
      }
      throw err;
    }
  }

  async lstat(path: string): Promise<EntryStat | null> {
    const r = this.read(path, 'lstat', () => this.tree.lookup(path));
    return r ? this.statOf(path, r) : null;
  }

  async statChildren(path: string): Promise<Array<{ name: string; stat: EntryStat }>> {
    const dir = this.need(path, 'dir');
    return this.read(path, 'readdir', () => this.tree.children(dir).map((c) => ({ name: c.name, stat: this.statOf(childOf(path, c.name), c.record) })));
  }

  private statOf(path: string, r: TreeRecord): EntryStat {
    return {
      mode: TYPE_BITS[r.type] | r.mode,
      uid: this.uid,
      gid: this.gid,
      size: r.size,
      nlink: r.type === 'dir' ? 2 : 1,
      ino: r.index + 1,
      dev: 0,
      rdev: 0,
      blocks: Math.ceil(this.storedSize(path, r) / 512),
      blksize: 4096,
      atimeMs: r.mtimeMs,
      mtimeMs: r.mtimeMs,
      ctimeMs: r.mtimeMs,
    };
  }

  private need(path: string, type: TreeRecord['type']): TreeRecord {
    const r = this.read(path, 'lookup', () => this.tree.lookup(path));
    if (!r) throw new FsError('ENOENT', 'image', path);
    if (r.type !== type) throw new FsError(type === 'dir' ? 'ENOTDIR' : 'EINVAL', 'image', path);
    return r;
  }

  async readdir(path: string): Promise<DirEntry[]> {
    const dir = this.need(path, 'dir');
    return this.read(path, 'readdir', () => this.tree.children(dir).map((c) => ({ name: c.name, type: c.record.type })));
  }

  async readlink(path: string): Promise<string> {
    const r = this.need(path, 'symlink');
    return this.read(path, 'readlink', () => this.tree.target(r));
  }

  /** A file's bytes minus its holes: what a copy of it takes on disk. */
  private storedSize(path: string, r: TreeRecord): number {
    if (r.type !== 'file' || r.size <= PIECE_SIZE) return r.size;
    let n = this.allocated.get(r.index);
    if (n === undefined) {
      n = 0;
      for (let k = 0; k < pieceCount(r.size); k++) if (!this.read(path, 'lstat', () => this.content.isHole(r, k))) n += pieceLength(r.size, k);
      this.allocated.set(r.index, n);
    }
    return n;
  }

  /**
   * Decodes and hashes a small file (up to PIECE_SIZE) once; a mismatch is EIO now and on
   * every later open.
   */
  private verify(path: string, e: TreeRecord): Promise<void> {
    if (hasBit(this.verified, e.index) || e.size === 0) return Promise.resolve();
    let p = this.verifying.get(e.index);
    if (!p) {
      const expected = this.read(path, 'verify', () => this.tree.hash(e));
      p = (async () => {
        const bytes = await this.load(path, 'verify', () => this.content.piece(e, 0));
        if (blake3(bytes).toString('hex') !== expected) {
          this.onCorrupt?.(path);
          throw new FsError('EIO', 'verify', path, 'content does not match the image index');
        }
        setBit(this.verified, e.index);
      })().finally(() => this.verifying.delete(e.index));
      this.verifying.set(e.index, p);
    }
    return p;
  }

  /**
   * Small files are checked whole when opened. A file bigger than PIECE_SIZE is checked piece
   * by piece as its bytes are asked for (`prepare`), so the first read of a big file costs
   * what it reads, not a pass over all of it.
   */
  async open(path: string): Promise<LayerFile> {
    const e = this.need(path, 'file');
    const pieced = e.size > PIECE_SIZE;
    if (!pieced) await this.verify(path, e);
    const prepare = async (position: number, length: number): Promise<void> => {
      if (!pieced) return;
      const end = Math.min(e.size, position + length);
      let k = Math.floor(position / PIECE_SIZE);
      for (; k * PIECE_SIZE < end; k++) await this.verifyPiece(path, e, k, true);
      // Check the next pieces ahead, as the kernel reads ahead: a sequential read then finds
      // them checked (and decoded, or in the page cache) instead of waiting at every piece.
      for (let ahead = 0; ahead < PIECES_AHEAD && k * PIECE_SIZE < e.size; ahead++, k++) this.verifyPiece(path, e, k, false).catch(() => undefined);
    };
    const base = this.read(path, 'open', () => this.content.span(e));
    return {
      // Checked (above, or by prepare) before the kernel may take bytes straight from the bundle.
      ...(base !== null ? { span: { fd: this.fd, base, size: e.size } } : {}),
      prepare,
      read: async (buf, offset, length, position) => {
        const n = Math.max(0, Math.min(length, e.size - position));
        if (n === 0) return 0;
        await prepare(position, n);
        await this.load(path, 'read', () => this.content.read(e, buf, offset, n, position));
        return n;
      },
      seek: (offset, whence) => this.seek(path, e, offset, whence),
      close: async () => undefined,
    };
  }

  /** SEEK_DATA / SEEK_HOLE from the piece refs: a hole is a piece that is not stored. */
  private seek(path: string, e: TreeRecord, offset: number, whence: number): number {
    if (offset >= e.size || offset < 0) throw new FsError('ENXIO', 'lseek', path);
    const wantHole = whence === SEEK_HOLE;
    if (!wantHole && whence !== SEEK_DATA) throw new FsError('EINVAL', 'lseek', path);
    for (let k = Math.floor(offset / PIECE_SIZE); k < pieceCount(e.size); k++) {
      if (this.read(path, 'lseek', () => this.content.isHole(e, k)) === wantHole) return Math.max(offset, k * PIECE_SIZE);
    }
    if (wantHole) return e.size;
    throw new FsError('ENXIO', 'lseek', path);
  }

  /** Pieces of big files checked so far: record index → one bit per piece. */
  private readonly piecesVerified = new Map<number, Uint8Array>();
  private readonly piecesVerifying = new Map<string, { p: Promise<Buffer>; reports: boolean }>();

  /**
   * Checks piece `k` of a big file and returns its decoded bytes (a view: do not change).
   * `report`: a mismatch found while checking ahead is reported when the piece is asked for.
   */
  private verifyPiece(path: string, e: TreeRecord, k: number, report: boolean): Promise<Buffer | null> {
    let bits = this.piecesVerified.get(e.index);
    if (!bits) this.piecesVerified.set(e.index, (bits = new Uint8Array(Math.ceil(pieceCount(e.size) / 8))));
    if (hasBit(bits, k)) return Promise.resolve(null);
    const key = `${e.index}:${k}`;
    const running = this.piecesVerifying.get(key);
    if (running) {
      if (!report || running.reports) return running.p;
      // Joining a check started ahead, which reports nothing: report its mismatch here.
      return running.p.catch((err: unknown) => {
        this.onCorrupt?.(path);
        throw err;
      });
    }
    const expected = this.read(path, 'verify', () => this.tree.pieceHash(e, k));
    const verified = bits;
    const p = (async () => {
      const bytes = await (report ? this.load(path, 'verify', () => this.content.piece(e, k)) : this.content.piece(e, k).catch((err: unknown) => {
        throw err instanceof ContentError ? new FsError('EIO', 'verify', path, `bytes ${err.from}-${err.to}: ${err.detail}`) : err;
      }));
      if (blake3(bytes).toString('hex') !== expected) {
        if (report) this.onCorrupt?.(path);
        const from = k * PIECE_SIZE;
        throw new FsError('EIO', 'verify', path, `bytes ${from}-${from + bytes.length - 1} do not match the image index`);
      }
      setBit(verified, k);
      return bytes;
    })().finally(() => this.piecesVerifying.delete(key));
    this.piecesVerifying.set(key, { p, reports: report });
    return p;
  }

  async listXattrs(path: string): Promise<string[]> {
    const r = this.read(path, 'listxattr', () => this.tree.lookup(path));
    return r ? [...this.read(path, 'listxattr', () => this.tree.xattrs(r)).keys()] : [];
  }

  async getXattr(path: string, name: string): Promise<Buffer | null> {
    const r = this.read(path, 'getxattr', () => this.tree.lookup(path));
    return r ? (this.read(path, 'getxattr', () => this.tree.xattrs(r)).get(name) ?? null) : null;
  }

  /**
   * Copy-up: piece by piece, each checked (the whole file's hash for a small file, each
   * piece's for a big one) before it is written; holes are left holes, so a sparse file stays
   * sparse in the upper. The next piece is read and decoded while the current one is written.
   * Wrong bytes remove `dest` and are EIO.
   */
  async copyFileTo(path: string, dest: string): Promise<void> {
    const e = this.need(path, 'file');
    const base = e.size > PIECE_SIZE ? this.read(path, 'copy-up', () => this.content.span(e)) : null;
    const out = fs.openSync(dest, 'wx', 0o600);
    let ok = false;
    try {
      if (e.size <= PIECE_SIZE) {
        await this.verify(path, e);
        if (e.size > 0) await write(out, await this.load(path, 'copy-up', () => this.content.piece(e, 0)), 0);
      } else if (base !== null && kernelCopyRange()) {
        await this.kernelCopy(path, e, out, base);
      } else {
        const count = pieceCount(e.size);
        const fetch = (k: number): Promise<Buffer | null> => {
          if (k >= count || this.read(path, 'copy-up', () => this.content.isHole(e, k))) return Promise.resolve(null);
          // A piece checked already is decoded again; verifyPiece returns the bytes it checked.
          const p = this.verifyPiece(path, e, k, true).then((b) => b ?? this.load(path, 'copy-up', () => this.content.piece(e, k)));
          // It may fail while the piece before it is written: awaited then, not unhandled now.
          p.catch(() => undefined);
          return p;
        };
        let next = fetch(0);
        try {
          for (let k = 0; k < count; k++) {
            const bytes = await next;
            next = fetch(k + 1);
            if (bytes) await write(out, bytes, k * PIECE_SIZE);
          }
        } finally {
          await next.catch(() => null);
        }
        fs.ftruncateSync(out, e.size);
      }
      ok = true;
    } finally {
      fs.closeSync(out);
      if (!ok) fs.rmSync(dest, { force: true });
    }
  }

  /**
   * A big file stored raw in one run of the bundle (no compression, or incompressible): the
   * kernel copies it (copy_file_range on a worker thread) while this thread hashes the same
   * bytes from the page cache, each piece against its hash; wrong bytes fail the copy-up
   * after the copy ends (the caller removes `dest`).
   */
  private async kernelCopy(path: string, e: TreeRecord, out: number, base: number): Promise<void> {
    const copying = kernelCopyRange()!(this.fd, base, out, 0, e.size);
    const count = pieceCount(e.size);
    const readPiece = async (k: number, buf: Buffer): Promise<Buffer> => {
      const len = pieceLength(e.size, k);
      await this.load(path, 'copy-up', () => this.content.readRaw(buf, len, base + k * PIECE_SIZE, k));
      return buf.subarray(0, len);
    };
    const hashing = (async () => {
      // Two buffers: the next piece is read (on the threadpool) while this one is hashed.
      const bufs = [Buffer.allocUnsafe(PIECE_SIZE), Buffer.allocUnsafe(PIECE_SIZE)];
      let next = readPiece(0, bufs[0]!);
      for (let k = 0; k < count; k++) {
        const bytes = await next;
        const len = bytes.length;
        next = k + 1 < count ? readPiece(k + 1, bufs[(k + 1) % 2]!) : Promise.resolve(Buffer.alloc(0));
        next.catch(() => undefined);
        if (blake3(bytes).toString('hex') !== this.read(path, 'verify', () => this.tree.pieceHash(e, k))) {
          this.onCorrupt?.(path);
          throw new FsError('EIO', 'verify', path, `bytes ${k * PIECE_SIZE}-${k * PIECE_SIZE + len - 1} do not match the image index`);
        }
      }
    })();
    // Both must finish before `out` is closed or `dest` removed, whichever fails first.
    const [copied, hashed] = await Promise.allSettled([copying, hashing]);
    if (copied.status === 'rejected') {
      const err = copied.reason as NodeJS.ErrnoException;
      throw new FsError(err.code && err.code in osc.errno ? (err.code as Errno) : 'EIO', 'copy-up', path, err.message);
    }
    if (hashed.status === 'rejected') throw hashed.reason;
    if (copied.value !== e.size) throw new FsError('EIO', 'copy-up', path, 'the bundle ends before this file does');
  }
}

function write(fd: number, bytes: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) =>
      done >= bytes.length
        ? resolve()
        : fs.write(fd, bytes, done, bytes.length - done, position + done, (err, n) => (err ? reject(err) : step(done + n)));
    step(0);
  });
}
