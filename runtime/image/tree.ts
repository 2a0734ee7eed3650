/**
 * The image's tree: every entry's metadata in a binary table that is read in pages, on demand.
 *
 * Why binary and paged: a JSON index held in memory cost ~530 bytes of heap per file and took
 * seconds to parse at a million files, so a big app's runtime grew with its image. Here the
 * runtime keeps only the pages it touched (a bounded cache of 16 KiB pages) and starts in the
 * same time whatever the size of the image.
 *
 * Layout (little-endian) of the tree's `size` bytes, which are stored in 16 KiB pages, each
 * deflated (raw deflate) unless that would not make it smaller, back to back at absolute
 * `offset` in the bundle (`length` bytes stored):
 *   records  entries x 64 B, breadth first from the root (record 0), so the children of a
 *            directory are consecutive; siblings sorted by the bytes of their UTF-8 names
 *   hashes   entries x 32 B, BLAKE3 of the content for files, zeros otherwise
 *   strings  names and symlink targets, UTF-8, back to back
 *   xattrs   per entry that has any: u32 count, then count x (u32 name length, name,
 *            u32 value length, value)
 *   chunkmap per file bigger than CHUNK_SIZE, by record index: u32 record, u32 first chunk
 *   chunks   BLAKE3 of each CHUNK_SIZE piece of those files (the last one shorter), 32 B each;
 *            a big file is checked piece by piece as it is read, so opening a 1 GiB file to
 *            read its header does not hash the whole of it first (identical contents share)
 * A record:
 *    0 u8 type (1 file, 2 dir, 3 symlink)   1 u8 zero   2 u16 mode (permission bits)
 *    4 u32 uid    8 u32 gid    12 u32 parent record
 *   16 f64 mtime (ms)   24 f64 size (files: bytes; symlinks: target bytes; dirs: 0)
 *   32 u32 name offset in strings   36 u32 name length (0 for the root)
 *   40 file: f64 absolute position of the content in the bundle
 *      dir: u32 first child record, u32 child count;  symlink: u32 target offset, u32 length
 *   48 u32 xattrs offset   52 u32 xattrs length (0: none)
 *   56 the name's first 8 bytes, zero-padded: most comparisons of a lookup's binary search
 *      end here, without touching the strings section
 * Integrity: the stored length and SHA-256 of every page are listed in the index (which the
 * footer's hash covers); a page is checked before it is inflated, each time it is read from
 * the bundle. Deflating halves the tree (records and names compress well; it is what keeps an
 * image no bigger than an uncompressed squashfs of the same files) for ~25 µs per page read.
 * Records are
 * checked when decoded (types, ranges, names, tree shape), so a hostile but well-hashed image
 * gets a clear error, never an out-of-range read or a cycle.
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';

/**
 * Small pages keep a cache miss cheap (one 16 KiB read and hash, ~20 µs): random lookups in a
 * million-entry tree miss often, walks mostly hit.
 */
export const PAGE_SIZE = 16384;
export const RECORD_SIZE = 64;
export const HASH_SIZE = 32;
/** Files bigger than this are verified piece by piece (see `chunks`). */
export const CHUNK_SIZE = 1 << 20;
const CHUNK_MAP_ENTRY = 8;
/** Pages kept in memory: 8 MiB whatever the image's size. */
const CACHE_PAGES = 512;
const PREFIX_AT = 56;
const PREFIX_LEN = 8;
/** Resolved paths kept, so a lookup usually costs one binary search in its parent. */
const CACHE_PATHS = 32768;

export type TreeEntryType = 'file' | 'dir' | 'symlink';
const TYPE_CODE: Record<TreeEntryType, number> = { file: 1, dir: 2, symlink: 3 };
const CODE_TYPE: Array<TreeEntryType | undefined> = [undefined, 'file', 'dir', 'symlink'];

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
  /** files bigger than CHUNK_SIZE: BLAKE3 of each piece, concatenated */
  chunks?: Buffer;
  offset?: number; // files: absolute position of the content in the bundle
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
  chunkMap: [number, number];
  chunks: [number, number];
  pages: string; // base64: per page, u32 stored length + SHA-256 of the stored bytes
}

const PAGE_ENTRY = 36;

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
  /** files: content position; dirs: first child; symlinks: target offset */
  a: number;
  /** dirs: child count; symlinks: target length */
  b: number;
  nameOff: number;
  nameLen: number;
  xattrOff: number;
  xattrLen: number;
}

/** The tree is inconsistent; `detail` says where. The image reader turns it into ImageError. */
export class TreeError extends Error {
  constructor(readonly detail: string) {
    super(`invalid image index: ${detail}`);
    this.name = 'TreeError';
  }
}

const byteOrder = (a: Buffer, b: Buffer) => Buffer.compare(a, b);

/** A name that can be stored: one path component, no NUL, not `.` or `..`. */
function validName(name: Buffer): boolean {
  if (name.length === 0 || name.includes(0x2f) || name.includes(0)) return false;
  return !(name.length === 1 && name[0] === 0x2e) && !(name.length === 2 && name[0] === 0x2e && name[1] === 0x2e);
}

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
function encodeRaw(entries: TreeEntry[]): { bytes: Buffer; location: Pick<TreeLocation, 'entries' | 'files' | 'strings' | 'xattrs' | 'chunkMap' | 'chunks'> } {
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
  const chunkMap: Buffer[] = [];
  const chunkParts: Buffer[] = [];
  const chunkStart = new Map<string, number>(); // content hash → first chunk
  let chunkCount = 0;
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
      records.writeDoubleLE(e.offset!, r + 40);
      Buffer.from(e.hash!, 'hex').copy(hashes, i * HASH_SIZE);
      if (e.size > CHUNK_SIZE) {
        const want = Math.ceil(e.size / CHUNK_SIZE);
        if (e.chunks?.length !== want * HASH_SIZE) throw new Error(`encodeTree: ${e.path} needs ${want} chunk hashes`);
        let first = chunkStart.get(e.hash!);
        if (first === undefined) {
          first = chunkCount;
          chunkStart.set(e.hash!, first);
          chunkParts.push(e.chunks);
          chunkCount += want;
        }
        const m = Buffer.alloc(CHUNK_MAP_ENTRY);
        m.writeUInt32LE(i, 0);
        m.writeUInt32LE(first, 4);
        chunkMap.push(m);
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
  const bytes = Buffer.concat([records, hashes, ...stringParts, ...xattrParts, ...chunkMap, ...chunkParts]);
  if (bytes.length > 0xffffffff) throw new Error('encodeTree: the index is larger than 4 GiB');
  const stringsAt = n * (RECORD_SIZE + HASH_SIZE);
  const xattrsAt = stringsAt + stringsLen;
  const mapAt = xattrsAt + xattrsLen;
  const mapLen = chunkMap.length * CHUNK_MAP_ENTRY;
  return {
    bytes,
    location: { entries: n, files, strings: [stringsAt, stringsLen], xattrs: [xattrsAt, xattrsLen], chunkMap: [mapAt, mapLen], chunks: [mapAt + mapLen, chunkCount * HASH_SIZE] },
  };
}

/** A name's first bytes as stored in its record: names hold no NUL, so padding sorts first. */
function prefixOf(name: Buffer): Buffer {
  const p = Buffer.alloc(PREFIX_LEN);
  name.copy(p, 0, 0, PREFIX_LEN);
  return p;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

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

  constructor(private readonly fd: number, private readonly loc: TreeLocation, private readonly dataStart: number, private readonly dataEnd: number) {
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
    const [mo, ml] = loc.chunkMap;
    const [co, cl] = loc.chunks;
    if (!Number.isSafeInteger(loc.entries) || loc.entries < 1 || loc.entries > 0xffffffff) throw new TreeError('bad entry count');
    if (so !== fixed || xo !== so + sl || mo !== xo + xl || co !== mo + ml || co + cl !== loc.size || ml % CHUNK_MAP_ENTRY !== 0 || cl % HASH_SIZE !== 0) {
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
    if (fs.readSync(this.fd, raw, 0, stored, this.loc.offset + this.starts[p]!) !== stored) throw new TreeError(`page ${p} is truncated`);
    if (!createHash('sha256').update(raw).digest().equals(this.table.subarray(p * PAGE_ENTRY + 4, (p + 1) * PAGE_ENTRY))) {
      throw new TreeError(`page ${p} does not match its hash: the bundle is corrupt or was modified`);
    }
    let buf = raw;
    if (stored !== len) {
      try {
        buf = inflateRawSync(raw, { maxOutputLength: len });
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
      a: type === 'file' ? b.readDoubleLE(o + 40) : b.readUInt32LE(o + 40),
      b: type === 'file' ? 0 : b.readUInt32LE(o + 44),
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
      if (!Number.isSafeInteger(r.a) || r.a < this.dataStart || r.a + r.size > this.dataEnd) bad('data lies outside the image');
    } else if (type === 'dir') {
      if (r.b > 0 && (r.a <= i || r.a + r.b > this.entries)) bad('children lie outside the index');
    } else {
      if (r.b === 0 || r.a + r.b > this.loc.strings[1]) bad('bad symlink target');
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
    return this.bytes(this.loc.strings[0] + r.a, r.b).toString('utf8');
  }

  /** BLAKE3 of a file's content, hex. */
  hash(r: TreeRecord): string {
    return this.bytes(this.entries * RECORD_SIZE + r.index * HASH_SIZE, HASH_SIZE).toString('hex');
  }

  /**
   * The BLAKE3 of piece `k` (CHUNK_SIZE bytes at k * CHUNK_SIZE) of a file bigger than
   * CHUNK_SIZE, hex. The chunk map is searched by record index; an entry out of order, out of
   * range or missing is a TreeError.
   */
  chunkHash(r: TreeRecord, k: number): string {
    const count = Math.ceil(r.size / CHUNK_SIZE);
    if (r.type !== 'file' || r.size <= CHUNK_SIZE || !Number.isInteger(k) || k < 0 || k >= count) throw new TreeError(`record ${r.index}: no chunk ${k}`);
    const [mo, ml] = this.loc.chunkMap;
    let lo = 0;
    let hi = ml / CHUNK_MAP_ENTRY - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.bytes(mo + mid * CHUNK_MAP_ENTRY, CHUNK_MAP_ENTRY);
      const rec = m.readUInt32LE(0);
      if (rec === r.index) {
        const first = m.readUInt32LE(4);
        if ((first + count) * HASH_SIZE > this.loc.chunks[1]) throw new TreeError(`record ${r.index}: chunk hashes lie outside the index`);
        return this.bytes(this.loc.chunks[0] + (first + k) * HASH_SIZE, HASH_SIZE).toString('hex');
      }
      if (rec < r.index) lo = mid + 1;
      else hi = mid - 1;
    }
    throw new TreeError(`record ${r.index}: a file of ${r.size} bytes without chunk hashes`);
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
    for (let i = dir.a; i < dir.a + dir.b; i++) {
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
    let lo = dir.a;
    let hi = dir.a + dir.b - 1;
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
        e.offset = r.a;
        e.hash = this.hash(r);
        if (r.size > CHUNK_SIZE) e.chunks = Buffer.from(Array.from({ length: Math.ceil(r.size / CHUNK_SIZE) }, (_, k) => this.chunkHash(r, k)).join(''), 'hex');
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
