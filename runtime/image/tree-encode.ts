/**
 * Encodes a tree (layout in tree-layout.ts) from the builder's entries: records, names,
 * xattrs, piece hashes and piece refs, cut into stored pages.
 */
import { createHash } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import {
  byteOrder, HASH_SIZE, PAGE_ENTRY, PAGE_SIZE, PIECE_MAP_ENTRY, PIECE_REF_SIZE, PIECE_SIZE, pieceCount, PREFIX_AT, PREFIX_LEN, RECORD_SIZE, TYPE_CODE,
  type PieceRef, type TreeEntry, type TreeLocation,
} from './tree-layout.js';

/**
 * Encodes `entries` (the root first, every parent before its children) as a tree whose file
 * records point at their `offset`. Returns the bytes and their location minus `offset`, which
 * the caller knows once it places them.
 */
export function encodeTree(entries: TreeEntry[]): { bytes: Buffer; location: Omit<TreeLocation, 'offset'> } {
  const raw = encodeRaw(entries);
  const paged = storePages(raw.bytes);
  return { bytes: paged.bytes, location: { ...raw.location, length: paged.bytes.length, size: raw.bytes.length, pages: paged.pages } };
}

/** Cuts a tree's bytes into stored pages (deflated where that helps) and their table. */
export function storePages(tree: Buffer): { bytes: Buffer; pages: string } {
  const stored: Buffer[] = [];
  const table = Buffer.alloc(Math.ceil(tree.length / PAGE_SIZE) * PAGE_ENTRY);
  for (let p = 0, k = 0; p < tree.length; p += PAGE_SIZE, k++) {
    const page = tree.subarray(p, p + PAGE_SIZE);
    const deflated = deflateRawSync(page, { level: 6 });
    const keep = deflated.length < page.length ? deflated : page;
    stored.push(keep);
    table.writeUInt32LE(keep.length, k * PAGE_ENTRY);
    createHash('sha256').update(keep).digest().copy(table, k * PAGE_ENTRY + 4);
  }
  return { bytes: Buffer.concat(stored), pages: table.toString('base64') };
}

/** Where each stored page starts, relative to the tree's offset (from a page table). */
export function pageStarts(pages: string): number[] {
  const table = Buffer.from(pages, 'base64');
  const out: number[] = [];
  for (let k = 0, at = 0; k + PAGE_ENTRY <= table.length; k += PAGE_ENTRY) {
    out.push(at);
    at += table.readUInt32LE(k);
  }
  return out;
}

/** The tree's bytes before paging. */
function encodeRaw(entries: TreeEntry[]): { bytes: Buffer; location: Pick<TreeLocation, 'entries' | 'files' | 'strings' | 'xattrs' | 'pieceMap' | 'pieceHashes' | 'pieceTable'> } {
  if (entries[0]?.path !== '/' || entries[0].type !== 'dir') throw new Error('encodeTree: the first entry must be the root directory');
  // Breadth first, siblings in byte order of their names.
  const kids = new Map<string, TreeEntry[]>();
  for (const e of entries) {
    if (e.type === 'dir') kids.set(e.path, []);
    if (e.path === '/') continue;
    const parent = e.path.slice(0, e.path.lastIndexOf('/')) || '/';
    const list = kids.get(parent);
    if (!list) throw new Error(`encodeTree: ${e.path} comes before its parent directory`);
    list.push(e);
  }
  const nameOf = (e: TreeEntry) => Buffer.from(e.path === '/' ? '' : e.path.slice(e.path.lastIndexOf('/') + 1), 'utf8');
  const order: TreeEntry[] = [entries[0]];
  const parentOf: number[] = [0];
  const names: Buffer[] = [nameOf(entries[0])];
  const firstChild: number[] = [];
  for (let i = 0; i < order.length; i++) {
    const e = order[i]!;
    if (e.type !== 'dir') continue;
    const children = kids.get(e.path)!.map((c) => ({ c, name: nameOf(c) })).sort((x, y) => byteOrder(x.name, y.name));
    firstChild[i] = order.length;
    for (const { c, name } of children) {
      order.push(c);
      parentOf.push(i);
      names.push(name);
    }
  }
  const n = order.length;
  const stringParts: Buffer[] = [];
  let stringsLen = 0;
  const addString = (b: Buffer) => {
    const at = stringsLen;
    stringParts.push(b);
    stringsLen += b.length;
    return at;
  };
  const xattrParts: Buffer[] = [];
  let xattrsLen = 0;
  const pieceMap: Buffer[] = [];
  const hashParts: Buffer[] = [];
  const hashStart = new Map<string, number>(); // content hash → first piece hash
  let hashCount = 0;
  const refParts: Buffer[] = [];
  const refStart = new Map<string, number>(); // content hash → first piece ref
  let refCount = 0;
  const records = Buffer.alloc(n * RECORD_SIZE);
  const hashes = Buffer.alloc(n * HASH_SIZE);
  let files = 0;
  for (let i = 0; i < n; i++) {
    const e = order[i]!;
    const r = i * RECORD_SIZE;
    records.writeUInt8(TYPE_CODE[e.type], r);
    records.writeUInt16LE(e.mode & 0o7777, r + 2);
    records.writeUInt32LE(e.uid >>> 0, r + 4);
    records.writeUInt32LE(e.gid >>> 0, r + 8);
    records.writeUInt32LE(parentOf[i]!, r + 12);
    records.writeDoubleLE(e.mtimeMs, r + 16);
    records.writeDoubleLE(e.size, r + 24);
    records.writeUInt32LE(addString(names[i]!), r + 32);
    records.writeUInt32LE(names[i]!.length, r + 36);
    names[i]!.copy(records, r + PREFIX_AT, 0, PREFIX_LEN);
    if (e.type === 'file') {
      files++;
      Buffer.from(e.hash!, 'hex').copy(hashes, i * HASH_SIZE);
      const want = pieceCount(e.size);
      if (e.pieces?.length !== want) throw new Error(`encodeTree: ${e.path} needs ${want} piece refs`);
      let firstRef = refStart.get(e.hash!);
      if (firstRef === undefined) {
        firstRef = refCount;
        refStart.set(e.hash!, firstRef);
        refParts.push(encodeRefs(e.pieces));
        refCount += want;
      }
      records.writeUInt32LE(firstRef, r + 40);
      if (e.size > PIECE_SIZE) {
        if (e.pieceHashes?.length !== want * HASH_SIZE) throw new Error(`encodeTree: ${e.path} needs ${want} piece hashes`);
        let first = hashStart.get(e.hash!);
        if (first === undefined) {
          first = hashCount;
          hashStart.set(e.hash!, first);
          hashParts.push(e.pieceHashes);
          hashCount += want;
        }
        const m = Buffer.alloc(PIECE_MAP_ENTRY);
        m.writeUInt32LE(i, 0);
        m.writeUInt32LE(first, 4);
        pieceMap.push(m);
      }
    } else if (e.type === 'dir') {
      records.writeUInt32LE(firstChild[i]!, r + 40);
      records.writeUInt32LE(kids.get(e.path)!.length, r + 44);
    } else {
      const t = Buffer.from(e.target!, 'utf8');
      records.writeUInt32LE(addString(t), r + 40);
      records.writeUInt32LE(t.length, r + 44);
    }
    const xs = Object.entries(e.xattrs ?? {});
    if (xs.length > 0) {
      const parts: Buffer[] = [u32(xs.length)];
      for (const [k, v] of xs) {
        const name = Buffer.from(k, 'utf8');
        const value = Buffer.from(v, 'base64');
        parts.push(u32(name.length), name, u32(value.length), value);
      }
      const blob = Buffer.concat(parts);
      records.writeUInt32LE(xattrsLen, r + 48);
      records.writeUInt32LE(blob.length, r + 52);
      xattrParts.push(blob);
      xattrsLen += blob.length;
    }
  }
  const bytes = Buffer.concat([records, hashes, ...stringParts, ...xattrParts, ...pieceMap, ...hashParts, ...refParts]);
  if (bytes.length > 0xffffffff) throw new Error('encodeTree: the index is larger than 4 GiB');
  const stringsAt = n * (RECORD_SIZE + HASH_SIZE);
  const xattrsAt = stringsAt + stringsLen;
  const mapAt = xattrsAt + xattrsLen;
  const mapLen = pieceMap.length * PIECE_MAP_ENTRY;
  const hashesAt = mapAt + mapLen;
  const refsAt = hashesAt + hashCount * HASH_SIZE;
  return {
    bytes,
    location: {
      entries: n, files, strings: [stringsAt, stringsLen], xattrs: [xattrsAt, xattrsLen],
      pieceMap: [mapAt, mapLen], pieceHashes: [hashesAt, hashCount * HASH_SIZE], pieceTable: [refsAt, refCount * PIECE_REF_SIZE],
    },
  };
}

function encodeRefs(refs: PieceRef[]): Buffer {
  const b = Buffer.alloc(refs.length * PIECE_REF_SIZE);
  refs.forEach((ref, k) => {
    const o = k * PIECE_REF_SIZE;
    b.writeDoubleLE(ref.position, o);
    b.writeUInt32LE(ref.storedLength, o + 8);
    b.writeUInt32LE(ref.frameLength, o + 12);
    b.writeUInt32LE(ref.offsetInFrame, o + 16);
    b.writeUInt8(ref.codec, o + 20);
  });
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

