/**
 * Reads an image's tree (layout in tree-layout.ts) from an open bundle, in pages, on demand.
 */
import fs from 'node:fs';
import { crypto, zlib } from '../builtins.js';
import { codecName } from './codec.js';
import {
  byteOrder, HASH_SIZE, PAGE_ENTRY, PAGE_SIZE, PIECE_MAP_ENTRY, PIECE_REF_SIZE, PIECE_SIZE, pieceCount, pieceLength, PREFIX_AT, PREFIX_LEN, prefixOf, RECORD_SIZE,
  CODE_TYPE, TreeError, validName, type PieceRef, type TreeEntry, type TreeLocation, type TreeRecord,
} from './tree-layout.js';

/** Pages kept in memory: 8 MiB whatever the image's size. */
const CACHE_PAGES = 512;
/** Resolved paths kept, so a lookup usually costs one binary search in its parent. */
const CACHE_PATHS = 32768;
/** The biggest frame the writer makes (a piece); a ref claiming more is refused. */
export const MAX_FRAME = PIECE_SIZE;

/**
 * Where tree pages are read from: an open bundle (its descriptor), or any positioned reader
 * (the updater reads a remote bundle's tree from the bytes it fetched). Returns bytes read.
 */
export type TreeSource = number | ((buf: Buffer, position: number) => number);

/**
 * Reads a tree from an open bundle. Sync reads: the bundle is a plain file (never our own
 * mount), its pages are in the page cache after the first touch, and each read is one page.
 * `dataStart`/`dataEnd` bound where file contents may lie.
 */
export class ImageTree {
  readonly entries: number;
  readonly files: number;
  private readonly table: Buffer;
  /** Where each stored page starts, relative to the tree's offset. */
  private readonly starts: Float64Array;
  private readonly pages = new Map<number, Buffer>();
  private readonly paths = new Map<string, number>();
  private lastPageNo = -1;
  private lastPage: Buffer | null = null;

  constructor(private readonly fd: TreeSource, private readonly loc: TreeLocation, private readonly dataStart: number, private readonly dataEnd: number) {
    this.entries = loc.entries;
    this.files = loc.files;
    this.table = Buffer.from(loc.pages, 'base64');
    const count = Math.ceil(loc.size / PAGE_SIZE);
    if (this.table.length !== count * PAGE_ENTRY) throw new TreeError('the page table does not cover the tree');
    this.starts = new Float64Array(count);
    let at = 0;
    for (let p = 0; p < count; p++) {
      this.starts[p] = at;
      const stored = this.table.readUInt32LE(p * PAGE_ENTRY);
      if (stored === 0 || stored > PAGE_SIZE) throw new TreeError(`page ${p} has a bad stored length`);
      at += stored;
    }
    if (at !== loc.length) throw new TreeError('the page table does not add up to the stored tree');
    const fixed = loc.entries * (RECORD_SIZE + HASH_SIZE);
    const [so, sl] = loc.strings;
    const [xo, xl] = loc.xattrs;
    const [mo, ml] = loc.pieceMap;
    const [co, cl] = loc.pieceHashes;
    const [ro, rl] = loc.pieceTable;
    if (!Number.isSafeInteger(loc.entries) || loc.entries < 1 || loc.entries > 0xffffffff) throw new TreeError('bad entry count');
    if (so !== fixed || xo !== so + sl || mo !== xo + xl || co !== mo + ml || ro !== co + cl || ro + rl !== loc.size || ml % PIECE_MAP_ENTRY !== 0 || cl % HASH_SIZE !== 0 || rl % PIECE_REF_SIZE !== 0) {
      throw new TreeError('sections do not add up to the tree');
    }
    const root = this.record(0);
    if (root.type !== 'dir' || root.nameLen !== 0) throw new TreeError('the first entry must be the root directory');
  }

  /** Bytes [at, at + len) of the tree, through the page cache. */
  private bytes(at: number, len: number): Buffer {
    const first = Math.floor(at / PAGE_SIZE);
    const last = Math.floor((at + len - 1) / PAGE_SIZE);
    if (len <= 0) return Buffer.alloc(0);
    if (first === last) return this.page(first).subarray(at - first * PAGE_SIZE, at - first * PAGE_SIZE + len);
    const out = Buffer.allocUnsafe(len);
    for (let p = first, done = 0; p <= last; p++) {
      const page = this.page(p);
      const from = p === first ? at - first * PAGE_SIZE : 0;
      const n = Math.min(page.length - from, len - done);
      page.copy(out, done, from, from + n);
      done += n;
    }
    return out;
  }

  private page(p: number): Buffer {
    // Runs of reads in one page (a record, then its neighbours) skip the cache bookkeeping.
    if (p === this.lastPageNo) return this.lastPage!;
    const hit = this.pages.get(p);
    if (hit) {
      this.lastPageNo = p;
      this.lastPage = hit;
      // Least recently used goes first: re-inserting keeps the Map in use order.
      this.pages.delete(p);
      this.pages.set(p, hit);
      return hit;
    }
    const len = Math.min(PAGE_SIZE, this.loc.size - p * PAGE_SIZE);
    const stored = this.table.readUInt32LE(p * PAGE_ENTRY);
    const raw = Buffer.allocUnsafeSlow(stored);
    const at = this.loc.offset + this.starts[p]!;
    if ((typeof this.fd === 'number' ? fs.readSync(this.fd, raw, 0, stored, at) : this.fd(raw, at)) !== stored) throw new TreeError(`page ${p} is truncated`);
    if (!crypto().createHash('sha256').update(raw).digest().equals(this.table.subarray(p * PAGE_ENTRY + 4, (p + 1) * PAGE_ENTRY))) {
      throw new TreeError(`page ${p} does not match its hash: the bundle is corrupt or was modified`);
    }
    let buf = raw;
    if (stored !== len) {
      try {
        buf = zlib().inflateRawSync(raw, { maxOutputLength: len });
      } catch {
        throw new TreeError(`page ${p} does not inflate`);
      }
      if (buf.length !== len) throw new TreeError(`page ${p} inflates to ${buf.length} bytes, not ${len}`);
    }
    if (this.pages.size >= CACHE_PAGES) this.pages.delete(this.pages.keys().next().value as number);
    this.pages.set(p, buf);
    this.lastPageNo = p;
    this.lastPage = buf;
    return buf;
  }

  /** Decodes and checks record `i`. */
  record(i: number): TreeRecord {
    if (!Number.isInteger(i) || i < 0 || i >= this.entries) throw new TreeError(`record ${i} does not exist`);
    // Records never straddle pages (PAGE_SIZE is a multiple of RECORD_SIZE): decode in place.
    const b = this.page(Math.floor((i * RECORD_SIZE) / PAGE_SIZE));
    const o = (i * RECORD_SIZE) % PAGE_SIZE;
    const type = CODE_TYPE[b[o]!];
    const bad = (what: string): never => {
      throw new TreeError(`record ${i}: ${what}`);
    };
    if (!type) bad(`unknown type ${b[o]}`);
    const r: TreeRecord = {
      index: i,
      type: type!,
      mode: b.readUInt16LE(o + 2),
      uid: b.readUInt32LE(o + 4),
      gid: b.readUInt32LE(o + 8),
      parent: b.readUInt32LE(o + 12),
      mtimeMs: b.readDoubleLE(o + 16),
      size: b.readDoubleLE(o + 24),
      nameOff: b.readUInt32LE(o + 32),
      nameLen: b.readUInt32LE(o + 36),
      first: b.readUInt32LE(o + 40),
      count: b.readUInt32LE(o + 44),
      xattrOff: b.readUInt32LE(o + 48),
      xattrLen: b.readUInt32LE(o + 52),
    };
    if (r.mode > 0o7777) bad('bad mode');
    if (!Number.isFinite(r.mtimeMs) || r.mtimeMs < 0) bad('bad mtime');
    if (!Number.isSafeInteger(r.size) || r.size < 0) bad('bad size');
    if (i > 0 ? r.parent >= i : r.parent !== 0) bad('its parent does not come before it');
    if (i > 0 && r.nameLen === 0) bad('empty name');
    if (r.nameOff + r.nameLen > this.loc.strings[1]) bad('name lies outside the index');
    if (r.xattrOff + r.xattrLen > this.loc.xattrs[1]) bad('xattrs lie outside the index');
    if (type === 'file') {
      if (r.count !== 0 || (r.first + pieceCount(r.size)) * PIECE_REF_SIZE > this.loc.pieceTable[1]) bad('its pieces lie outside the index');
    } else if (type === 'dir') {
      if (r.count > 0 && (r.first <= i || r.first + r.count > this.entries)) bad('children lie outside the index');
    } else {
      if (r.count === 0 || r.first + r.count > this.loc.strings[1]) bad('bad symlink target');
    }
    return r;
  }

  nameBytes(r: TreeRecord): Buffer {
    const name = this.bytes(this.loc.strings[0] + r.nameOff, r.nameLen);
    if (r.index > 0 && !validName(name)) throw new TreeError(`record ${r.index}: bad name ${JSON.stringify(name.toString('utf8'))}`);
    return name;
  }

  name(r: TreeRecord): string {
    return this.nameBytes(r).toString('utf8');
  }

  target(r: TreeRecord): string {
    return this.bytes(this.loc.strings[0] + r.first, r.count).toString('utf8');
  }

  /** BLAKE3 of a file's content, hex. */
  hash(r: TreeRecord): string {
    return this.bytes(this.entries * RECORD_SIZE + r.index * HASH_SIZE, HASH_SIZE).toString('hex');
  }

  /**
   * The BLAKE3 of piece `k` (PIECE_SIZE bytes at k * PIECE_SIZE) of a file bigger than
   * PIECE_SIZE, hex. The piece map is searched by record index; an entry out of order, out of
   * range or missing is a TreeError.
   */
  pieceHash(r: TreeRecord, k: number): string {
    const count = pieceCount(r.size);
    if (r.type !== 'file' || r.size <= PIECE_SIZE || !Number.isInteger(k) || k < 0 || k >= count) throw new TreeError(`record ${r.index}: no piece ${k}`);
    const [mo, ml] = this.loc.pieceMap;
    let lo = 0;
    let hi = ml / PIECE_MAP_ENTRY - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.bytes(mo + mid * PIECE_MAP_ENTRY, PIECE_MAP_ENTRY);
      const rec = m.readUInt32LE(0);
      if (rec === r.index) {
        const first = m.readUInt32LE(4);
        if ((first + count) * HASH_SIZE > this.loc.pieceHashes[1]) throw new TreeError(`record ${r.index}: piece hashes lie outside the index`);
        return this.bytes(this.loc.pieceHashes[0] + (first + k) * HASH_SIZE, HASH_SIZE).toString('hex');
      }
      if (rec < r.index) lo = mid + 1;
      else hi = mid - 1;
    }
    throw new TreeError(`record ${r.index}: a file of ${r.size} bytes without piece hashes`);
  }

  /** Where piece `k` of file `r` is stored, checked against the codecs and the data's bounds. */
  pieceRef(r: TreeRecord, k: number): PieceRef {
    if (r.type !== 'file' || !Number.isInteger(k) || k < 0 || k >= pieceCount(r.size)) throw new TreeError(`record ${r.index}: no piece ${k}`);
    const b = this.bytes(this.loc.pieceTable[0] + (r.first + k) * PIECE_REF_SIZE, PIECE_REF_SIZE);
    const ref: PieceRef = {
      position: b.readDoubleLE(0),
      storedLength: b.readUInt32LE(8),
      frameLength: b.readUInt32LE(12),
      offsetInFrame: b.readUInt32LE(16),
      codec: b.readUInt8(20),
    };
    const bad = (what: string): never => {
      throw new TreeError(`record ${r.index}, piece ${k}: ${what}`);
    };
    const name = codecName(ref.codec);
    if (!name || b.readUIntLE(21, 3) !== 0) bad(`unknown codec ${ref.codec}`);
    const len = pieceLength(r.size, k);
    if (ref.frameLength > MAX_FRAME || ref.offsetInFrame + len > ref.frameLength) bad('it lies outside its frame');
    if (name === 'zero') {
      if (ref.storedLength !== 0 || ref.position !== 0) bad('a zero frame with stored bytes');
    } else {
      if (name === 'raw' ? ref.storedLength !== ref.frameLength : ref.storedLength === 0) bad('bad stored length');
      if (!Number.isSafeInteger(ref.position) || ref.position < this.dataStart || ref.position + ref.storedLength > this.dataEnd) bad('data lies outside the image');
    }
    return ref;
  }

  xattrs(r: TreeRecord): Map<string, Buffer> {
    const out = new Map<string, Buffer>();
    if (r.xattrLen === 0) return out;
    const b = this.bytes(this.loc.xattrs[0] + r.xattrOff, r.xattrLen);
    const bad = (): never => {
      throw new TreeError(`record ${r.index}: bad xattrs`);
    };
    let at = 0;
    const take = (n: number): Buffer => {
      if (at + n > b.length) bad();
      const v = b.subarray(at, at + n);
      at += n;
      return v;
    };
    const count = take(4).readUInt32LE();
    for (let k = 0; k < count; k++) {
      const name = take(take(4).readUInt32LE()).toString('utf8');
      out.set(name, Buffer.from(take(take(4).readUInt32LE())));
    }
    return out;
  }

  /**
   * The children of a directory record, checked: each names this directory as its parent and
   * siblings are strictly ordered (so no duplicates and no entry in two directories).
   */
  children(dir: TreeRecord): Array<{ record: TreeRecord; name: string }> {
    const out: Array<{ record: TreeRecord; name: string }> = [];
    let prev: Buffer | null = null;
    for (let i = dir.first; i < dir.first + dir.count; i++) {
      const record = this.record(i);
      if (record.parent !== dir.index) throw new TreeError(`record ${i}: listed in directory ${dir.index} but its parent is ${record.parent}`);
      const name = this.nameBytes(record);
      if (!this.bytes(i * RECORD_SIZE, RECORD_SIZE).subarray(PREFIX_AT).equals(prefixOf(name))) throw new TreeError(`record ${i}: its name prefix does not match its name`);
      if (prev && byteOrder(prev, name) >= 0) throw new TreeError(`directory ${dir.index}: names out of order or repeated (${JSON.stringify(name.toString('utf8'))})`);
      prev = name;
      out.push({ record, name: name.toString('utf8') });
    }
    return out;
  }

  /** The record at `path`, or null. */
  lookup(path: string): TreeRecord | null {
    const i = this.resolve(path);
    return i < 0 ? null : this.record(i);
  }

  private resolve(path: string): number {
    if (path === '/') return 0;
    const cached = this.paths.get(path);
    if (cached !== undefined) return cached;
    const cut = path.lastIndexOf('/');
    if (cut < 0) return -1;
    const parentIndex = this.resolve(cut === 0 ? '/' : path.slice(0, cut));
    if (parentIndex < 0) return -1;
    const dir = this.record(parentIndex);
    if (dir.type !== 'dir') return -1;
    const want = Buffer.from(path.slice(cut + 1), 'utf8');
    const wantPrefix = prefixOf(want);
    let lo = dir.first;
    let hi = dir.first + dir.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = mid * RECORD_SIZE;
      const o = at % PAGE_SIZE;
      let c = this.page(Math.floor(at / PAGE_SIZE)).compare(wantPrefix, 0, PREFIX_LEN, o + PREFIX_AT, o + RECORD_SIZE);
      const r = c === 0 ? this.record(mid) : null;
      if (r) c = byteOrder(this.nameBytes(r), want);
      if (c === 0 && r) {
        if (r.parent !== parentIndex) throw new TreeError(`record ${mid}: listed in directory ${parentIndex} but its parent is ${r.parent}`);
        if (this.paths.size >= CACHE_PATHS) this.paths.delete(this.paths.keys().next().value as string);
        this.paths.set(path, mid);
        return mid;
      }
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Every entry, parents before children, depth first (for extraction and verification). */
  *walk(): Generator<TreeEntry> {
    const visit = function* (this: ImageTree, r: TreeRecord, path: string): Generator<TreeEntry> {
      const e: TreeEntry = { path, type: r.type, mode: r.mode, uid: r.uid, gid: r.gid, mtimeMs: r.mtimeMs, size: r.size };
      if (r.type === 'file') {
        e.hash = this.hash(r);
        e.pieces = Array.from({ length: pieceCount(r.size) }, (_, k) => this.pieceRef(r, k));
        if (r.size > PIECE_SIZE) e.pieceHashes = Buffer.from(e.pieces.map((_, k) => this.pieceHash(r, k)).join(''), 'hex');
      }
      if (r.type === 'symlink') e.target = this.target(r);
      const xs = this.xattrs(r);
      if (xs.size > 0) e.xattrs = Object.fromEntries([...xs].map(([k, v]) => [k, v.toString('base64')]));
      yield e;
      if (r.type === 'dir') for (const c of this.children(r)) yield* visit.call(this, c.record, path === '/' ? `/${c.name}` : `${path}/${c.name}`);
    };
    yield* visit.call(this, this.record(0), '/');
  }
}
