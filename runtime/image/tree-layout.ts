/**
 * The image's tree: every entry's metadata in a binary table that is read in pages, on demand
 * (the reader is tree.ts, the encoder tree-encode.ts; this file is their shared layout).
 *
 * Why binary and paged: a JSON index held in memory cost ~530 bytes of heap per file and took
 * seconds to parse at a million files, so a big app's runtime grew with its image. Here the
 * runtime keeps only the pages it touched (a bounded cache of 16 KiB pages) and starts in the
 * same time whatever the size of the image.
 *
 * Layout (little-endian) of the tree's `size` bytes, which are stored in 16 KiB pages, each
 * deflated (raw deflate) unless that would not make it smaller, back to back at absolute
 * `offset` in the bundle (`length` bytes stored):
 *   records      entries x 64 B, breadth first from the root (record 0), so the children of
 *                a directory are consecutive; siblings sorted by the bytes of their UTF-8 names
 *   hashes       entries x 32 B, BLAKE3 of the content for files, zeros otherwise
 *   strings      names and symlink targets, UTF-8, back to back
 *   xattrs       per entry that has any: u32 count, then count x (u32 name length, name,
 *                u32 value length, value)
 *   pieceMap     per file bigger than PIECE_SIZE, by record index: u32 record, u32 first hash
 *   pieceHashes  BLAKE3 of each PIECE_SIZE piece of those files (the last one shorter), 32 B
 *                each; a big file is checked piece by piece as it is read, so opening a 1 GiB
 *                file to read its header does not hash the whole of it first
 *   pieceTable   where each piece of every file is stored (PIECE_REF_SIZE each, below); a file
 *                of n bytes has ceil(n / PIECE_SIZE) consecutive refs; identical contents share
 * A record:
 *    0 u8 type (1 file, 2 dir, 3 symlink)   1 u8 zero   2 u16 mode (permission bits)
 *    4 u32 uid    8 u32 gid    12 u32 parent record
 *   16 f64 mtime (ms)   24 f64 size (files: bytes; symlinks: target bytes; dirs: 0)
 *   32 u32 name offset in strings   36 u32 name length (0 for the root)
 *   40 file: u32 first piece ref, u32 zero
 *      dir: u32 first child record, u32 child count;  symlink: u32 target offset, u32 length
 *   48 u32 xattrs offset   52 u32 xattrs length (0: none)
 *   56 the name's first 8 bytes, zero-padded: most comparisons of a lookup's binary search
 *      end here, without touching the strings section
 * A piece ref says which stored frame (codec.ts) holds the piece and where in it:
 *    0 f64 absolute position of the frame in the bundle   8 u32 frame's stored length
 *   12 u32 frame's decoded length   16 u32 the piece's offset in the decoded frame
 *   20 u8 codec (CODEC_IDS)   21 3 x u8 zero
 * A frame is one piece of a big file, one file, or several small files packed together
 * (writer-frames.ts): small files compress far better side by side than one by one.
 * Integrity: the stored length and SHA-256 of every page are listed in the index (which the
 * footer's hash covers); a page is checked before it is inflated, each time it is read from
 * the bundle. Records and refs are checked when decoded (types, ranges, names, tree shape),
 * so a hostile but well-hashed image gets a clear error, never an out-of-range read or a
 * cycle; contents are checked against their BLAKE3 after decoding, before any byte is served.
 */
import { OverpackError } from '../errors/overpack-error.js';

/**
 * Small pages keep a cache miss cheap (one 16 KiB read and hash): random lookups in a
 * million-entry tree miss often, walks mostly hit.
 */
export const PAGE_SIZE = 16384;
export const RECORD_SIZE = 64;
export const HASH_SIZE = 32;
/** Files bigger than this are verified piece by piece; every file is stored in pieces of it. */
export const PIECE_SIZE = 1 << 20;
export const PIECE_MAP_ENTRY = 8;
export const PIECE_REF_SIZE = 24;
/** A page table entry: u32 stored length + SHA-256 of the stored bytes. */
export const PAGE_ENTRY = 36;
export const PREFIX_AT = 56;
export const PREFIX_LEN = 8;

export type TreeEntryType = 'file' | 'dir' | 'symlink';
export const TYPE_CODE: Record<TreeEntryType, number> = { file: 1, dir: 2, symlink: 3 };
export const CODE_TYPE: Array<TreeEntryType | undefined> = [undefined, 'file', 'dir', 'symlink'];

/** Where one piece of a file is stored (see the layout above). */
export interface PieceRef {
  codec: number; // CODEC_IDS
  position: number;
  storedLength: number;
  frameLength: number;
  offsetInFrame: number;
}

/** One entry as the builder describes it and `walk()` gives it back. */
export interface TreeEntry {
  path: string; // '/a/b'; the root is '/'
  type: TreeEntryType;
  mode: number; // permission bits only (0o7777)
  uid: number;
  gid: number;
  mtimeMs: number;
  size: number;
  target?: string; // symlinks
  hash?: string; // files: BLAKE3 hex
  /** files bigger than PIECE_SIZE: BLAKE3 of each piece, concatenated */
  pieceHashes?: Buffer;
  /** files: where each piece is stored */
  pieces?: PieceRef[];
  xattrs?: Record<string, string>; // name → base64 value
}

/** Where the tree is and how to check it: stored in the (hashed) index. */
export interface TreeLocation {
  offset: number; // absolute position of the stored pages
  length: number; // bytes stored
  size: number; // bytes of the tree, inflated
  entries: number;
  files: number;
  strings: [number, number]; // [offset, length] in the inflated tree
  xattrs: [number, number];
  pieceMap: [number, number];
  pieceHashes: [number, number];
  pieceTable: [number, number];
  pages: string; // base64: per page, u32 stored length + SHA-256 of the stored bytes
}

/** A decoded record. `index` doubles as the entry's inode number minus one. */
export interface TreeRecord {
  index: number;
  type: TreeEntryType;
  mode: number;
  uid: number;
  gid: number;
  parent: number;
  mtimeMs: number;
  size: number;
  /** files: first piece ref; dirs: first child; symlinks: target offset */
  first: number;
  /** dirs: child count; symlinks: target length; files: 0 */
  count: number;
  nameOff: number;
  nameLen: number;
  xattrOff: number;
  xattrLen: number;
}

/** The tree is inconsistent; `detail` says where. The image reader turns it into ImageError. */
export class TreeError extends OverpackError {
  constructor(readonly detail: string) {
    super('BAD_INDEX', 'read-tree', null, `invalid image index: ${detail}`);
  }
}

/** How many pieces a file of `size` bytes is stored in. */
export function pieceCount(size: number): number {
  return Math.ceil(size / PIECE_SIZE);
}

/** The length of piece `k` of a file of `size` bytes. */
export function pieceLength(size: number, k: number): number {
  return Math.min(PIECE_SIZE, size - k * PIECE_SIZE);
}

export const byteOrder = (a: Buffer, b: Buffer) => Buffer.compare(a, b);

/** A name that can be stored: one path component, no NUL, not `.` or `..`. */
export function validName(name: Buffer): boolean {
  if (name.length === 0 || name.includes(0x2f) || name.includes(0)) return false;
  return !(name.length === 1 && name[0] === 0x2e) && !(name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

/** A name's first bytes as stored in its record: names hold no NUL, so padding sorts first. */
export function prefixOf(name: Buffer): Buffer {
  const p = Buffer.alloc(PREFIX_LEN);
  name.copy(p, 0, 0, PREFIX_LEN);
  return p;
}
