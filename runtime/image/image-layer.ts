/**
 * The image as a read-only Layer: the lower of a bundle's overlay. Metadata comes from the
 * tree (tree.ts), read in pages on demand; file data is read with positioned reads from the
 * bundle, and each file's BLAKE3 is checked the first time it is opened: wrong bytes are
 * never served. A damaged index or content is EIO for the app and reported once per path.
 */
import fs from 'node:fs';
import { constants as osc } from 'node:os';
import { Blake3, blake3 } from '../hash/blake3.js';
import { kernelCopyRange, type CopyRange } from '../fuse/copy-range.js';
import { FsError, type Errno } from '../overlay/errors.js';
import { S_IFDIR, S_IFLNK, S_IFREG, type DirEntry, type EntryStat, type Layer, type LayerFile } from '../overlay/layer.js';
import { CHUNK_SIZE, TreeError, type ImageTree, type TreeEntry, type TreeRecord } from './tree.js';

/** Pieces of a big file checked ahead of a read (4 MiB, a little past the kernel's readahead). */
const CHUNKS_AHEAD = 4;

const TYPE_BITS = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK } as const;

const hasBit = (bits: Uint8Array, i: number) => (bits[i >> 3]! & (1 << (i & 7))) !== 0;
const setBit = (bits: Uint8Array, i: number) => void (bits[i >> 3]! |= 1 << (i & 7));

function pread(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

export class ImageLayer implements Layer {
  readonly description: string;
  /** One bit per record: content checked against its hash. */
  private readonly verified: Uint8Array;
  private readonly verifying = new Map<number, Promise<void>>();
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;

  /**
   * `fd` is an open descriptor of the bundle, kept for the layer's lifetime. Entries appear
   * owned by the user running the bundle (as files they unpacked would be), so the app can
   * change its own files through the overlay. `copyRange`: how big files are copied up; the
   * kernel's ranged copy through our addon by default (loaded at the first big copy-up), null
   * to copy in JS (tests use it to cover the path taken without the addon).
   */
  constructor(
    readonly bundle: string,
    private readonly fd: number,
    private readonly tree: ImageTree,
    private readonly onCorrupt?: (path: string) => void,
    private copyRange?: CopyRange | null,
  ) {
    this.description = `image ${bundle}`;
    this.verified = new Uint8Array(Math.ceil(tree.entries / 8));
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

  async lstat(path: string): Promise<EntryStat | null> {
    const r = this.read(path, 'lstat', () => this.tree.lookup(path));
    if (!r) return null;
    return {
      mode: TYPE_BITS[r.type] | r.mode,
      uid: this.uid,
      gid: this.gid,
      size: r.size,
      nlink: r.type === 'dir' ? 2 : 1,
      ino: r.index + 1,
      dev: 0,
      rdev: 0,
      blocks: Math.ceil(r.size / 512),
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

  /**
   * Spare CHUNK_SIZE buffers for checking small files and pieces. Reused because a walk checks
   * thousands of files: a fresh buffer for each left the allocator holding tens of MiB (freed
   * only when V8 got round to collecting them, and then fragmented).
   */
  private readonly spareBuffers: Buffer[] = [];

  /** BLAKE3 (hex) of `length` (≤ CHUNK_SIZE) bytes of the bundle at `position`, all of them. */
  private async hashRange(path: string, length: number, position: number): Promise<string> {
    const buf = this.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(CHUNK_SIZE);
    try {
      for (let done = 0; done < length; ) {
        const n = await pread(this.fd, buf, done, length - done, position + done);
        if (n === 0) throw new FsError('EIO', 'verify', path, 'the bundle ends before this file does');
        done += n;
      }
      return blake3(buf.subarray(0, length)).toString('hex');
    } finally {
      // As many as checks run at once (a read and the pieces checked ahead of it), at most.
      if (this.spareBuffers.length <= CHUNKS_AHEAD) this.spareBuffers.push(buf);
    }
  }

  /**
   * Hashes the stored bytes of a small file (up to CHUNK_SIZE) once; a mismatch is EIO now and
   * on every later open.
   */
  private verify(path: string, e: TreeRecord): Promise<void> {
    if (hasBit(this.verified, e.index)) return Promise.resolve();
    let p = this.verifying.get(e.index);
    if (!p) {
      const expected = this.read(path, 'verify', () => this.tree.hash(e));
      p = (async () => {
        if ((await this.hashRange(path, e.size, e.a)) !== expected) {
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
   * Small files are checked whole when opened. A file bigger than CHUNK_SIZE is checked piece
   * by piece as its bytes are asked for (`prepare`), so the first read of a big file costs
   * what it reads, not a pass over all of it.
   */
  async open(path: string): Promise<LayerFile> {
    const e = this.need(path, 'file');
    const chunked = e.size > CHUNK_SIZE;
    if (!chunked) await this.verify(path, e);
    const prepare = async (position: number, length: number): Promise<void> => {
      if (!chunked || hasBit(this.verified, e.index)) return;
      const end = Math.min(e.size, position + length);
      let k = Math.floor(position / CHUNK_SIZE);
      for (; k * CHUNK_SIZE < end; k++) await this.verifyChunk(path, e, k, true);
      // Check the next pieces ahead, as the kernel reads ahead: a sequential read then finds
      // them checked (and in the page cache) instead of waiting for the disk at every piece.
      for (let ahead = 0; ahead < CHUNKS_AHEAD && k * CHUNK_SIZE < e.size; ahead++, k++) this.verifyChunk(path, e, k, false).catch(() => undefined);
    };
    return {
      // Checked (above, or by prepare) before the kernel may take bytes straight from the bundle.
      span: { fd: this.fd, base: e.a, size: e.size },
      prepare,
      read: async (buf, offset, length, position) => {
        const n = Math.max(0, Math.min(length, e.size - position));
        if (n === 0) return 0;
        await prepare(position, n);
        return pread(this.fd, buf, offset, n, e.a + position);
      },
      close: async () => undefined,
    };
  }

  /** Pieces of big files checked so far: record index → one bit per piece. */
  private readonly chunksVerified = new Map<number, Uint8Array>();
  private readonly chunksVerifying = new Map<string, { p: Promise<void>; reports: boolean }>();

  /** `report`: a mismatch found while checking ahead is reported when the piece is asked for. */
  private verifyChunk(path: string, e: TreeRecord, k: number, report: boolean): Promise<void> {
    let bits = this.chunksVerified.get(e.index);
    if (!bits) this.chunksVerified.set(e.index, (bits = new Uint8Array(Math.ceil(Math.ceil(e.size / CHUNK_SIZE) / 8))));
    if (hasBit(bits, k)) return Promise.resolve();
    const key = `${e.index}:${k}`;
    const running = this.chunksVerifying.get(key);
    if (running) {
      if (!report || running.reports) return running.p;
      // Joining a check started ahead, which reports nothing: report its mismatch here.
      return running.p.catch((err: unknown) => {
        this.onCorrupt?.(path);
        throw err;
      });
    }
    const expected = this.read(path, 'verify', () => this.tree.chunkHash(e, k));
    const verified = bits;
    const p = (async () => {
      const len = Math.min(CHUNK_SIZE, e.size - k * CHUNK_SIZE);
      if ((await this.hashRange(path, len, e.a + k * CHUNK_SIZE)) !== expected) {
        if (report) this.onCorrupt?.(path);
        throw new FsError('EIO', 'verify', path, `bytes ${k * CHUNK_SIZE}-${k * CHUNK_SIZE + len - 1} do not match the image index`);
      }
      setBit(verified, k);
    })().finally(() => this.chunksVerifying.delete(key));
    this.chunksVerifying.set(key, { p, reports: report });
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
   * Copy-up. A big file's bytes are copied by the kernel (copy_file_range, on a worker thread)
   * while this thread hashes the same range of the bundle from the page cache: the check then
   * costs no extra pass, only the hashing running beside the copy. Without the addon, or for a
   * small file, one pass reads, writes and hashes in 1 MiB chunks. Wrong bytes remove `dest`
   * and are EIO.
   */
  async copyFileTo(path: string, dest: string): Promise<void> {
    const e = this.need(path, 'file');
    const pending = this.verifying.get(e.index);
    if (pending) await pending;
    const check = !hasBit(this.verified, e.index);
    const expected = check ? this.read(path, 'verify', () => this.tree.hash(e)) : '';
    const out = fs.openSync(dest, 'wx', 0o600);
    let ok = false;
    try {
      const copyRange = e.size > CHUNK_SIZE ? (this.copyRange ??= kernelCopyRange()) : null;
      const digest = copyRange ? await this.kernelCopy(path, e, out, check, copyRange) : await this.copyInJs(path, e, out, check);
      if (digest !== null) {
        if (digest !== expected) {
          this.onCorrupt?.(path);
          throw new FsError('EIO', 'verify', path, 'content does not match the image index');
        }
        setBit(this.verified, e.index);
      }
      ok = true;
    } finally {
      fs.closeSync(out);
      if (!ok) fs.rmSync(dest, { force: true });
    }
  }

  /** Returns the stored bytes' BLAKE3 (hex) when `check`, else null. */
  private async kernelCopy(path: string, e: TreeRecord, out: number, check: boolean, copyRange: CopyRange): Promise<string | null> {
    const copying = copyRange(this.fd, e.a, out, 0, e.size);
    const hashing = check ? this.hashStored(path, e) : Promise.resolve(null);
    // Both must finish before `out` is closed or `dest` removed, whichever fails first.
    const [copied, digest] = await Promise.allSettled([copying, hashing]);
    if (copied.status === 'rejected') {
      const err = copied.reason as { code?: string; message?: string };
      const code = err.code && err.code in osc.errno ? (err.code as Errno) : 'EIO';
      throw new FsError(code, 'copy-up', path, err.message);
    }
    if (digest.status === 'rejected') throw digest.reason;
    if (copied.value !== e.size) throw new FsError('EIO', 'copy-up', path, 'the bundle ends before this file does');
    return digest.value;
  }

  /**
   * A file's stored bytes in 1 MiB chunks, the next read running while the caller works on
   * the current one. Each chunk is valid until the caller asks for the one after it. 1 MiB, not
   * more: the chunk is read on one core and hashed on another, and 4 MiB chunks (no longer in
   * the cache when hashed) took 1.4x as long to hash.
   */
  private async *storedChunks(path: string, e: TreeRecord, op: string): AsyncGenerator<{ bytes: Buffer; position: number }> {
    const chunk = Math.min(CHUNK_SIZE, Math.max(e.size, 1));
    const bufs = [Buffer.allocUnsafe(chunk), Buffer.allocUnsafe(chunk)];
    const readAt = (done: number, buf: Buffer) => (done >= e.size ? Promise.resolve(0) : pread(this.fd, buf, 0, Math.min(chunk, e.size - done), e.a + done));
    let next = readAt(0, bufs[0]!);
    try {
      for (let done = 0, k = 0; done < e.size; k ^= 1) {
        const n = await next;
        if (n === 0) throw new FsError('EIO', op, path, 'the bundle ends before this file does');
        next = readAt(done + n, bufs[k ^ 1]!);
        yield { bytes: bufs[k]!.subarray(0, n), position: done };
        done += n;
      }
    } finally {
      await next.catch(() => 0);
    }
  }

  /** BLAKE3 (hex) of a file's stored bytes. */
  private async hashStored(path: string, e: TreeRecord): Promise<string> {
    const hasher = new Blake3();
    for await (const { bytes } of this.storedChunks(path, e, 'verify')) hasher.update(bytes);
    return hasher.digest().toString('hex');
  }

  /** One pass in JS: the next read, the current write and its hashing overlap. */
  private async copyInJs(path: string, e: TreeRecord, out: number, check: boolean): Promise<string | null> {
    const hasher = check ? new Blake3() : null;
    for await (const { bytes, position } of this.storedChunks(path, e, 'copy-up')) {
      // The write runs in the threadpool while this thread hashes the same bytes.
      const written = new Promise<void>((resolve, reject) => fs.write(out, bytes, 0, bytes.length, position, (err) => (err ? reject(err) : resolve())));
      hasher?.update(bytes);
      await written;
    }
    return hasher ? hasher.digest().toString('hex') : null;
  }
}
