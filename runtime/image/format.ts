/**
 * The image: an app directory stored read-only at the end of a bundle, served lazily.
 *
 * Bundle layout:  [executable][data][tree][index JSON][footer]
 * - executable: the runtime (Node + SEA blob), or the loader and the runtime compressed
 *   (`LoaderRecord`, builder/loader.ts);
 * - data: each distinct file content once (deduplicated by BLAKE3), in frames: compressed
 *   (zstd by default) or raw, small files packed together, big files one frame per 1 MiB
 *   piece, all-zero pieces not stored (writer-frames.ts, codec.ts); back to back, no padding
 *   (reads go through FUSE, never mmap, so alignment buys nothing); then the native addons,
 *   raw;
 * - tree: every entry's metadata and where each piece of each file is stored, in a binary
 *   table kept in deflated 16 KiB pages that are read on demand (tree-layout.ts);
 * - index: UTF-8 JSON (`ImageIndex`): the manifest, the addons, and where the tree is with the
 *   stored length and SHA-256 of each of its pages. Small whatever the app's size. Same app dir, same bytes;
 * - footer: the last FOOTER_SIZE bytes, fixed layout (little-endian):
 *     0  magic "OVPKIMG\0" (8)     8  format version u32      12 flags u32 (bit 0: SIGNED)
 *    16  image start u64           24 index offset u64        32 index length u64
 *    40  SHA-256 of the index (32)
 *   All offsets are absolute positions in the bundle file.
 * - optionally, a signature trailer after the footer (signature.ts); then the footer's SIGNED
 *   flag is set.
 * Older versions: 1 kept every entry in the JSON index and padded contents to 4 KiB; 2 stored
 * every content raw at one offset. A bundle carries its own runtime, so old bundles keep
 * running; this reader names their version and asks for a rebuild to inspect them.
 *
 * File contents are identified by BLAKE3 (fast, native). The index, the tree pages and the
 * native addons use SHA-256 instead, from Node's built-in crypto: the BLAKE3 implementation is
 * itself one of the addons, so it cannot vouch for the bytes it is loaded from.
 *
 * The reader trusts nothing until checked: footer bounds, the index's hash, the tree's
 * location and root here; every tree page's hash and every record as it is read (tree.ts).
 */
import fs from 'node:fs';
import { crypto } from '../builtins.js';
import { ImageTree, type TreeSource } from './tree.js';
import { TreeError, type TreeEntry, type TreeLocation } from './tree-layout.js';
import { decodeTrailer, isTrailer, SignatureError, TRAILER_SIZE, type SignatureTrailer } from './signature.js';
import { OverpackError } from '../errors/overpack-error.js';

export const IMAGE_MAGIC = Buffer.from('OVPKIMG\0', 'latin1');
export const IMAGE_VERSION = 3;
/** What the earlier versions were, for the message that refuses them. */
const OLD_VERSIONS: Record<number, string> = {
  1: 'an overpack 0.1 image with its entries in JSON',
  2: 'an uncompressed image from before image format 3',
};
export const FOOTER_SIZE = 72;
/** The image starts on a page boundary after the executable (one pad per bundle). */
export const BLOCK_ALIGN = 4096;
/** Footer flag: a signature trailer follows the footer. */
export const FLAG_SIGNED = 1;
const KNOWN_FLAGS = FLAG_SIGNED;
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

export type ImageEntryType = TreeEntry['type'];
export type ImageEntry = TreeEntry;

/** A native addon shipped in the bundle, extracted once to the user's cache at launch. */
export interface ImageAddon {
  name: string;
  hash: string; // SHA-256 hex
  offset: number;
  size: number;
}

/** What a bundle's executable is built for. Absent in bundles made before overpack recorded it. */
export interface ImageRuntime {
  target: string; // 'linux-x64', 'linux-arm64'
  node: string; // 'v26.12.1'
  /** The oldest glibc it runs on ("2.34"): the newest GLIBC_ version the Node binary or an addon needs. */
  glibc: string | null;
}

export interface ImageIndex {
  format: 'overpack-image';
  version: number;
  manifest: unknown; // the app's overpack.json, validated by the builder
  addons: ImageAddon[];
  runtime?: ImageRuntime;
  tree: TreeLocation;
  /** The runtime executable in front of the image (absent in bundles before it was recorded). */
  executable?: RuntimeRecord;
  /** How file contents are stored: compression, bytes after dedup and as stored, frames. */
  content?: ContentSummary;
  /**
   * Present when the runtime executable is stored compressed: the bundle starts with the
   * loader (`size` bytes, runtime/loader/overpack_loader.c), then the runtime as one frame.
   */
  loader?: LoaderRecord;
}

export interface LoaderRecord {
  size: number;
  frameLength: number;
  compression: string; // 'zstd:12'
  /**
   * SHA-256 of the loader and the frame as stored (bytes [0, size + frameLength)); absent in
   * bundles built before it was recorded. An update copies an unchanged front from the old
   * bundle instead of downloading it (runtime/update/plan.ts).
   */
  sha256?: string;
}

export interface ContentSummary {
  compression: string; // 'zstd:9', 'none'
  bytes: number;
  storedBytes: number;
  frames: number;
}

/**
 * The runtime executable: bytes [0, size) of the bundle, a Node with the SEA blob. `seaFuse` is
 * the offset of the single-executable fuse byte ('1'); with it set to '0' the same bytes are a
 * plain Node of that version, which the launcher puts on the app's PATH as `node`.
 */
export interface RuntimeRecord {
  size: number;
  sha256: string;
  seaFuse: number;
}

export interface Footer {
  version: number;
  flags?: number; // FLAG_* bits; 0 when absent
  imageStart: number;
  indexOffset: number;
  indexLength: number;
  indexHash: Buffer;
}

/** A bundle that cannot be used, with the reason and what to do. */
export class ImageError extends OverpackError {
  constructor(readonly bundle: string, op: string, message: string) {
    super('BAD_IMAGE', op, bundle, `${bundle}: ${message}`);
  }
}

export function sha256(data: Uint8Array): Buffer {
  return crypto().createHash('sha256').update(data).digest();
}

export function encodeFooter(f: Footer): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  IMAGE_MAGIC.copy(b, 0);
  b.writeUInt32LE(f.version, 8);
  b.writeUInt32LE(f.flags ?? 0, 12);
  b.writeBigUInt64LE(BigInt(f.imageStart), 16);
  b.writeBigUInt64LE(BigInt(f.indexOffset), 24);
  b.writeBigUInt64LE(BigInt(f.indexLength), 32);
  f.indexHash.copy(b, 40);
  return b;
}

export function alignUp(n: number): number {
  return Math.ceil(n / BLOCK_ALIGN) * BLOCK_ALIGN;
}

function safeNumber(v: bigint, what: string, bundle: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageError(bundle, 'read-footer', `${what} is out of range: the bundle is corrupt`);
  return Number(v);
}

/** Decodes the footer that ends at `fileSize` (the file's size, or the signature trailer's offset). */
export function decodeFooter(b: Buffer, fileSize: number, bundle: string): Footer {
  if (b.length < FOOTER_SIZE || !b.subarray(0, 8).equals(IMAGE_MAGIC)) {
    throw new ImageError(bundle, 'read-footer', 'no overpack image found at the end of this file (not a bundle, or truncated: download or build it again)');
  }
  const version = b.readUInt32LE(8);
  if (version !== IMAGE_VERSION) {
    const what = OLD_VERSIONS[version] ? ` (${OLD_VERSIONS[version]}; it still runs with the runtime inside it)` : '';
    throw new ImageError(bundle, 'read-footer', `image format version ${version}${what} is not read by this overpack (it reads version ${IMAGE_VERSION}); rebuild the bundle with this overpack`);
  }
  const flags = b.readUInt32LE(12);
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    throw new ImageError(bundle, 'read-footer', `the footer has flags 0x${flags.toString(16)} that this runtime does not know; rebuild the bundle with a matching overpack`);
  }
  const f: Footer = {
    version,
    flags,
    imageStart: safeNumber(b.readBigUInt64LE(16), 'image start', bundle),
    indexOffset: safeNumber(b.readBigUInt64LE(24), 'index offset', bundle),
    indexLength: safeNumber(b.readBigUInt64LE(32), 'index length', bundle),
    indexHash: Buffer.from(b.subarray(40, 72)),
  };
  const end = fileSize - FOOTER_SIZE;
  if (f.imageStart > f.indexOffset || f.indexOffset + f.indexLength !== end || f.indexLength > MAX_INDEX_BYTES || f.indexLength === 0) {
    throw new ImageError(bundle, 'read-footer', 'the footer points outside the file: the bundle is truncated or corrupt (download or build it again)');
  }
  return f;
}

/**
 * Checks an index read from a bundle and opens its tree (whose root is checked here, every
 * other record as it is read); throws ImageError naming the first problem.
 */
export function openTree(index: ImageIndex, footer: Footer, fd: TreeSource, bundle: string): ImageTree {
  const bad = (msg: string): never => {
    throw new ImageError(bundle, 'read-index', `invalid image index: ${msg}`);
  };
  if (index === null || typeof index !== 'object' || index.format !== 'overpack-image' || index.version !== IMAGE_VERSION) bad('not an overpack image index');
  if (!Array.isArray(index.addons)) bad('addons missing');
  const r = index.executable;
  const l = index.loader;
  if (l !== undefined && (typeof l !== 'object' || l === null || !Number.isSafeInteger(l.size) || !Number.isSafeInteger(l.frameLength) || l.size + l.frameLength > footer.imageStart || typeof l.compression !== 'string' || (l.sha256 !== undefined && (typeof l.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(l.sha256))) || r === undefined)) bad('bad loader record');
  // Stored raw, the runtime is the bundle's first bytes; compressed, it is bigger than its frame.
  if (r !== undefined && (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.size) || (l === undefined && r.size > footer.imageStart) || typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256) || !Number.isSafeInteger(r.seaFuse) || r.seaFuse < 0 || r.seaFuse >= r.size)) bad('bad executable record');
  const t = index.tree;
  const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const isRange = (v: unknown) => Array.isArray(v) && v.length === 2 && v.every(isCount);
  if (!t || typeof t !== 'object' || ![t.offset, t.length, t.size, t.entries, t.files].every(isCount) || ![t.strings, t.xattrs, t.pieceMap, t.pieceHashes, t.pieceTable].every(isRange) || typeof t.pages !== 'string') bad('tree location missing');
  // The tree sits right before the index, after all data: contents must lie below it.
  if (t.offset < footer.imageStart || t.offset + t.length !== footer.indexOffset) bad('the tree lies outside the image');
  const inData = (offset: unknown, size: unknown, what: string) => {
    if (!isCount(offset) || !isCount(size)) bad(`${what}: bad offset or size`);
    if ((offset as number) < footer.imageStart || (offset as number) + (size as number) > t.offset) bad(`${what}: data lies outside the image`);
  };
  for (const a of index.addons) {
    if (!a || typeof a.name !== 'string' || !/^[A-Za-z0-9._-]+$/.test(a.name)) bad(`addon ${JSON.stringify(a?.name)}: bad name`);
    if (typeof a.hash !== 'string' || !/^[0-9a-f]{64}$/.test(a.hash)) bad(`addon ${a.name}: bad hash`);
    inData(a.offset, a.size, `addon ${a.name}`);
  }
  try {
    return new ImageTree(fd, t, footer.imageStart, t.offset);
  } catch (err) {
    if (err instanceof TreeError) bad(err.detail);
    throw err;
  }
}

export interface OpenedImage {
  bundle: string;
  footer: Footer;
  index: ImageIndex;
  /** Entries' metadata, read on demand (tree.ts). */
  tree: ImageTree;
  fd: number;
  size: number;
  /** The signature trailer, when the bundle is signed (read, not yet verified: see signature.ts). */
  signature: SignatureTrailer | null;
}

/**
 * Reads and checks the footer and index of `bundle`. A signature trailer is located and decoded
 * but not verified here: verifying means hashing the whole file, which only callers that ask
 * for it pay for.
 */
export function readImage(bundle: string): OpenedImage {
  let fd: number;
  try {
    fd = fs.openSync(bundle, 'r');
  } catch (err) {
    throw new ImageError(bundle, 'open', `cannot open: ${(err as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < FOOTER_SIZE) throw new ImageError(bundle, 'read-footer', 'file too small to be a bundle (truncated?)');
    let signature: SignatureTrailer | null = null;
    let footerEnd = size;
    if (size >= FOOTER_SIZE + TRAILER_SIZE) {
      const tb = Buffer.alloc(TRAILER_SIZE);
      fs.readSync(fd, tb, 0, TRAILER_SIZE, size - TRAILER_SIZE);
      // The index is JSON text, which never holds a raw NUL: its bytes cannot look like the magic.
      if (isTrailer(tb)) {
        try {
          signature = decodeTrailer(tb, size, bundle);
        } catch (err) {
          if (err instanceof SignatureError) throw new ImageError(bundle, err.op, err.message);
          throw err;
        }
        footerEnd = size - TRAILER_SIZE;
      }
    }
    const fb = Buffer.alloc(FOOTER_SIZE);
    fs.readSync(fd, fb, 0, FOOTER_SIZE, footerEnd - FOOTER_SIZE);
    const footer = decodeFooter(fb, footerEnd, bundle);
    const flaggedSigned = ((footer.flags ?? 0) & FLAG_SIGNED) !== 0;
    if (flaggedSigned && !signature) {
      throw new ImageError(bundle, 'read-signature', 'this bundle was signed but its signature block is missing (cut off or stripped): download or build it again');
    }
    if (!flaggedSigned && signature) {
      throw new ImageError(bundle, 'read-signature', 'a signature block follows a footer that does not announce one: the bundle was modified (download or build it again)');
    }
    const ib = Buffer.alloc(footer.indexLength);
    if (fs.readSync(fd, ib, 0, ib.length, footer.indexOffset) !== ib.length) throw new ImageError(bundle, 'read-index', 'index truncated');
    if (!sha256(ib).equals(footer.indexHash)) {
      throw new ImageError(bundle, 'read-index', 'the image index does not match its hash: the bundle is corrupt or was modified (download or build it again)');
    }
    let index: ImageIndex;
    try {
      index = JSON.parse(ib.toString('utf8')) as ImageIndex;
    } catch {
      throw new ImageError(bundle, 'read-index', 'the image index is not valid JSON');
    }
    const tree = openTree(index, footer, fd, bundle);
    return { bundle, footer, index, tree, fd, size, signature };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
