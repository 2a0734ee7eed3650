/**
 * The image reader against hostile and broken images: each is rejected with a clear message,
 * before anything is mounted (footer, index, tree location and root) or when the damaged part
 * is first read (tree pages and records: EIO for the app, never wrong data). Hashes are redone
 * after tampering, so only the reader's own checks stand between the bytes and the user.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { appendImage } from '../runtime/image/writer.js';
import { encodeFooter, FOOTER_SIZE, IMAGE_VERSION, readImage, sha256, ImageError, type ImageIndex } from '../runtime/image/format.js';
import { encodeTree, pageStarts, storePages } from '../runtime/image/tree-encode.js';
import { PAGE_SIZE, PIECE_REF_SIZE, PIECE_SIZE, RECORD_SIZE, TreeError, type TreeEntry } from '../runtime/image/tree-layout.js';
import { inflateRawSync } from 'node:zlib';
import { FsError } from '../runtime/vfs/index.js';
import { ImageLayer } from '../runtime/image/image-layer.js';
import { CODEC_IDS } from '../runtime/image/codec.js';
import { CLI, forceUnmount, tempDir } from './helpers.js';

const base = tempDir('image');
const app = path.join(base, 'app');
const good = path.join(base, 'good.img');

interface Parts {
  data: Buffer;
  imageStart: number;
  index: ImageIndex;
  /** Where the tree is laid out, whatever the (edited) index says. */
  treeAt: number;
  /** The tree inflated: tests edit these bytes. */
  tree: Buffer;
  /** The tree as stored, used as is when `assemble` is told not to redo the pages. */
  stored: Buffer;
}

/** An image (the good one unless told) cut into its parts. */
function parts(from = good): Parts {
  const data = fs.readFileSync(from);
  const footer = data.subarray(data.length - FOOTER_SIZE);
  const indexOffset = Number(footer.readBigUInt64LE(24));
  const indexLength = Number(footer.readBigUInt64LE(32));
  const index = JSON.parse(data.subarray(indexOffset, indexOffset + indexLength).toString('utf8')) as ImageIndex;
  const stored = Buffer.from(data.subarray(index.tree.offset, index.tree.offset + index.tree.length));
  const table = Buffer.from(index.tree.pages, 'base64');
  const pages = pageStarts(index.tree.pages).map((at, k) => {
    const len = table.readUInt32LE(k * 36);
    const bytes = stored.subarray(at, at + len);
    const size = Math.min(PAGE_SIZE, index.tree.size - k * PAGE_SIZE);
    return len === size ? bytes : inflateRawSync(bytes);
  });
  return { data, imageStart: Number(footer.readBigUInt64LE(16)), index, treeAt: index.tree.offset, tree: Buffer.concat(pages), stored };
}

/** Reassembles a bundle from (edited) parts; the pages and the index hash are redone. */
function assemble(name: string, p: Parts, opts: { rehash?: boolean; footerVersion?: number } = {}): string {
  const file = path.join(base, name);
  const offset = p.treeAt;
  let stored = p.stored;
  if (opts.rehash !== false) {
    const paged = storePages(p.tree);
    stored = paged.bytes;
    Object.assign(p.index.tree, { pages: paged.pages, length: stored.length, size: p.tree.length });
  }
  const bytes = Buffer.from(JSON.stringify(p.index));
  fs.writeFileSync(
    file,
    Buffer.concat([
      p.data.subarray(0, offset),
      stored,
      bytes,
      encodeFooter({ version: opts.footerVersion ?? IMAGE_VERSION, imageStart: p.imageStart, indexOffset: offset + stored.length, indexLength: bytes.length, indexHash: sha256(bytes) }),
    ]),
  );
  return file;
}

/** A copy of the good image whose JSON index is edited, re-signed. */
function tamperedIndex(name: string, edit: (index: ImageIndex) => void): string {
  const p = parts();
  edit(p.index);
  return assemble(name, p, { rehash: false });
}

/** A copy of an image with the tree re-encoded from edited entries. */
function tamperedEntries(name: string, edit: (entries: TreeEntry[]) => void, from = good): string {
  const p = parts(from);
  const { fd, tree } = readImage(from);
  const entries = [...tree.walk()];
  fs.closeSync(fd);
  edit(entries);
  const t = encodeTree(entries);
  p.stored = t.bytes;
  p.index.tree = { offset: p.index.tree.offset, ...t.location };
  return assemble(name, p, { rehash: false });
}

/** A copy of an image with the piece ref of record `i`'s piece `k` edited (pages re-hashed). */
function tamperedRef(name: string, i: number, k: number, edit: (ref: Buffer) => void, from = good): string {
  const p = parts(from);
  const first = p.tree.readUInt32LE(i * RECORD_SIZE + 40);
  const at = p.index.tree.pieceTable[0] + (first + k) * PIECE_REF_SIZE;
  edit(p.tree.subarray(at, at + PIECE_REF_SIZE));
  return assemble(name, p);
}

/** A copy of the good image with raw bytes of record `i` edited (pages re-hashed). */
function tamperedRecord(name: string, i: number, edit: (record: Buffer) => void): string {
  const p = parts();
  edit(p.tree.subarray(i * RECORD_SIZE, (i + 1) * RECORD_SIZE));
  return assemble(name, p);
}

function rejects(file: string, why: RegExp): void {
  assert.throws(() => readImage(file), (err: unknown) => err instanceof ImageError && why.test(err.message));
}

/** The image opens (only its root is checked up front), but reading the tree fails, clearly. */
async function rejectsWhenRead(file: string, why: RegExp): Promise<void> {
  const { fd, tree } = readImage(file);
  try {
    assert.throws(() => [...tree.walk()], (err: unknown) => err instanceof TreeError && why.test(err.message), `walk of ${file}`);
    // Through the layer, the app gets EIO and the damage is reported with the path.
    const reported: string[] = [];
    const layer = new ImageLayer(file, fd, tree, (p) => reported.push(p));
    const probe = async () => {
      for (const dir of ['/', '/dir']) {
        await layer.readdir(dir);
        for (const e of await layer.readdir(dir)) {
          const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
          await layer.lstat(p);
          if (e.type === 'file') await layer.open(p);
          if (e.type === 'symlink') await layer.readlink(p);
        }
      }
    };
    await assert.rejects(probe(), (err: unknown) => err instanceof FsError && err.code === 'EIO' && why.test(err.message));
    assert.ok(reported.length > 0, 'the damaged path is reported');
  } finally {
    fs.closeSync(fd);
  }
}

describe('image reader', () => {
  before(async () => {
    fs.mkdirSync(path.join(app, 'dir'), { recursive: true });
    fs.writeFileSync(path.join(app, 'a.txt'), 'alpha');
    fs.writeFileSync(path.join(app, 'dir', 'b.txt'), 'bravo');
    fs.writeFileSync(path.join(app, 'dir', 'same.txt'), 'alpha');
    fs.symlinkSync('../a.txt', path.join(app, 'dir', 'link'));
    fs.writeFileSync(good, Buffer.alloc(1000, 0x7f)); // stands in for the executable
    const stats = await appendImage(good, { appDir: app, manifest: { name: 't' }, addons: [] });
    assert.equal(stats.files, 3);
    assert.equal(stats.dedupSaved, 5, 'identical content stored once');
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('reads a good image lazily, as a Layer', async () => {
    const { tree, fd } = readImage(good);
    const layer = new ImageLayer(good, fd, tree);
    assert.deepEqual((await layer.readdir('/dir')).map((e) => e.name).sort(), ['b.txt', 'link', 'same.txt']);
    assert.equal(await layer.readlink('/dir/link'), '../a.txt');
    const f = await layer.open('/dir/b.txt');
    const buf = Buffer.alloc(10);
    assert.equal(await f.read(buf, 0, 10, 1), 4);
    assert.equal(buf.subarray(0, 4).toString(), 'ravo');
    assert.equal((await layer.lstat('/a.txt'))!.size, 5);
    assert.equal(await layer.lstat('/missing'), null);
    fs.closeSync(fd);
  });

  it('serves no byte of a file whose data was altered, and names it', async () => {
    const data = fs.readFileSync(good);
    const at = data.indexOf('bravo');
    data[at] = 'X'.charCodeAt(0);
    const bad = path.join(base, 'flipped.img');
    fs.writeFileSync(bad, data);
    const { tree, fd } = readImage(bad); // the index is intact
    const reported: string[] = [];
    const layer = new ImageLayer(bad, fd, tree, (p) => reported.push(p));
    await assert.rejects(layer.open('/dir/b.txt'), /EIO/);
    await assert.rejects(layer.open('/dir/b.txt'), /EIO/);
    assert.deepEqual(reported, ['/dir/b.txt', '/dir/b.txt']);
    await layer.open('/a.txt'); // other files are fine
    // Copy-up hashes as it copies: the damaged file leaves no copy behind.
    const dest = path.join(base, 'copied');
    await assert.rejects(new ImageLayer(bad, fd, tree).copyFileTo('/dir/b.txt', dest), /EIO/);
    assert.equal(fs.existsSync(dest), false, 'no half-checked copy is left');
    await new ImageLayer(bad, fd, tree).copyFileTo('/a.txt', dest);
    assert.equal(fs.readFileSync(dest, 'utf8'), 'alpha');
    fs.closeSync(fd);
  });

  const f64 = (at: number, v: number) => (r: Buffer) => r.writeDoubleLE(v, at);
  const u32at = (at: number, v: number) => (r: Buffer) => r.writeUInt32LE(v, at);
  // Records, breadth first: 0 '/', 1 'a.txt', 2 'dir', 3 'dir/b.txt', 4 'dir/link', 5 'dir/same.txt'.
  const lazyCases: Array<[string, () => string, RegExp]> = [
    ['a name ..', () => tamperedEntries('dotdot.img', (es) => (es.find((e) => e.path === '/a.txt')!.path = '/..')), /bad name/],
    ['a name .', () => tamperedEntries('dot.img', (es) => (es.find((e) => e.path === '/a.txt')!.path = '/.')), /bad name/],
    ['a name with a slash', () => { const p = parts(); const link = p.tree.subarray(4 * RECORD_SIZE); p.tree.writeUInt32LE(link.readUInt32LE(40), RECORD_SIZE + 32); p.tree.writeUInt32LE(link.readUInt32LE(44), RECORD_SIZE + 36); return assemble('slash.img', p); }, /bad name "\.\.\/a\.txt"/],
    ['a name prefix that disagrees with the name', () => tamperedRecord('prefix.img', 1, (r) => r.writeUInt8(0x7a, 56)), /name prefix does not match/],
    ['a repeated name', () => tamperedEntries('dup.img', (es) => es.push({ ...es.find((e) => e.path === '/a.txt')! })), /out of order or repeated/],
    ['a child claimed by two directories', () => tamperedRecord('shared-child.img', 2, (r) => { r.writeUInt32LE(1, 40); r.writeUInt32LE(1, 44); }), /children lie outside/],
    ['a wrong parent', () => tamperedRecord('parent.img', 3, u32at(12, 1)), /its parent is 1/],
    ['a parent after the child', () => tamperedRecord('parent-after.img', 2, u32at(12, 4)), /parent does not come before it/],
    ['children outside the tree', () => tamperedRecord('children.img', 2, u32at(44, 1000)), /children lie outside/],
    ['pieces outside the index', () => tamperedRecord('refs.img', 1, u32at(40, 1000)), /its pieces lie outside the index/],
    ['a size past its pieces', () => tamperedRecord('size.img', 1, f64(24, 1e12)), /its pieces lie outside the index/],
    ['data before the image', () => tamperedRef('offset.img', 1, 0, f64(0, 10)), /data lies outside the image/],
    ['data past the image', () => tamperedRef('past.img', 1, 0, u32at(8, 1e9)), /data lies outside the image|bad stored length/],
    ['a piece past its frame', () => tamperedRef('frame.img', 1, 0, u32at(16, 1e6)), /it lies outside its frame/],
    ['a frame bigger than a piece', () => tamperedRef('frame-big.img', 1, 0, u32at(12, PIECE_SIZE + 1)), /it lies outside its frame/],
    ['an unknown codec', () => tamperedRef('codec.img', 1, 0, (r) => r.writeUInt8(9, 20)), /unknown codec 9/],
    ['a negative size', () => tamperedRecord('negative.img', 1, f64(24, -1)), /bad size/],
    ['an unknown type', () => tamperedRecord('type.img', 1, (r) => r.writeUInt8(9, 0)), /unknown type 9/],
    ['a symlink without target', () => tamperedRecord('no-target.img', 4, u32at(44, 0)), /bad symlink target/],
  ];
  for (const [name, make, why] of lazyCases) {
    it(`rejects a tree with ${name} when it is read`, () => rejectsWhenRead(make(), why));
  }

  const cases: Array<[string, (i: ImageIndex) => void, RegExp]> = [
    ['tree-outside', (i) => (i.tree.offset -= 1), /tree lies outside the image/],
    ['tree-short', (i) => (i.tree.length -= 1), /tree lies outside the image|sections do not add up/],
    ['no-tree', (i) => delete (i as { tree?: unknown }).tree, /tree location missing/],
    ['sections', (i) => (i.tree.strings[1] += 1), /sections do not add up/],
    ['page-table', (i) => (i.tree.pages = ''), /page table does not cover/],
    ['page-lengths', (i) => { const t = Buffer.from(i.tree.pages, 'base64'); t.writeUInt32LE(t.readUInt32LE(0) + 1, 0); i.tree.pages = t.toString('base64'); }, /does not add up/],
    ['addon-name', (i) => i.addons.push({ name: '../../evil.so', hash: 'a'.repeat(64), offset: 4096, size: 1 }), /bad name/],
    ['addon-outside', (i) => i.addons.push({ name: 'x.node', hash: 'a'.repeat(64), offset: 1, size: 1 }), /outside the image/],
  ];
  for (const [name, edit, why] of cases) {
    it(`rejects an index with ${name} before mounting`, () => rejects(tamperedIndex(`${name}.img`, edit), why));
  }

  it('checks the root page before mounting, and every other page when it is first read', async () => {
    const p = parts();
    p.stored[3]! ^= 1;
    rejects(assemble('page0.img', p, { rehash: false }), /page 0 does not match its hash/);
    // A tree of several pages: 3,000 records.
    const bigApp = path.join(base, 'big-app');
    fs.mkdirSync(path.join(bigApp, 'many'), { recursive: true });
    for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(bigApp, 'many', `f${String(i).padStart(4, '0')}`), `file ${i}`);
    const big = path.join(base, 'big.img');
    fs.writeFileSync(big, Buffer.alloc(100));
    await appendImage(big, { appDir: bigApp, manifest: {}, addons: [] });
    const ok = readImage(big);
    assert.equal(ok.tree.files, 3000);
    const layer = new ImageLayer(big, ok.fd, ok.tree);
    assert.equal((await layer.readdir('/many')).length, 3000);
    const f = await layer.open('/many/f2999');
    const buf = Buffer.alloc(20);
    assert.equal(buf.subarray(0, await f.read(buf, 0, 20, 0)).toString(), 'file 2999');
    fs.closeSync(ok.fd);
    const data = fs.readFileSync(big);
    const index = readImage(big);
    fs.closeSync(index.fd);
    const page = Math.floor((2990 * RECORD_SIZE) / PAGE_SIZE); // holds the last files' records
    data[index.index.tree.offset + pageStarts(index.index.tree.pages)[page]! + 10]! ^= 1;
    fs.writeFileSync(big, data);
    const damaged = readImage(big); // only the root page is read up front
    const reported: string[] = [];
    const dl = new ImageLayer(big, damaged.fd, damaged.tree, (p) => reported.push(p));
    assert.ok(await dl.lstat('/many/f0000'), 'entries on good pages still serve');
    await assert.rejects(dl.readdir('/many'), (err: unknown) => err instanceof FsError && err.code === 'EIO' && new RegExp(`page ${page} does not match its hash`).test(err.message));
    assert.deepEqual(reported, ['/many']);
    fs.closeSync(damaged.fd);
  });

  it('rejects a well-hashed page that does not inflate to its size', () => {
    const p = parts();
    const garbage = Buffer.from('not deflate data at all, but hashed as if it were');
    const table = Buffer.alloc(36);
    table.writeUInt32LE(garbage.length, 0);
    sha256(garbage).copy(table, 4);
    p.stored = garbage;
    Object.assign(p.index.tree, { pages: table.toString('base64'), length: garbage.length });
    rejects(assemble('inflate.img', p, { rehash: false }), /page 0 does not inflate|inflates to/);
  });

  it('checks a big file piece by piece: good pieces serve, a damaged one is EIO naming its bytes', async () => {
    const src = path.join(base, 'chunky');
    fs.mkdirSync(src);
    const big = Buffer.alloc(3 * PIECE_SIZE + 100, 0x41);
    fs.writeFileSync(path.join(src, 'big'), big);
    const file = path.join(base, 'chunky.img');
    fs.writeFileSync(file, Buffer.alloc(100));
    // Stored raw, so that the test can find the third piece's bytes in the bundle.
    await appendImage(file, { appDir: src, manifest: {}, addons: [], compression: { codec: 'none' } });
    const data = fs.readFileSync(file);
    const pos = data.indexOf(big.subarray(0, 1000));
    data[pos + 2 * PIECE_SIZE + 7] = 0x42; // inside the third piece
    fs.writeFileSync(file, data);
    const { fd, tree } = readImage(file);
    try {
      const reported: string[] = [];
      const layer = new ImageLayer(file, fd, tree, (p) => reported.push(p));
      const f = await layer.open('/big'); // no whole-file pass before the first read
      const buf = Buffer.alloc(4096);
      assert.equal(await f.read(buf, 0, 4096, PIECE_SIZE - 100), 4096, 'pieces 0 and 1 are good');
      assert.equal(buf.toString('latin1'), 'A'.repeat(4096));
      await assert.rejects(f.read(buf, 0, 10, 2 * PIECE_SIZE + 1), (err: unknown) => err instanceof FsError && err.code === 'EIO' && new RegExp(`bytes ${2 * PIECE_SIZE}-${3 * PIECE_SIZE - 1} do not match`).test(err.message));
      await assert.rejects(f.prepare!(3 * PIECE_SIZE - 1, 2), /EIO/, 'a range touching the bad piece is refused before any byte is spliced');
      assert.equal(await f.read(buf, 0, 100, 3 * PIECE_SIZE), 100, 'the last, short piece is good');
      assert.deepEqual(reported, ['/big', '/big']);
      await assert.rejects(layer.copyFileTo('/big', path.join(base, 'chunky-copy')), /EIO/);
      assert.equal(fs.existsSync(path.join(base, 'chunky-copy')), false);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('copies a big file up, raw or compressed, and leaves nothing behind when it cannot', async () => {
    const src = path.join(base, 'copyup');
    fs.mkdirSync(src);
    // Text: stored raw it is copied by the kernel, compressed it is decoded piece by piece.
    const content = Buffer.from(Array.from({ length: 400000 }, (_, i) => `line ${i}\n`).join('')).subarray(0, 3 * PIECE_SIZE + 12345);
    assert.equal(content.length, 3 * PIECE_SIZE + 12345);
    fs.writeFileSync(path.join(src, 'big'), content);
    const small = path.join(base, 'copyup-full');
    fs.mkdirSync(small);
    try {
      for (const compression of [{ codec: 'none' }, { codec: 'zstd', level: 3 }] as const) {
        const how = compression.codec;
        const file = path.join(base, `copyup-${how}.img`);
        fs.writeFileSync(file, Buffer.alloc(100));
        await appendImage(file, { appDir: src, manifest: {}, addons: [], compression });
        const { fd, tree } = readImage(file);
        const codecs = new Set([...tree.walk()].find((e) => e.path === '/big')!.pieces!.map((r) => r.codec));
        assert.deepEqual([...codecs], [how === 'none' ? CODEC_IDS.raw : CODEC_IDS.zstd]);
        try {
          // Unchecked, then again after the first copy marked the pieces checked.
          const layer = new ImageLayer(file, fd, tree);
          for (const pass of ['first', 'second']) {
            const dest = path.join(base, `copyup-${how}-${pass}`);
            await layer.copyFileTo('/big', dest);
            assert.ok(fs.readFileSync(dest).equals(content), `${how}, ${pass} copy: byte for byte`);
          }
          // A bundle cut short inside the file's data (the tree read before it was cut).
          const cut = path.join(base, `copyup-cut-${how}.img`);
          const ref = [...tree.walk()].find((e) => e.path === '/big')!.pieces![2]!;
          fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, ref.position + 10));
          const cutFd = fs.openSync(cut, 'r');
          try {
            const dest = path.join(base, 'copyup-from-cut');
            await assert.rejects(new ImageLayer(cut, cutFd, tree).copyFileTo('/big', dest), (err: unknown) => err instanceof FsError && err.code === 'EIO' && /ends before this file does/.test(err.message));
            assert.equal(fs.existsSync(dest), false, 'no partial copy is left');
          } finally {
            fs.closeSync(cutFd);
          }
          // A full disk is ENOSPC for the app, and the partial copy is removed.
          if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]).status !== 0) throw new Error('cannot mount a tmpfs (the tests run as root)');
          const dest = path.join(small, 'big');
          await assert.rejects(new ImageLayer(file, fd, tree).copyFileTo('/big', dest), (err: unknown) => (err as { code?: string }).code === 'ENOSPC');
          assert.equal(fs.existsSync(dest), false, 'no partial copy is left on the full disk');
        } finally {
          spawnSync('umount', [small], { stdio: 'ignore' });
          fs.closeSync(fd);
        }
      }
    } finally {
      spawnSync('umount', [small], { stdio: 'ignore' });
    }
  });

  it('overpack verify checks the piece hashes of big files, not only their whole hash', async () => {
    const src = path.join(base, 'pieces');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'big'), Buffer.alloc(2 * PIECE_SIZE + 5, 7));
    const file = path.join(base, 'pieces.img');
    fs.writeFileSync(file, Buffer.alloc(100));
    await appendImage(file, { appDir: src, manifest: { name: 'p', version: '1', entrypoint: 'big' }, addons: [] });
    assert.equal(spawnSync(process.execPath, [CLI, 'verify', file], { encoding: 'utf8' }).status, 0, 'the untouched image verifies');
    // Piece 1's hash flipped, the data untouched.
    const forged = tamperedEntries('pieces-forged.img', (es) => void (es.find((e) => e.path === '/big')!.pieceHashes![40]! ^= 1), file);
    const r = spawnSync(process.execPath, [CLI, 'verify', forged], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /1 of 1 items are corrupt:\n\s+\/big/);
  });

  it('refuses to serve a big file whose piece hashes are missing from the tree', async () => {
    const src = path.join(base, 'chunkless');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'big'), Buffer.alloc(PIECE_SIZE + 1, 1));
    const file = path.join(base, 'chunkless.img');
    fs.writeFileSync(file, Buffer.alloc(100));
    await appendImage(file, { appDir: src, manifest: {}, addons: [] });
    // The piece map cut out of the tree (the sections moved so that they still add up).
    const p = parts(file);
    const [mo, ml] = p.index.tree.pieceMap;
    p.tree = Buffer.concat([p.tree.subarray(0, mo), p.tree.subarray(mo + ml)]);
    p.index.tree.pieceMap = [mo, 0];
    p.index.tree.pieceHashes = [mo, p.index.tree.pieceHashes[1]];
    p.index.tree.pieceTable = [mo + p.index.tree.pieceHashes[1], p.index.tree.pieceTable[1]];
    const out = assemble('chunkless-cut.img', p);
    const opened = readImage(out);
    try {
      const f = await new ImageLayer(out, opened.fd, opened.tree).open('/big');
      await assert.rejects(f.read(Buffer.alloc(10), 0, 10, 0), (err: unknown) => err instanceof FsError && err.code === 'EIO' && /without piece hashes/.test(err.message));
    } finally {
      fs.closeSync(opened.fd);
    }
  });

  it('rejects a tree whose root is not a directory before mounting', () => {
    rejects(tamperedRecord('root.img', 0, (r) => r.writeUInt8(1, 0)), /first entry must be the root|its pieces lie outside/);
  });

  it('rejects an unknown format version, truncation, a bad footer and a wrong index hash', () => {
    rejects(assemble('v1.img', parts(), { footerVersion: 1 }), /format version 1 \(an overpack 0\.1 image .*\) is not read by this overpack \(it reads version 3\); rebuild/);
    rejects(assemble('v2.img', parts(), { footerVersion: 2 }), /format version 2 \(an uncompressed image .*it still runs with the runtime inside it\)/);
    rejects(assemble('v9.img', parts(), { footerVersion: 9 }), /format version 9 is not read by this overpack/);
    const data = fs.readFileSync(good);
    const cut = path.join(base, 'cut.img');
    fs.writeFileSync(cut, data.subarray(0, data.length - 10));
    rejects(cut, /no overpack image found|truncated/);
    const tiny = path.join(base, 'tiny.img');
    fs.writeFileSync(tiny, 'x');
    rejects(tiny, /too small/);
    const wrong = Buffer.from(data);
    wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 1; // last byte of the stored hash
    const wf = path.join(base, 'wrong-hash.img');
    fs.writeFileSync(wf, wrong);
    rejects(wf, /does not match its hash/);
  });
});

describe('builder input', () => {
  const dir = tempDir('builder-input');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('stores odd names and outside links, skips special files with a warning, refuses non-UTF-8 names', async () => {
    const src = path.join(dir, 'app');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'two\nlines'), 'n');
    fs.writeFileSync(path.join(src, 'ünïcödé'), 'u');
    fs.symlinkSync('/etc/passwd', path.join(src, 'outside'));
    spawnSync('mkfifo', [path.join(src, 'fifo')]);
    const out = path.join(dir, 'a.img');
    fs.writeFileSync(out, '');
    const warnings: string[] = [];
    await appendImage(out, { appDir: src, manifest: {}, addons: [], onWarning: (w) => warnings.push(w) });
    assert.ok(warnings.some((w) => /\/fifo: skipped/.test(w)));
    assert.ok(warnings.some((w) => /\/outside: symlink points outside the app/.test(w)));
    const { tree, fd } = readImage(out);
    const paths = [...tree.walk()].map((e) => e.path);
    fs.closeSync(fd);
    assert.deepEqual(paths.sort(), ['/', '/outside', '/two\nlines', '/ünïcödé']);
    fs.writeFileSync(Buffer.concat([Buffer.from(src + '/'), Buffer.from([0x66, 0xff, 0x67])]), 'bad');
    await assert.rejects(appendImage(out, { appDir: src, manifest: {}, addons: [] }), /not valid UTF-8 \(bytes 66ff67\)/);
  });
});

describe('image reads through a mount', () => {
  const dir = tempDir('image-mount');
  after(() => {
    forceUnmount(path.join(dir, 'mnt'));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a file inside the bundle reads exactly: whole, at odd offsets, short at its end, never its neighbour', async () => {
    const src = path.join(dir, 'app');
    fs.mkdirSync(src);
    // Neighbours in the data region: "big" is followed by "next", whose bytes must never show.
    const big = Buffer.alloc(3 * 1048576 + 12345);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    fs.writeFileSync(path.join(src, 'big'), big);
    fs.writeFileSync(path.join(src, 'next'), Buffer.alloc(300000, 0xee));
    fs.writeFileSync(path.join(src, 'tiny'), 'abc');
    const img = path.join(dir, 'app.img');
    fs.writeFileSync(img, Buffer.alloc(100));
    await appendImage(img, { appDir: src, manifest: {}, addons: [] });
    const { OverlayFS } = await import('../runtime/index.js');
    const opened = readImage(img);
    const mp = path.join(dir, 'mnt');
    fs.mkdirSync(mp);
    const overlay = new OverlayFS(new ImageLayer(img, opened.fd, opened.tree)).setUpper(path.join(dir, 'upper')).setMountpoint(mp);
    await overlay.mount();
    try {
      // Driven from a child (this process serves the mount); offsets relative to each file.
      const script = `
        const fs = require('fs'), crypto = require('crypto');
        const h = (b) => crypto.createHash('sha256').update(b).digest('hex');
        const fd = fs.openSync(process.argv[1] + '/big', 'r');
        const out = { whole: h(fs.readFileSync(process.argv[1] + '/big')), tiny: fs.readFileSync(process.argv[1] + '/tiny', 'utf8') };
        for (const [pos, len] of [[1, 200000], [131071, 131075], [${big.length - 10}, 65536], [${big.length}, 4096], [${big.length + 5000}, 10]]) {
          const b = Buffer.alloc(len);
          const n = fs.readSync(fd, b, 0, len, pos);
          out[pos + ':' + len] = [n, h(b.subarray(0, n))];
        }
        process.stdout.write(JSON.stringify(out));`;
      // mmap shows the whole last page: past the file's end it must be zeros, not the bytes
      // of the next file in the bundle (read(2) alone would not tell: the kernel cuts at EOF).
      const tail = path.join(dir, 'tail');
      fs.writeFileSync(`${tail}.c`, [
        '#include <fcntl.h>', '#include <stdio.h>', '#include <sys/mman.h>', '#include <sys/stat.h>',
        'int main(int c, char **v) { int fd = open(v[1], O_RDONLY); struct stat st; fstat(fd, &st);',
        '  long page = 4096, start = st.st_size / page * page; unsigned char *m = mmap(0, page, PROT_READ, MAP_SHARED, fd, start);',
        '  if (m == MAP_FAILED) return 2; long nonzero = 0; for (long i = st.st_size - start; i < page; i++) nonzero += m[i] != 0;',
        '  printf("%ld", nonzero); return 0; }',
      ].join('\n'));
      assert.equal(spawnSync('cc', ['-o', tail, `${tail}.c`]).status, 0, 'cc builds the mmap probe');
      const out = await new Promise<string>((resolve, reject) => {
        const p = spawn(process.execPath, ['-e', script, mp]);
        let o = '';
        let e = '';
        p.stdout.on('data', (d) => (o += d));
        p.stderr.on('data', (d) => (e += d));
        p.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(e))));
      });
      const mapped = await new Promise<string>((resolve, reject) => {
        const p = spawn(tail, [path.join(mp, 'big')]);
        let o = '';
        p.stdout.on('data', (d) => (o += d));
        p.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`mmap probe exited ${code}`))));
      });
      assert.equal(mapped, '0', 'bytes past the end of the file, seen through mmap');
      const got = JSON.parse(out) as Record<string, unknown>;
      const h = (b: Buffer) => sha256(b).toString('hex');
      assert.equal(got.whole, h(big));
      assert.equal(got.tiny, 'abc');
      for (const [pos, len] of [[1, 200000], [131071, 131075], [big.length - 10, 65536], [big.length, 4096], [big.length + 5000, 10]] as const) {
        const want = big.subarray(Math.min(pos, big.length), Math.min(pos + len, big.length));
        assert.deepEqual(got[`${pos}:${len}`], [want.length, h(want)], `read of ${len} at ${pos}`);
      }
    } finally {
      await overlay.umount();
      fs.closeSync(opened.fd);
    }
  });
});
