/**
 * What of the new bundle can be copied from the old one, and what must be fetched.
 *
 * The new bundle is rebuilt byte for byte (its signature covers every byte), each byte either
 * copied from a place in the old bundle known to hold the same bytes, or fetched:
 * - the front (the runtime, raw or behind the loader), [0, image start): copied when both
 *   bundles record the same runtime (executable SHA-256 and size) stored the same way (the
 *   loader record, and its SHA-256 of the stored front where both have one) at the same image
 *   start;
 * - a stored frame: copied from an old frame of the same identity. A frame's decoded bytes are
 *   fully given by the contents it holds and where (each piece's offset, length and BLAKE3:
 *   the whole file's for files up to 1 MiB, the piece's for bigger ones) when those cover it
 *   with no gap, which the writer guarantees (writer-frames.ts); its stored bytes then follow
 *   from the codec and, for zstd, the level (index.content.compression), and its stored length
 *   is compared too. A frame whose pieces leave a gap is never copied;
 * - the native addons: copied from an old addon of the same SHA-256 and size;
 * - tree pages: copied from an old page of the same SHA-256 (the tree is fetched first anyway,
 *   to plan, so this only matters where it could not be);
 * - anything else (index, footer, padding, bytes no record explains) is fetched.
 * Whatever goes wrong in that reasoning is caught by the complete check of the result
 * (verify.ts), never trusted.
 */
import type { OpenedImage } from '../image/format.js';
import type { ImageIndex } from '../image/format.js';
import { CODEC_IDS } from '../image/codec.js';
import type { ImageTree } from '../image/tree.js';
import { HASH_SIZE, PAGE_ENTRY, PIECE_SIZE, pieceLength } from '../image/tree-layout.js';
import { coalesce, normalize, subtract, total, type Range } from './ranges.js';
import type { RemoteImage } from './remote.js';

/** Gaps up to this size between two ranges to fetch are fetched too: one request, not two. */
export const COALESCE_GAP = 4096;

export interface Copy {
  /** Position in the old bundle. */
  from: number;
  /** Position in the new one. */
  to: number;
  length: number;
  what: 'runtime' | 'frame' | 'addon' | 'tree';
}

export interface Plan {
  copies: Copy[];
  fetches: Range[];
  fetchBytes: number;
  copyBytes: number;
  /** The new bundle's runtime is the old one's (its front is copied, not fetched). */
  sameRuntime: boolean;
  /** The new bundle's front [0, image start), for messages and tests. */
  front: Range;
}

interface FrameInfo {
  position: number;
  storedLength: number;
  key: string | null;
}

/**
 * Every stored frame of a tree by position, with its identity (null when its pieces do not
 * cover it: then it is not copied).
 */
export function frameIdentities(tree: ImageTree, compression: string | undefined): Map<number, FrameInfo> {
  const parts = new Map<number, { codec: number; storedLength: number; frameLength: number; pieces: Set<string>; cover: Array<[number, number]> }>();
  for (const e of tree.walk()) {
    if (e.type !== 'file' || !e.pieces) continue;
    e.pieces.forEach((ref, k) => {
      if (ref.codec === CODEC_IDS.zero) return;
      const len = pieceLength(e.size, k);
      const id = e.size <= PIECE_SIZE ? e.hash! : e.pieceHashes!.subarray(k * HASH_SIZE, (k + 1) * HASH_SIZE).toString('hex');
      let f = parts.get(ref.position);
      if (!f) parts.set(ref.position, (f = { codec: ref.codec, storedLength: ref.storedLength, frameLength: ref.frameLength, pieces: new Set(), cover: [] }));
      const piece = `${ref.offsetInFrame}+${len}=${id}`;
      if (f.codec !== ref.codec || f.storedLength !== ref.storedLength || f.frameLength !== ref.frameLength) f.pieces.add('!inconsistent');
      if (!f.pieces.has(piece)) {
        f.pieces.add(piece);
        f.cover.push([ref.offsetInFrame, ref.offsetInFrame + len]);
      }
    });
  }
  const out = new Map<number, FrameInfo>();
  for (const [position, f] of parts) {
    const covered = subtract([[0, f.frameLength]], f.cover).length === 0 && !f.pieces.has('!inconsistent');
    // Raw frames are their bytes; a zstd frame's bytes also depend on the level.
    const codec = f.codec === CODEC_IDS.raw ? 'raw' : `${f.codec}:${compression ?? '?'}`;
    out.set(position, { position, storedLength: f.storedLength, key: covered ? `${codec}|${f.storedLength}|${f.frameLength}|${[...f.pieces].sort().join(',')}` : null });
  }
  return out;
}

/** Whether the two bundles' fronts (runtime, loader) are the same bytes. */
export function sameFront(a: ImageIndex, aStart: number, b: ImageIndex, bStart: number): boolean {
  if (aStart !== bStart || !a.executable || !b.executable) return false;
  if (a.executable.sha256 !== b.executable.sha256 || a.executable.size !== b.executable.size) return false;
  const la = a.loader;
  const lb = b.loader;
  if (!la || !lb) return !la && !lb;
  if (la.size !== lb.size || la.frameLength !== lb.frameLength || la.compression !== lb.compression) return false;
  return la.sha256 === undefined || lb.sha256 === undefined || la.sha256 === lb.sha256;
}

function pageTable(index: ImageIndex): Array<{ at: number; length: number; hash: string }> {
  const table = Buffer.from(index.tree.pages, 'base64');
  const out: Array<{ at: number; length: number; hash: string }> = [];
  for (let p = 0, at = index.tree.offset; p * PAGE_ENTRY < table.length; p++) {
    const length = table.readUInt32LE(p * PAGE_ENTRY);
    out.push({ at, length, hash: table.subarray(p * PAGE_ENTRY + 4, (p + 1) * PAGE_ENTRY).toString('hex') });
    at += length;
  }
  return out;
}

/**
 * The plan for making `remote` beside `local`: copies from the old bundle and ranges to fetch.
 * `done`: ranges of the new bundle already in place (fetched before, or an interrupted run's).
 * `useLocal: false` fetches everything not done (after a copy turned out wrong).
 */
export function makePlan(local: OpenedImage, remote: RemoteImage, done: Range[], useLocal = true): Plan {
  const copies: Copy[] = [];
  const front: Range = [0, remote.footer.imageStart];
  const sameRuntime = useLocal && sameFront(local.index, local.footer.imageStart, remote.index, remote.footer.imageStart);
  if (useLocal) {
    if (sameRuntime && front[1] > 0) copies.push({ from: 0, to: 0, length: front[1], what: 'runtime' });
    const old = new Map<string, number>();
    for (const f of frameIdentities(local.tree, local.index.content?.compression).values()) if (f.key) old.set(f.key, f.position);
    for (const f of frameIdentities(remote.tree, remote.index.content?.compression).values()) {
      const from = f.key ? old.get(f.key) : undefined;
      if (from !== undefined) copies.push({ from, to: f.position, length: f.storedLength, what: 'frame' });
    }
    const addons = new Map(local.index.addons.map((a) => [`${a.hash}:${a.size}`, a.offset]));
    for (const a of remote.index.addons) {
      const from = addons.get(`${a.hash}:${a.size}`);
      if (from !== undefined) copies.push({ from, to: a.offset, length: a.size, what: 'addon' });
    }
    const pages = new Map(pageTable(local.index).map((p) => [`${p.hash}:${p.length}`, p.at]));
    for (const p of pageTable(remote.index)) {
      const from = pages.get(`${p.hash}:${p.length}`);
      if (from !== undefined) copies.push({ from, to: p.at, length: p.length, what: 'tree' });
    }
  }
  // Copies of bytes already in place are skipped; a copy partly in place is made whole (cheap, local).
  const pending = copies.filter((c) => subtract([[c.to, c.to + c.length]], done).length > 0);
  const toFetch = subtract([[0, remote.size]], [...done, ...pending.map((c): Range => [c.to, c.to + c.length])]);
  const fetches = coalesce(toFetch, COALESCE_GAP);
  return { copies: pending, fetches, fetchBytes: total(fetches), copyBytes: total(normalize(pending.map((c): Range => [c.to, c.to + c.length]))), sameRuntime, front };
}
