/**
 * The image reader against hostile and broken images: each is rejected with a clear message
 * before anything could be mounted. The index is re-signed after tampering, so only the
 * reader's own checks stand between the bytes and the user.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { appendImage } from '../runtime/image/writer.js';
import { encodeFooter, FOOTER_SIZE, readImage, sha256, ImageError, type ImageIndex } from '../runtime/image/format.js';
import { ImageLayer } from '../runtime/image/image-layer.js';
import { tempDir } from './helpers.js';

const base = tempDir('image');
const app = path.join(base, 'app');
const good = path.join(base, 'good.img');

/** Rewrites the index of a copy of the good image with `edit`, re-signing it. */
function tampered(name: string, edit: (index: ImageIndex) => void, footerVersion?: number): string {
  const file = path.join(base, name);
  const data = fs.readFileSync(good);
  const footer = data.subarray(data.length - FOOTER_SIZE);
  const imageStart = Number(footer.readBigUInt64LE(16));
  const indexOffset = Number(footer.readBigUInt64LE(24));
  const indexLength = Number(footer.readBigUInt64LE(32));
  const index = JSON.parse(data.subarray(indexOffset, indexOffset + indexLength).toString('utf8')) as ImageIndex;
  edit(index);
  const bytes = Buffer.from(JSON.stringify(index));
  const out = Buffer.concat([
    data.subarray(0, indexOffset),
    bytes,
    encodeFooter({ version: footerVersion ?? 1, imageStart, indexOffset, indexLength: bytes.length, indexHash: sha256(bytes) }),
  ]);
  fs.writeFileSync(file, out);
  return file;
}

function rejects(file: string, why: RegExp): void {
  assert.throws(() => readImage(file), (err: unknown) => err instanceof ImageError && why.test(err.message));
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
    const { index, fd } = readImage(good);
    const layer = new ImageLayer(good, fd, index);
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
    const { index, fd } = readImage(bad); // the index is intact
    const reported: string[] = [];
    const layer = new ImageLayer(bad, fd, index, (p) => reported.push(p));
    await assert.rejects(layer.open('/dir/b.txt'), /EIO/);
    await assert.rejects(layer.open('/dir/b.txt'), /EIO/);
    assert.deepEqual(reported, ['/dir/b.txt', '/dir/b.txt']);
    await layer.open('/a.txt'); // other files are fine
    fs.closeSync(fd);
  });

  const cases: Array<[string, (i: ImageIndex) => void, RegExp]> = [
    ['dotdot', (i) => (i.entries[1]!.path = '/../etc'), /bad path/],
    ['dot-inside', (i) => (i.entries[2]!.path = '/dir/../a.txt'), /bad path/],
    ['relative', (i) => (i.entries[1]!.path = 'a.txt'), /bad path/],
    ['trailing-slash', (i) => (i.entries[1]!.path = '/a.txt/'), /bad path/],
    ['duplicate', (i) => i.entries.push({ ...i.entries[1]! }), /duplicate path/],
    ['file-and-symlink', (i) => i.entries.push({ path: '/a.txt', type: 'symlink', target: 'x', mode: 0o777, uid: 0, gid: 0, mtimeMs: 0, size: 1 }), /duplicate path/],
    ['orphan', (i) => i.entries.push({ ...i.entries[1]!, path: '/nowhere/x' }), /parent is not a directory/],
    ['child-of-file', (i) => i.entries.push({ ...i.entries[1]!, path: '/a.txt/x' }), /parent is not a directory/],
    ['no-root', (i) => i.entries.shift(), /first entry must be the root/],
    ['offset-outside', (i) => (i.entries.find((e) => e.type === 'file')!.offset = 10), /outside the image/],
    ['size-outside', (i) => (i.entries.find((e) => e.type === 'file')!.size = 1e12), /outside the image/],
    ['negative-size', (i) => (i.entries.find((e) => e.type === 'file')!.size = -1), /bad size/],
    ['bad-hash', (i) => (i.entries.find((e) => e.type === 'file')!.hash = 'zz'), /bad hash/],
    ['bad-type', (i) => ((i.entries[1] as { type: string }).type = 'device'), /unknown type/],
    ['symlink-no-target', (i) => delete i.entries.find((e) => e.type === 'symlink')!.target, /symlink without target/],
    ['addon-name', (i) => i.addons.push({ name: '../../evil.so', hash: 'a'.repeat(64), offset: 4096, size: 1 }), /bad name/],
  ];
  for (const [name, edit, why] of cases) {
    it(`rejects an index with ${name}`, () => rejects(tampered(`${name}.img`, edit), why));
  }

  it('rejects an unknown format version, truncation, a bad footer and a wrong index hash', () => {
    rejects(tampered('v2.img', () => undefined, 2), /format version 2 is not supported/);
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
    const { index, fd } = readImage(out);
    fs.closeSync(fd);
    assert.deepEqual(index.entries.map((e) => e.path).sort(), ['/', '/outside', '/two\nlines', '/ünïcödé']);
    fs.writeFileSync(Buffer.concat([Buffer.from(src + '/'), Buffer.from([0x66, 0xff, 0x67])]), 'bad');
    await assert.rejects(appendImage(out, { appDir: src, manifest: {}, addons: [] }), /not valid UTF-8 \(bytes 66ff67\)/);
  });
});
