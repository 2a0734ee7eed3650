/**
 * File contents out of an image: each piece located by its ref (tree-layout.ts) and decoded
 * (codec.ts). Checking contents against their hashes is the caller's job (image-layer.ts):
 * everything here is unchecked bytes.
 *
 * Decoded frames are kept in a small cache: the files packed in one frame are usually read
 * together (a require() walk, a tar), and a piece is read in several requests.
 */
import fs from 'node:fs';
import { CODEC_IDS, decodeFrame } from './codec.js';
import type { ImageTree } from './tree.js';
import { PIECE_SIZE, pieceCount, pieceLength, type PieceRef, type TreeRecord } from './tree-layout.js';
import { OverpackError } from '../errors/overpack-error.js';

/** Decoded bytes kept (16 full pieces). */
const CACHE_BYTES = 16 << 20;
const ZEROS = Buffer.alloc(PIECE_SIZE);

/**
 * OVERPACK_FUSE_STATS=1 (the FUSE request counts' switch): frames decoded, their bytes and the
 * time spent decoding them, printed at exit beside the request counts.
 */
const decodeStats = process.env.OVERPACK_FUSE_STATS === '1' ? { frames: 0, stored: 0, bytes: 0, ns: 0n } : null;
if (decodeStats) {
  process.on('exit', () => {
    const s = decodeStats;
    process.stderr.write(`overpack: frames decoded: ${s.frames} (${s.stored} stored bytes to ${s.bytes}) in ${(Number(s.ns) / 1e6).toFixed(2)} ms\n`);
  });
}

/** Stored bytes that do not decode, or a bundle that ends too soon; `detail` says which. */
export class ContentError extends OverpackError {
  constructor(readonly detail: string, readonly from: number, readonly to: number) {
    super('BAD_CONTENT', 'read-content', null, detail);
  }
}

function pread(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

export class ContentReader {
  private readonly frames = new Map<number, Promise<Buffer>>();
  private readonly frameSizes = new Map<number, number>();
  private cachedBytes = 0;
  /** span() of files of more than one piece, by record: it walks every piece ref, and open asks it each time. */
  private readonly spans = new Map<number, number | null>();

  constructor(private readonly fd: number, private readonly tree: ImageTree) {}

  /** Piece `k` of file `r`, decoded; a view that the caller must not change. */
  async piece(r: TreeRecord, k: number): Promise<Buffer> {
    const ref = this.tree.pieceRef(r, k);
    const len = pieceLength(r.size, k);
    if (ref.codec === CODEC_IDS.zero) return ZEROS.subarray(0, len);
    if (ref.codec === CODEC_IDS.raw) {
      const buf = Buffer.allocUnsafe(len);
      await this.readRaw(buf, len, ref.position + ref.offsetInFrame, k);
      return buf;
    }
    const frame = await this.frame(ref, k);
    return frame.subarray(ref.offsetInFrame, ref.offsetInFrame + len);
  }

  /** Bytes [position, position + length) of file `r` into `buf` at `offset` (within the file). */
  async read(r: TreeRecord, buf: Buffer, offset: number, length: number, position: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const at = position + done;
      const k = Math.floor(at / PIECE_SIZE);
      const from = at - k * PIECE_SIZE;
      const n = Math.min(length - done, pieceLength(r.size, k) - from);
      const ref = this.tree.pieceRef(r, k);
      if (ref.codec === CODEC_IDS.raw) await this.readRaw(buf.subarray(offset + done, offset + done + n), n, ref.position + ref.offsetInFrame + from, k);
      else if (ref.codec === CODEC_IDS.zero) buf.fill(0, offset + done, offset + done + n);
      else (await this.frame(ref, k)).copy(buf, offset + done, ref.offsetInFrame + from, ref.offsetInFrame + from + n);
      done += n;
    }
  }

  /** Where the whole file lies raw in one run of the bundle (the kernel may splice from it), or null. */
  span(r: TreeRecord): number | null {
    const count = pieceCount(r.size);
    if (count > 1) {
      const known = this.spans.get(r.index);
      if (known !== undefined) return known;
    }
    const base = this.findSpan(r, count);
    if (count > 1) this.spans.set(r.index, base);
    return base;
  }

  private findSpan(r: TreeRecord, count: number): number | null {
    let base = -1;
    for (let k = 0; k < count; k++) {
      const ref = this.tree.pieceRef(r, k);
      const at = ref.position + ref.offsetInFrame;
      if (ref.codec !== CODEC_IDS.raw || (k > 0 && at !== base + k * PIECE_SIZE)) return null;
      if (k === 0) base = at;
    }
    return base < 0 ? null : base;
  }

  /** Whether piece `k` of `r` is a hole (all zeros, not stored). */
  isHole(r: TreeRecord, k: number): boolean {
    return this.tree.pieceRef(r, k).codec === CODEC_IDS.zero;
  }

  /** `length` stored bytes of the bundle at `position` (in piece `k`, for the message) into `buf`. */
  async readRaw(buf: Buffer, length: number, position: number, k: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const n = await pread(this.fd, buf, done, length - done, position + done);
      if (n === 0) throw new ContentError('the bundle ends before this file does', k * PIECE_SIZE, (k + 1) * PIECE_SIZE - 1);
      done += n;
    }
  }

  /** A decoded frame, from the cache or read and decoded now (one read however many ask). */
  private frame(ref: PieceRef, k: number): Promise<Buffer> {
    const hit = this.frames.get(ref.position);
    if (hit && this.frameSizes.get(ref.position) === ref.frameLength) {
      this.frames.delete(ref.position);
      this.frames.set(ref.position, hit);
      return hit;
    }
    const p = (async () => {
      const stored = Buffer.allocUnsafe(ref.storedLength);
      await this.readRaw(stored, ref.storedLength, ref.position, k);
      const t0 = decodeStats ? process.hrtime.bigint() : 0n;
      const out = Buffer.allocUnsafe(ref.frameLength);
      try {
        decodeFrame(ref.codec, stored, out);
        if (decodeStats) {
          decodeStats.frames++;
          decodeStats.stored += stored.length;
          decodeStats.bytes += out.length;
          decodeStats.ns += process.hrtime.bigint() - t0;
        }
      } catch (err) {
        throw new ContentError(`the stored frame at ${ref.position} does not decode (${(err as Error).message})`, k * PIECE_SIZE, (k + 1) * PIECE_SIZE - 1);
      }
      return out;
    })();
    this.remember(ref.position, ref.frameLength, p);
    // A frame that failed is not kept: the next read tries again (and fails the same way).
    p.catch(() => this.forget(ref.position));
    return p;
  }

  private remember(position: number, size: number, p: Promise<Buffer>): void {
    this.forget(position);
    this.frames.set(position, p);
    this.frameSizes.set(position, size);
    this.cachedBytes += size;
    while (this.cachedBytes > CACHE_BYTES && this.frames.size > 1) this.forget(this.frames.keys().next().value as number);
  }

  private forget(position: number): void {
    if (!this.frames.delete(position)) return;
    this.cachedBytes -= this.frameSizes.get(position) ?? 0;
    this.frameSizes.delete(position);
  }
}
