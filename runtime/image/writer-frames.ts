/**
 * Stores file contents as frames (codec.ts) at the end of a bundle, and says where each piece
 * went (PieceRef, tree-layout.ts).
 *
 * - Small files are packed side by side into one frame: compressed one by one, the small
 *   files of a node_modules take about a third more room than packed (bench/README.md).
 *   A pack ends after a file whose path (in the image) hashes with its low bit clear once
 *   the pack is past PACK_MIN, or when the next file would take it past PACK_MAX: the ends
 *   follow the names, not running offsets or contents, so an edited file changes its own
 *   pack only (an updater finds the rest unchanged, runtime/update/plan.ts).
 * - Two packs fill side by side (packKind): one for the files a program reads when it runs,
 *   one for those that only come along (documentation, type declarations, source maps,
 *   non-code files inside node_modules). A read decodes its whole pack, so a launch that
 *   reads a package's code no longer decodes its README and .d.ts files with it: for the
 *   eslint app's `--version`, 3.8 MB decoded in 22 packs instead of 5.9 MB in 35, for the
 *   same 2.2 MB stored (bench/README.md, "Compression").
 * - Other files are stored piece by piece, one frame per PIECE_SIZE piece: a read decodes at
 *   most one piece. Pieces in a hole of a sparse file are not read, and all-zero pieces are
 *   not stored (CODEC_IDS.zero).
 * Same contents in, same bytes out.
 */
import fs from 'node:fs';
import { Blake3, blake3 } from '../hash/blake3.js';
import { seek, SEEK_DATA } from '../native/syscalls.js';
import { CODEC_IDS, encodeFrame, type Compression } from './codec.js';
import { PIECE_SIZE, pieceLength, type PieceRef } from './tree-layout.js';
import { OverpackError } from '../errors/overpack-error.js';

/** Files up to this size are packed with others. */
export const PACK_FILE_MAX = 64 << 10;
const PACK_MIN = 128 << 10;
const PACK_MAX = 256 << 10;

/** Which pack a small file goes in; the files of each kind keep their tree order. */
export type PackKind = 'run' | 'aside';
const PACK_KINDS: readonly PackKind[] = ['run', 'aside'];
/** What Node loads from a package (and extensionless files: scripts run by name). */
const LOADED = new Set(['.js', '.cjs', '.mjs', '.json', '.node', '.wasm', '']);
const DOC_NAME = /^(licen[cs]e|readme|changelog|changes|history|authors|contributors|notice|copying|security|code_of_conduct|contributing)([.-].*)?$/i;

/**
 * 'aside' for a file that a running program is not expected to read: documentation (README,
 * LICENSE, CHANGELOG, ... and any .md), type declarations (.d.ts, .d.cts, .d.mts), source maps,
 * and inside a node_modules any file Node does not load (TypeScript sources, lock files,
 * other languages' sources, ...); 'run' for everything else. By the path alone, so the same
 * tree packs the same way. A guess that is wrong costs a read some decoding, never bytes.
 */
export function packKind(name: string): PackKind {
  const base = name.slice(name.lastIndexOf('/') + 1).toLowerCase();
  if (DOC_NAME.test(base) || /\.(md|markdown|map)$/.test(base) || /\.d\.[cm]?ts$/.test(base)) return 'aside';
  const dot = base.lastIndexOf('.');
  const ext = dot > 0 ? base.slice(dot) : '';
  return name.includes('/node_modules/') && !LOADED.has(ext) ? 'aside' : 'run';
}

/** A pack being filled: its bytes so far and the refs to complete when it is written. */
class Pack {
  readonly bytes = Buffer.allocUnsafe(PACK_MAX);
  length = 0;
  refs: PieceRef[] = [];
}

export interface StoredContent {
  hash: Buffer;
  pieces: PieceRef[];
  /** Files bigger than PIECE_SIZE: BLAKE3 of each piece, concatenated. */
  pieceHashes?: Buffer;
}

/** Where to undo to when a big file turns out to be stored already. */
interface Mark {
  pos: number;
  frames: number;
  storedBytes: number;
}

export class FrameWriter {
  private readonly packs = new Map<PackKind, Pack>(PACK_KINDS.map((k) => [k, new Pack()]));
  private readonly piece = Buffer.allocUnsafe(PIECE_SIZE);
  private readonly zeroHashes = new Map<number, Buffer>();
  frames = 0;
  /** Bytes written for contents (after compression). */
  storedBytes = 0;

  /** `pos`: where the next byte goes in the bundle. */
  constructor(private readonly fd: number, public pos: number, private readonly compression: Compression) {}

  /**
   * Stores the `size` bytes of file `real`; `known` finds contents stored already (by hash).
   * `name` is the file's path in the image: where a pack may end is decided by it.
   */
  store(real: string, size: number, known: (hash: string) => StoredContent | undefined, name: string): StoredContent & { duplicate: boolean } {
    const rfd = openSource(real);
    try {
      if (size <= PACK_FILE_MAX) {
        const bytes = Buffer.allocUnsafe(size);
        readFully(rfd, real, bytes, 0, size, 0);
        const hash = blake3(bytes);
        const seen = known(hash.toString('hex'));
        if (seen) return { ...seen, duplicate: true };
        return { hash, pieces: size === 0 ? [] : [this.addPacked(this.packs.get(packKind(name))!, bytes, mayEndPack(name))], duplicate: false };
      }
      const mark: Mark = { pos: this.pos, frames: this.frames, storedBytes: this.storedBytes };
      const hasher = new Blake3();
      const pieces: PieceRef[] = [];
      const hashes: Buffer[] = [];
      let nextData = 0; // no data before this offset (SEEK_DATA), or -1: none to the end
      for (let k = 0; k * PIECE_SIZE < size; k++) {
        const at = k * PIECE_SIZE;
        const len = pieceLength(size, k);
        if (nextData >= 0 && nextData < at + len) nextData = dataFrom(rfd, at);
        if (nextData < 0 || nextData >= at + len) {
          // A hole: zeros, never read.
          const zeros = this.zeroPiece(len);
          hasher.update(zeros.bytes);
          hashes.push(zeros.hash);
          pieces.push({ codec: CODEC_IDS.zero, position: 0, storedLength: 0, frameLength: len, offsetInFrame: 0 });
          continue;
        }
        const bytes = this.piece.subarray(0, len);
        readFully(rfd, real, bytes, 0, len, at);
        hasher.update(bytes);
        if (size > PIECE_SIZE) hashes.push(blake3(bytes));
        pieces.push(this.addFrame(bytes));
      }
      const hash = hasher.digest();
      const seen = known(hash.toString('hex'));
      if (seen) {
        this.rewind(mark);
        return { ...seen, duplicate: true };
      }
      return { hash, pieces, pieceHashes: size > PIECE_SIZE ? Buffer.concat(hashes) : undefined, duplicate: false };
    } finally {
      fs.closeSync(rfd);
    }
  }

  private zeroPiece(len: number): { bytes: Buffer; hash: Buffer } {
    const bytes = Buffer.alloc(len);
    let hash = this.zeroHashes.get(len);
    if (!hash) this.zeroHashes.set(len, (hash = blake3(bytes)));
    return { bytes, hash };
  }

  /** A frame of its own, written now. */
  private addFrame(bytes: Buffer): PieceRef {
    const { codec, stored } = encodeFrame(bytes, this.compression);
    if (codec === CODEC_IDS.zero) return { codec, position: 0, storedLength: 0, frameLength: bytes.length, offsetInFrame: 0 };
    return { codec, position: this.write(stored), storedLength: stored.length, frameLength: bytes.length, offsetInFrame: 0 };
  }

  /** Into `pack`; the ref is completed when the pack is written. */
  private addPacked(pack: Pack, bytes: Buffer, endsPack: boolean): PieceRef {
    if (pack.length + bytes.length > PACK_MAX) this.closePack(pack);
    const ref: PieceRef = { codec: CODEC_IDS.raw, position: 0, storedLength: 0, frameLength: 0, offsetInFrame: pack.length };
    bytes.copy(pack.bytes, pack.length);
    pack.length += bytes.length;
    pack.refs.push(ref);
    if (pack.length >= PACK_MIN && endsPack) this.closePack(pack);
    return ref;
  }

  private closePack(pack: Pack): void {
    if (pack.length === 0) return;
    const bytes = pack.bytes.subarray(0, pack.length);
    const { codec, stored } = encodeFrame(bytes, this.compression);
    const frame = codec === CODEC_IDS.zero ? { position: 0, storedLength: 0 } : { position: this.write(stored), storedLength: stored.length };
    for (const ref of pack.refs) Object.assign(ref, { codec, frameLength: pack.length, ...frame });
    pack.refs = [];
    pack.length = 0;
  }

  /** Writes the packs being filled, in a fixed order. */
  private closePacks(): void {
    for (const kind of PACK_KINDS) this.closePack(this.packs.get(kind)!);
  }

  private write(bytes: Buffer): number {
    const start = this.pos;
    for (let done = 0; done < bytes.length; ) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, start + done);
    this.pos += bytes.length;
    this.frames++;
    this.storedBytes += bytes.length;
    return start;
  }

  /** Takes back what was written since `mark` (only own frames are: a big file closes no pack). */
  private rewind(mark: Mark): void {
    fs.ftruncateSync(this.fd, mark.pos);
    this.pos = mark.pos;
    this.frames = mark.frames;
    this.storedBytes = mark.storedBytes;
  }

  /** Writes `bytes` unframed (the native addons) and returns where they start. */
  appendRaw(bytes: Buffer): number {
    this.closePacks();
    const start = this.pos;
    for (let done = 0; done < bytes.length; ) done += fs.writeSync(this.fd, bytes, done, bytes.length - done, start + done);
    this.pos += bytes.length;
    return start;
  }

  /** Writes the last pack; every ref handed out is complete after this. */
  finish(): number {
    this.closePacks();
    return this.pos;
  }
}

/**
 * Whether a pack that holds PACK_MIN bytes ends after the file at `name` (its path in the
 * image): the low bit of the path's BLAKE3. By the path, not the content: an edited file then
 * never moves a pack's end (only a change of sizes across PACK_MIN or PACK_MAX can), so the
 * packs after it keep their bytes and an update copies them from the old bundle.
 */
function mayEndPack(name: string): boolean {
  return (blake3(Buffer.from(name, 'utf8'))[0]! & 1) === 0;
}

/** An app file that cannot be stored, with the path and what to do. */
export class BuildError extends OverpackError {
  constructor(path: string, op: string, message: string) {
    super('BUILD', op, path, message);
  }
}

function openSource(real: string): number {
  try {
    return fs.openSync(real, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BuildError(real, 'read', code === 'EACCES' ? `${real} is not readable; fix its permissions or remove it from the app` : `cannot read ${real}: ${(err as Error).message}`);
  }
}

function readFully(rfd: number, real: string, buf: Buffer, at: number, size: number, position: number): void {
  for (let done = 0; done < size; ) {
    const n = fs.readSync(rfd, buf, at + done, size - done, position + done);
    if (n === 0) throw new BuildError(real, 'read', `${real} shrank while being read`);
    done += n;
  }
}

/** The first data offset at or after `at` (SEEK_DATA), -1 when only a hole follows; `at` where holes cannot be asked about. */
function dataFrom(rfd: number, at: number): number {
  try {
    return seek(rfd, at, SEEK_DATA);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENXIO' ? -1 : at;
  }
}
