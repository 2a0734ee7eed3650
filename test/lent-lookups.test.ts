/**
 * Lookups the addon answers from directory listings lent to it (fuse3_entries.c,
 * fuse/fuse3-lending.ts): an image directory the upper has not touched is lent, and every
 * listing is taken back before a request that may change the tree. With the kernel's caches
 * off every path walk asks again, so a listing kept one change too long, or a lookup count
 * lost between the addon and JS, shows here as a difference from a plain copy that received
 * the same changes. The server is a separate process (driving a mount from the process that
 * serves it would deadlock).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { comparable, sh, snapshot, startMount, tempDir, treeDiff, type MountProcess } from './helpers.js';
import { appendImage } from '../runtime/image/writer.js';

const FIELDS = ['type', 'mode', 'size', 'hash', 'target'] as const;
/** Every scenario works in a subtree of its own, untouched (so lent) until it runs. */
const SUBTREES = 12;

/** What stat says of each path: the type and size, or the error code. */
function probe(root: string, rels: string[]): string[] {
  return rels.map((rel) => {
    try {
      const st = fs.lstatSync(path.join(root, rel));
      return `${rel}: ${st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : 'file'} ${st.mode.toString(8)} ${st.isDirectory() ? '' : st.size}`;
    } catch (err) {
      return `${rel}: ${(err as NodeJS.ErrnoException).code}`;
    }
  });
}

describe('lookups answered by the addon from lent listings', () => {
  const base = tempDir('lent');
  const lower = path.join(base, 'lower');
  const plain = path.join(base, 'plain');
  const image = path.join(base, 'app.img');
  const mnt = path.join(base, 'mnt');
  let m: MountProcess | undefined;

  before(async () => {
    for (let s = 0; s < SUBTREES; s++) {
      const d = path.join(lower, `s${s}`);
      fs.mkdirSync(path.join(d, 'lib/deep'), { recursive: true });
      for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(d, `lib/m${i}.js`), `module.exports = ${i};\n`.repeat(i + 1));
      fs.writeFileSync(path.join(d, 'lib/deep/x.json'), '{"x": 1}\n');
      fs.writeFileSync(path.join(d, 'package.json'), `{"name": "s${s}"}\n`);
      fs.symlinkSync('lib/m1.js', path.join(d, 'main.js'));
    }
    sh(`cp -a ${lower} ${plain}`);
    fs.writeFileSync(image, Buffer.alloc(100));
    await appendImage(image, { appDir: lower, manifest: {}, addons: [] });
    const env = { ...process.env, OVERPACK_FUSE_STATS: '1', OVERPACK_FUSE_BINDING: 'fuse3' };
    m = await startMount(image, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt, '--cache-timeout', '0'], env);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  // Names a scenario asks about before and after its change: listed ones, and some that are not.
  const names = (s: number) => [`s${s}`, `s${s}/lib`, `s${s}/lib/m0.js`, `s${s}/lib/m7.js`, `s${s}/lib/new.js`, `s${s}/lib/deep`, `s${s}/lib/deep/x.json`, `s${s}/gone`, `s${s}/main.js`, `s${s}/moved`, `s${s}/moved/m0.js`, `s${s}/package.json`, `s${s}/lib/nope`, `s${s}/lib/m0.js.cjs`];

  const scenarios: Array<[string, (root: string, s: number) => void]> = [
    ['a file created in a lent directory', (r, s) => fs.writeFileSync(path.join(r, `s${s}/lib/new.js`), 'new\n')],
    ['a lower file unlinked', (r, s) => fs.unlinkSync(path.join(r, `s${s}/lib/m0.js`))],
    ['a lower file made bigger', (r, s) => fs.appendFileSync(path.join(r, `s${s}/lib/m7.js`), 'more\n')],
    ['a lower file truncated', (r, s) => fs.truncateSync(path.join(r, `s${s}/lib/m7.js`), 3)],
    ['a lower file chmod', (r, s) => fs.chmodSync(path.join(r, `s${s}/lib/m0.js`), 0o600)],
    ['a lower directory renamed', (r, s) => fs.renameSync(path.join(r, `s${s}/lib`), path.join(r, `s${s}/moved`))],
    ['a lower file renamed over another', (r, s) => fs.renameSync(path.join(r, `s${s}/lib/m1.js`), path.join(r, `s${s}/lib/m0.js`))],
    ['a lower directory emptied and removed', (r, s) => fs.rmSync(path.join(r, `s${s}/lib/deep`), { recursive: true })],
    ['a directory made where a name was missing', (r, s) => fs.mkdirSync(path.join(r, `s${s}/gone`))],
    ['a symlink replaced by a file', (r, s) => (fs.unlinkSync(path.join(r, `s${s}/main.js`)), fs.writeFileSync(path.join(r, `s${s}/main.js`), 'x'))],
    ['a hard link made to a lower file', (r, s) => fs.linkSync(path.join(r, `s${s}/lib/m2.js`), path.join(r, `s${s}/lib/new.js`))],
  ];

  for (const [k, [what, change]] of scenarios.entries()) {
    it(`${what}: seen at once, as in a plain directory`, () => {
      // Walk everything first: untouched directories are lent, and misses are answered too.
      assert.deepEqual(treeDiff(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS])), [], 'before the change');
      assert.deepEqual(probe(mnt, names(k)), probe(plain, names(k)), 'asked before the change');
      change(plain, k);
      change(mnt, k);
      assert.deepEqual(probe(mnt, names(k)), probe(plain, names(k)), 'asked right after the change');
      assert.deepEqual(treeDiff(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS])), [], 'after the change');
    });
  }

  it('lookup counts survive the kernel forgetting nodes the addon answered for, before and after a change', () => {
    const s = SUBTREES - 1;
    for (let round = 0; round < 3; round++) {
      assert.deepEqual(probe(mnt, names(s)), probe(plain, names(s)));
      // Drops the kernel's dentries and inodes: it sends FORGET for every node it let go.
      fs.writeFileSync('/proc/sys/vm/drop_caches', '2');
      assert.deepEqual(probe(mnt, names(s)), probe(plain, names(s)));
      const f = `s${s}/lib/r${round}.js`;
      fs.writeFileSync(path.join(plain, f), 'r');
      fs.writeFileSync(path.join(mnt, f), 'r');
      fs.writeFileSync('/proc/sys/vm/drop_caches', '2');
      // Files read through nodes the kernel looked up again: a node JS had let go would fail here.
      for (const rel of [`s${s}/lib/m3.js`, `s${s}/lib/deep/x.json`, f]) assert.equal(fs.readFileSync(path.join(mnt, rel), 'utf8'), fs.readFileSync(path.join(plain, rel), 'utf8'), rel);
    }
    assert.deepEqual(treeDiff(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS])), []);
  });

  it('the addon answered lookups, with and without an entry (its request counts at unmount)', async () => {
    await m!.stop();
    const lent = /(\d+) LOOKUP \((\d+) of them "no such entry"\)/.exec(m!.stderr());
    assert.ok(lent, `the server prints what the addon answered: ${m!.stderr()}`);
    assert.ok(Number(lent[1]) - Number(lent[2]) > 100, `lookups answered with an entry: ${lent[0]}`);
    assert.ok(Number(lent[2]) > 10, `lookups answered "no such entry": ${lent[0]}`);
  });
});

describe('listings lent ahead of the lookups (fuse3-lending.ts)', () => {
  const base = tempDir('lent-ahead');
  const lower = path.join(base, 'lower');
  const image = path.join(base, 'app.img');
  const mnt = path.join(base, 'mnt');
  let m: MountProcess | undefined;
  // Under a directory of the image (the root has an upper counterpart: never lent).
  const deep = (s: number) => `app/s${s}/lib/deep/x.json`;

  before(async () => {
    for (let s = 0; s < SUBTREES; s++) {
      fs.mkdirSync(path.join(lower, `app/s${s}/lib/deep`), { recursive: true });
      fs.writeFileSync(path.join(lower, deep(s)), `{"s": ${s}}\n`);
    }
    fs.writeFileSync(image, Buffer.alloc(100));
    await appendImage(image, { appDir: lower, manifest: {}, addons: [] });
    m = await startMount(image, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt], { ...process.env, OVERPACK_FUSE_STATS: '1', OVERPACK_FUSE_BINDING: 'fuse3' });
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('directories nobody looked up yet are lent once their parent is: their first lookups reach the addon, not JS', async () => {
    // One path first (app, s0, lib and deep lent as they are looked up, the rest ahead meanwhile), then every other subtree.
    assert.equal(sh(`cat ${path.join(mnt, deep(0))}`), '{"s": 0}\n');
    await new Promise((r) => setTimeout(r, 300));
    const all = Array.from({ length: SUBTREES }, (_, s) => path.join(mnt, deep(s))).join(' ');
    assert.equal(sh(`cat ${all}`), Array.from({ length: SUBTREES }, (_, s) => fs.readFileSync(path.join(lower, deep(s)), 'utf8')).join(''), 'the files as in the directory the image was made of');
    await m!.stop();
    const js = /^\s+lookup\s+(\d+)/m.exec(m!.stderr());
    const lookups = js ? Number(js[1]) : 0;
    // Without lending ahead JS answers the first lookup of each app/s<N>, s<N>/lib and s<N>/lib/deep.
    assert.ok(lookups < SUBTREES, `JS answered ${lookups} LOOKUPs for ${SUBTREES} subtrees of 3 levels: ${m!.stderr()}`);
    assert.match(m!.stderr(), /answered by the addon itself: .*LOOKUP/);
  });
});
