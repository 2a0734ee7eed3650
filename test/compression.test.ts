/**
 * Compressed images (codec.ts, writer-frames.ts, content.ts) against uncompressed ones and the
 * source directory: the same bytes through a real mount, for small packed files, big pieced
 * files and a sparse file past 4 GiB; damage inside a compressed frame is EIO naming the
 * file, never wrong bytes; sparse files stay sparse in the image, through the mount and in
 * the upper after a copy-up.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { appendImage } from '../runtime/image/writer.js';
import { readImage } from '../runtime/image/format.js';
import { ImageLayer } from '../runtime/image/image-layer.js';
import { CODEC_IDS, parseCompression, type Compression } from '../runtime/image/codec.js';
import { PIECE_REF_SIZE, PIECE_SIZE, RECORD_SIZE } from '../runtime/image/tree-layout.js';
import { storePages } from '../runtime/image/tree-encode.js';
import { packKind } from '../runtime/image/writer-frames.js';
import { FsError } from '../runtime/vfs/index.js';
import { CLI, forceUnmount, tempDir } from './helpers.js';

const base = tempDir('compression');
const GiB = 1024 * 1024 * 1024;
const SPARSE_SIZE = 5 * GiB + 777;
/** Where the sparse file holds data: [offset, length]. */
const SPARSE_DATA: Array<[number, number]> = [[0, 100], [4 * GiB + 12345, 2 * PIECE_SIZE], [SPARSE_SIZE - 50, 50]];

/** Text that compresses like source code, different in every file. */
function sourceLike(seed: number, size: number): Buffer {
  const words = ['const', 'function', 'return', 'module', 'exports', 'require', 'if', 'else', 'value', 'options'];
  let out = '';
  for (let i = 0; out.length < size; i++) out += `${words[(seed * 7 + i * 13) % words.length]}_${(seed * 31 + i) % 97} `;
  return Buffer.from(out.slice(0, size));
}

function makeApp(dir: string): void {
  fs.mkdirSync(path.join(dir, 'lib'), { recursive: true });
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(dir, 'lib', `m${i}.js`), sourceLike(i, 200 + ((i * 977) % 9000)));
  fs.writeFileSync(path.join(dir, 'lib', 'copy.js'), sourceLike(5, 200 + ((5 * 977) % 9000))); // a duplicate
  fs.writeFileSync(path.join(dir, 'empty'), '');
  fs.writeFileSync(path.join(dir, 'medium.bin'), sourceLike(1000, 300000));
  const big = Buffer.alloc(3 * PIECE_SIZE + 4321);
  for (let i = 0; i + 4 <= big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i); // incompressible
  big.fill(0, PIECE_SIZE, 2 * PIECE_SIZE); // an all-zero piece, written (not a hole)
  fs.writeFileSync(path.join(dir, 'big.bin'), big);
  const fd = fs.openSync(path.join(dir, 'sparse.img'), 'w');
  fs.ftruncateSync(fd, SPARSE_SIZE);
  for (const [at, len] of SPARSE_DATA) fs.writeSync(fd, sourceLike(at % 1000, len), 0, len, at);
  fs.closeSync(fd);
}

async function buildImage(src: string, name: string, compression: Compression): Promise<string> {
  const img = path.join(base, name);
  fs.writeFileSync(img, Buffer.alloc(4096, 0x7f)); // stands in for the executable
  await appendImage(img, { appDir: src, manifest: { name: 'c', version: '1', entrypoint: 'empty' }, addons: [], compression });
  return img;
}

/** Runs `script` in a child Node (this process serves the mount) and returns its stdout. */
function child(script: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', script, ...args]);
    let o = '';
    let e = '';
    p.stdout.on('data', (d) => (o += d));
    p.stderr.on('data', (d) => (e += d));
    p.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(e))));
  });
}

/** What a reader sees in a tree of files: every small and big file's hash, odd-offset reads of the sparse one. */
const READER = `
  const fs = require('fs'), path = require('path'), crypto = require('crypto');
  const root = process.argv[1];
  const h = (b) => crypto.createHash('sha256').update(b).digest('hex');
  const out = {};
  const walk = (d) => { for (const n of fs.readdirSync(d).sort()) { const p = path.join(d, n); const st = fs.statSync(p);
    if (st.isDirectory()) walk(p); else if (n !== 'sparse.img') out[path.relative(root, p)] = h(fs.readFileSync(p)); } };
  walk(root);
  const fd = fs.openSync(path.join(root, 'sparse.img'), 'r');
  for (const [pos, len] of ${JSON.stringify([[0, 5000], [3 * GiB, 4096], [4 * GiB + 12340, 200000], [4 * GiB + 12345 + 2 * PIECE_SIZE - 7, 70000], [SPARSE_SIZE - 60, 4096], [SPARSE_SIZE + 10, 10]])}) {
    const b = Buffer.alloc(len);
    const n = fs.readSync(fd, b, 0, len, pos);
    out['sparse@' + pos] = [n, h(b.subarray(0, n))];
  }
  out.sparseSize = fs.fstatSync(fd).size;
  process.stdout.write(JSON.stringify(out));`;

describe('compressed images', () => {
  const src = path.join(base, 'app');
  makeApp(src);
  const mounts: string[] = [];
  after(() => {
    for (const mp of mounts) forceUnmount(mp);
    fs.rmSync(base, { recursive: true, force: true });
  });

  /** Mounts `img` with an upper of its own; returns the mountpoint and an unmount. */
  async function mount(img: string, tag: string): Promise<{ mp: string; upper: string; close: () => Promise<void> }> {
    const { OverlayFS } = await import('../runtime/index.js');
    const opened = readImage(img);
    const mp = path.join(base, `mnt-${tag}`);
    const upper = path.join(base, `upper-${tag}`);
    fs.mkdirSync(mp);
    mounts.push(mp);
    const overlay = new OverlayFS(new ImageLayer(img, opened.fd, opened.tree)).setUpper(upper).setMountpoint(mp);
    await overlay.mount();
    return { mp, upper, close: async () => { await overlay.umount(); fs.closeSync(opened.fd); } };
  }

  it('serve the same bytes as uncompressed images and the source: packed, pieced, zero and sparse files past 4 GiB', async () => {
    const want = await child(READER, src);
    for (const compression of [{ codec: 'none' }, { codec: 'zstd', level: 3 }, parseCompression('zstd')] as const) {
      const tag = compression.codec === 'none' ? 'none' : `zstd${compression.level}`;
      const img = await buildImage(src, `same-${tag}.img`, compression);
      const m = await mount(img, `same-${tag}`);
      try {
        assert.deepEqual(JSON.parse(await child(READER, m.mp)), JSON.parse(want), `${tag}: every file and every read as in the source`);
      } finally {
        await m.close();
      }
    }
  });

  it('store small files packed and compressed, incompressible data raw, holes and zero pieces not at all', async () => {
    const none = await buildImage(src, 'size-none.img', { codec: 'none' });
    const zstd = await buildImage(src, 'size-zstd.img', parseCompression('zstd'));
    const opened = readImage(zstd);
    try {
      const entries = [...opened.tree.walk()];
      const pieces = (p: string) => entries.find((e) => e.path === p)!.pieces!;
      const small = entries.filter((e) => e.path.startsWith('/lib/')).map((e) => e.pieces![0]!);
      assert.ok(small.every((r) => r.codec === CODEC_IDS.zstd), 'the small files are compressed');
      const frames = new Set(small.map((r) => r.position));
      assert.ok(frames.size > 1 && frames.size < small.length / 10, `packed several to a frame (${frames.size} frames for ${small.length} files)`);
      assert.deepEqual(pieces('/lib/copy.js'), pieces('/lib/m5.js'), 'a duplicate shares its content');
      assert.deepEqual(pieces('/big.bin').map((r) => r.codec), [CODEC_IDS.raw, CODEC_IDS.zero, CODEC_IDS.raw, CODEC_IDS.raw], 'incompressible pieces raw, the zero piece not stored');
      const sparse = pieces('/sparse.img');
      assert.equal(sparse.length, Math.ceil(SPARSE_SIZE / PIECE_SIZE));
      assert.equal(sparse.filter((r) => r.codec !== CODEC_IDS.zero).length, 5, 'only the pieces holding data are stored');
      assert.equal(opened.index.content?.compression, 'zstd:9');
      assert.ok(opened.index.content!.storedBytes < opened.index.content!.bytes / 10, 'the index says what the contents take stored');
    } finally {
      fs.closeSync(opened.fd);
    }
    const sizes = [none, zstd].map((f) => fs.statSync(f).size);
    assert.ok(sizes[0]! < 20 * PIECE_SIZE, `a 5 GiB sparse file does not make a 5 GiB image (${sizes[0]} bytes)`);
    assert.ok(sizes[1]! < sizes[0]! - 2 * 300000 * 0.5, `compression makes it smaller (${sizes[1]} vs ${sizes[0]})`);
    // Same directory, same bytes.
    const again = await buildImage(src, 'size-zstd-again.img', parseCompression('zstd'));
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(zstd)), 'reproducible');
  });

  it('packs the files a program runs apart from those that only come along, and serves both', async () => {
    for (const p of ['/node_modules/a/index.js', '/node_modules/a/package.json', '/node_modules/a/lib/x.cjs', '/node_modules/a/bin/cli', '/node_modules/a/addon.node', '/app.ts', '/data/notes.txt'])
      assert.equal(packKind(p), 'run', p);
    for (const p of ['/node_modules/a/README.md', '/node_modules/a/LICENSE', '/LICENSE.txt', '/node_modules/a/index.d.ts', '/node_modules/a/x.d.mts', '/node_modules/a/index.js.map', '/node_modules/a/src/x.ts', '/node_modules/a/yarn.lock', '/docs/guide.md'])
      assert.equal(packKind(p), 'aside', p);
    const app = path.join(base, 'kinds');
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 60; i++) {
      const dir = `node_modules/p${i}`;
      files.set(`${dir}/index.js`, sourceLike(i, 3000 + i * 37));
      files.set(`${dir}/package.json`, Buffer.from(JSON.stringify({ name: `p${i}`, main: 'index.js' })));
      files.set(`${dir}/README.md`, sourceLike(i + 500, 4000));
      files.set(`${dir}/index.d.ts`, sourceLike(i + 900, 2500));
    }
    for (const [rel, bytes] of files) {
      fs.mkdirSync(path.dirname(path.join(app, rel)), { recursive: true });
      fs.writeFileSync(path.join(app, rel), bytes);
    }
    const img = await buildImage(app, 'kinds.img', parseCompression('zstd'));
    const opened = readImage(img);
    try {
      const frameOf = new Map([...opened.tree.walk()].filter((e) => e.type === 'file').map((e) => [e.path, e.pieces![0]!.position]));
      const framesOf = (kind: string) => new Set([...files.keys()].filter((r) => packKind(`/${r}`) === kind).map((r) => frameOf.get(`/${r}`)!));
      const [run, aside] = [framesOf('run'), framesOf('aside')];
      assert.ok(run.size > 1 && aside.size > 1, `both kinds fill several packs (${run.size}, ${aside.size})`);
      assert.deepEqual([...run].filter((f) => aside.has(f)), [], 'no frame holds both kinds');
      const layer = new ImageLayer(img, opened.fd, opened.tree);
      for (const [rel, bytes] of files) {
        const f = await layer.open(`/${rel}`);
        const got = Buffer.alloc(bytes.length + 10);
        assert.equal(await f.read(got, 0, got.length, 0), bytes.length);
        assert.ok(got.subarray(0, bytes.length).equals(bytes), rel);
      }
    } finally {
      fs.closeSync(opened.fd);
    }
    const again = await buildImage(app, 'kinds-again.img', parseCompression('zstd'));
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(img)), 'reproducible');
  });

  it('a sparse file keeps its holes through the mount (SEEK_DATA/SEEK_HOLE, st_blocks) and after an append in the upper', async () => {
    const img = await buildImage(src, 'sparse.img', parseCompression('zstd'));
    const m = await mount(img, 'sparse');
    try {
      const probe = `
        const fs = require('fs');
        const p = process.argv[1] + '/sparse.img';
        const seek = (fd, at, whence) => { const r = require('child_process').spawnSync('python3', ['-c',
          'import os,sys\\nfd=os.open(sys.argv[1],os.O_RDONLY)\\ntry: print(os.lseek(fd,int(sys.argv[2]),int(sys.argv[3])))\\nexcept OSError as e: print("E"+str(e.errno))', p, String(at), String(whence)], { encoding: 'utf8' }); return r.stdout.trim(); };
        const out = { blocks: fs.statSync(p).blocks,
          dataAfterFirst: seek(0, ${PIECE_SIZE + 1}, 3), holeAfter0: seek(0, 0, 4), holeInData: seek(0, ${4 * GiB + 12345 + 10}, 4),
          dataAtEnd: seek(0, ${SPARSE_SIZE - 1}, 3), pastEnd: seek(0, ${SPARSE_SIZE}, 3) };
        const t = Date.now();
        fs.appendFileSync(p, 'appended!');
        out.appendMs = Date.now() - t;
        const fd = fs.openSync(p, 'r'); const b = Buffer.alloc(59); fs.readSync(fd, b, 0, 59, ${SPARSE_SIZE - 50});
        out.tail = b.toString('latin1').slice(-9); out.size = fs.fstatSync(fd).size;
        process.stdout.write(JSON.stringify(out));`;
      const got = JSON.parse(await child(probe, m.mp)) as Record<string, string | number>;
      const pieceOf = (at: number) => Math.floor(at / PIECE_SIZE) * PIECE_SIZE;
      assert.ok(Number(got.blocks) * 512 <= 5 * PIECE_SIZE, `st_blocks counts the stored pieces only (${got.blocks})`);
      assert.equal(got.dataAfterFirst, String(pieceOf(4 * GiB + 12345)), 'SEEK_DATA skips the hole');
      assert.equal(got.holeAfter0, String(PIECE_SIZE), 'SEEK_HOLE finds the hole after the first piece');
      assert.equal(got.holeInData, String(pieceOf(4 * GiB + 12345 + 2 * PIECE_SIZE) + PIECE_SIZE));
      assert.equal(got.dataAtEnd, String(SPARSE_SIZE - 1));
      assert.equal(got.pastEnd, 'E6', 'ENXIO past the end');
      assert.equal(got.tail, 'appended!');
      assert.equal(got.size, SPARSE_SIZE + 9);
      const copied = fs.statSync(path.join(m.upper, 'sparse.img'));
      assert.equal(copied.size, SPARSE_SIZE + 9);
      assert.ok(copied.blocks * 512 < 16 * PIECE_SIZE, `the copy-up in the upper is sparse (${copied.blocks * 512} bytes on disk)`);
    } finally {
      await m.close();
    }
  });

  it('a flipped byte inside a compressed frame is EIO naming the file, for every file of that frame, never wrong bytes', async () => {
    const img = await buildImage(src, 'flip.img', { codec: 'zstd', level: 3 });
    const { fd, tree } = readImage(img);
    const entries = [...tree.walk()];
    fs.closeSync(fd);
    const victim = entries.find((e) => e.path === '/lib/m100.js')!.pieces![0]!;
    const sameFrame = entries.filter((e) => e.pieces?.[0]?.position === victim.position).map((e) => e.path);
    const otherFrame = entries.find((e) => e.type === 'file' && e.pieces?.[0] && e.pieces[0].position !== victim.position && e.pieces[0].codec === CODEC_IDS.zstd)!.path;
    const medium = entries.find((e) => e.path === '/medium.bin')!.pieces![0]!;
    for (const [at, what] of [[victim.position + Math.floor(victim.storedLength / 2), 'packed'], [medium.position + 100, 'own']] as const) {
      const data = fs.readFileSync(img);
      data[at]! ^= 0x20;
      const bad = path.join(base, `flipped-${what}.img`);
      fs.writeFileSync(bad, data);
      const opened = readImage(bad);
      try {
        const reported: string[] = [];
        const layer = new ImageLayer(bad, opened.fd, opened.tree, (p) => reported.push(p));
        const damaged = what === 'packed' ? sameFrame : ['/medium.bin'];
        for (const p of damaged) {
          await assert.rejects(layer.open(p), (err: unknown) => err instanceof FsError && err.code === 'EIO' && err.path === p, `${p} (${what} frame)`);
          await assert.rejects(layer.copyFileTo(p, path.join(base, 'copy-of-damaged')), /EIO/);
          assert.equal(fs.existsSync(path.join(base, 'copy-of-damaged')), false);
        }
        assert.ok(damaged.every((p) => reported.includes(p)), 'each damaged file is reported');
        await layer.open(otherFrame); // other frames serve
        const r = spawnSync(process.execPath, [CLI, 'verify', bad], { encoding: 'utf8' });
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`${damaged.length} of \\d+ items are corrupt:\\n\\s+${damaged[0]!.replace(/[.]/g, '\\.')}`));
      } finally {
        fs.closeSync(opened.fd);
      }
    }
    assert.equal(spawnSync(process.execPath, [CLI, 'verify', img], { encoding: 'utf8' }).status, 0, 'the untouched image verifies');
  });

  it('refuses a frame that decodes to another size than its ref says', async () => {
    const img = await buildImage(src, 'size-lie.img', { codec: 'zstd', level: 3 });
    const data = fs.readFileSync(img);
    const opened = readImage(img);
    const index = opened.index;
    // The tree inflated, the medium file's ref made to claim one byte more, pages and index redone.
    const { inflateRawSync } = await import('node:zlib');
    const table = Buffer.from(index.tree.pages, 'base64');
    const stored = data.subarray(index.tree.offset, index.tree.offset + index.tree.length);
    const pages: Buffer[] = [];
    for (let k = 0, at = 0; k * 36 < table.length; k++) {
      const len = table.readUInt32LE(k * 36);
      const size = Math.min(16384, index.tree.size - k * 16384);
      pages.push(len === size ? stored.subarray(at, at + len) : inflateRawSync(stored.subarray(at, at + len)));
      at += len;
    }
    const tree = Buffer.concat(pages);
    const record = [...Array(index.tree.entries).keys()].find((i) => opened.tree.record(i).type === 'file' && opened.tree.name(opened.tree.record(i)) === 'medium.bin')!;
    const ref = index.tree.pieceTable[0] + tree.readUInt32LE(record * RECORD_SIZE + 40) * PIECE_REF_SIZE;
    fs.closeSync(opened.fd);
    assert.equal(tree.readUInt8(ref + 20), CODEC_IDS.zstd);
    tree.writeUInt32LE(tree.readUInt32LE(ref + 12) + 1, ref + 12);
    const paged = storePages(tree);
    const { encodeFooter, sha256, IMAGE_VERSION } = await import('../runtime/image/format.js');
    Object.assign(index.tree, { pages: paged.pages, length: paged.bytes.length });
    const indexBytes = Buffer.from(JSON.stringify(index));
    const out = path.join(base, 'size-lie-out.img');
    const imageStart = Number(data.readBigUInt64LE(data.length - 72 + 16));
    fs.writeFileSync(out, Buffer.concat([data.subarray(0, index.tree.offset), paged.bytes, indexBytes,
      encodeFooter({ version: IMAGE_VERSION, imageStart, indexOffset: index.tree.offset + paged.bytes.length, indexLength: indexBytes.length, indexHash: sha256(indexBytes) })]));
    const lied = readImage(out);
    try {
      const layer = new ImageLayer(out, lied.fd, lied.tree);
      await assert.rejects(layer.open('/medium.bin'), (err: unknown) => err instanceof FsError && err.code === 'EIO' && /does not say it holds 300001 bytes/.test(err.message));
    } finally {
      fs.closeSync(lied.fd);
    }
  });

  it('--compression takes none, zstd and zstd:LEVEL, and names what it accepts otherwise', () => {
    assert.deepEqual(parseCompression('none'), { codec: 'none' });
    assert.deepEqual(parseCompression('zstd:19'), { codec: 'zstd', level: 19 });
    for (const bad of ['zstd:0', 'zstd:20', 'zstd:x', 'gzip', 'none:3', 'zstd:3:4']) {
      assert.throws(() => parseCompression(bad), /unknown compression .*use none, zstd or zstd:LEVEL \(LEVEL 1-19; zstd alone is level 9\)/, bad);
    }
    const r = spawnSync(process.execPath, [CLI, 'build', src, '-o', path.join(base, 'x.run'), '--compression', 'lz4'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown compression "lz4"/);
    assert.equal(fs.existsSync(path.join(base, 'x.run')), false);
  });
});
