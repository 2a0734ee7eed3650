/**
 * Differential test: the same seeded random operations go through the overlay, onto a plain
 * copy of the lower, and through the kernel's overlayfs over another copy; afterwards the trees
 * (and every operation's outcome) must match. Set OVERPACK_DIFF_SEED to replay a failure,
 * OVERPACK_DIFF_OPS to change the length.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { comparable, isMountpoint, makeLower, sh, snapshot, startMount, tempDir, type MountProcess } from './helpers.js';
import { makeOps, outcome, rng } from './random-ops.js';
import { appendImage } from '../runtime/image/writer.js';

const FIELDS = ['type', 'mode', 'size', 'hash', 'target', 'xattrs'] as const;

/** `count` seeded random operations on the plain directory and through the mount: the same outcomes, then the same trees. */
function replay(seed: number, count: number, plain: string, mnt: string): void {
  const random = rng(seed);
  for (let i = 0; i < count; i++) {
    const { name, op } = makeOps(random, plain);
    const expected = outcome(op, plain);
    const actual = outcome(op, mnt);
    assert.equal(actual, expected, `op #${i} (${name}), seed ${seed}`);
  }
  assert.deepEqual(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS]));
}

describe('differential: overlay vs plain directory', () => {
  const seed = Number(process.env.OVERPACK_DIFF_SEED ?? 20261124);
  const count = Number(process.env.OVERPACK_DIFF_OPS ?? 3000);
  const base = tempDir('diff');
  const lower = path.join(base, 'lower');
  const plain = path.join(base, 'plain');
  const upper = path.join(base, 'upper');
  const mnt = path.join(base, 'mnt');
  let m: MountProcess | undefined;
  after(async () => {
    await m?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`applies ${count} random operations (seed ${seed}) with identical outcomes and trees`, async () => {
    fs.mkdirSync(lower);
    makeLower(lower);
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(lower, i % 2 ? 'docs' : '', `f${i}`), `file ${i}\n`.repeat(i));
    sh(`cp -a ${lower} ${plain}`); // cp -a keeps xattrs, which fs.cpSync drops
    const lowerBefore = comparable(snapshot(lower), [...FIELDS, 'mtimeMs', 'uid', 'gid']);
    m = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    replay(seed, count, plain, mnt);
    // the lower is untouched, and a preserved upper mounts again with the same view
    assert.deepEqual(comparable(snapshot(lower), [...FIELDS, 'mtimeMs', 'uid', 'gid']), lowerBefore);
    await m.stop();
    m = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    assert.deepEqual(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS]));
  });
});

describe('differential: overlay over an image vs plain directory', () => {
  // `overpack mount` over a bundle's image. With the kernel's caches off every path walk asks
  // again, so an answer the addon kept from a listing lent before a change (fuse3-lending.ts,
  // test/lent-lookups.test.ts) shows as a wrong outcome here.
  const seed = Number(process.env.OVERPACK_DIFF_SEED ?? 20261204);
  const count = Number(process.env.OVERPACK_DIFF_OPS ?? 2000);
  const base = tempDir('diff-image');
  const lower = path.join(base, 'lower');
  const plain = path.join(base, 'plain');
  const image = path.join(base, 'app.img');
  const mnt = path.join(base, 'mnt');
  let m: MountProcess | undefined;
  after(async () => {
    await m?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`applies ${count} random operations (seed ${seed}) with identical outcomes and trees`, async () => {
    fs.mkdirSync(lower);
    makeLower(lower);
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(lower, i % 3 === 0 ? '' : i % 3 === 1 ? 'docs' : 'docs/deep', `f${i}`), `file ${i}\n`.repeat(i));
    // An image shows every entry as the user's own (1234:5678 is not kept): the plain copy too.
    sh(`cp -a ${lower} ${plain} && chown -R 0:0 ${plain}`);
    fs.writeFileSync(image, Buffer.alloc(100));
    await appendImage(image, { appDir: lower, manifest: {}, addons: [] });
    m = await startMount(image, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt, '--cache-timeout', '0']);
    replay(seed, count, plain, mnt);
  });
});

describe('differential: overlay vs the kernel overlayfs', () => {
  const seed = Number(process.env.OVERPACK_DIFF_SEED ?? 20261202);
  const count = Number(process.env.OVERPACK_DIFF_OPS ?? 2000);
  const base = tempDir('diff-kernel');
  const lower = path.join(base, 'lower');
  const kernelLower = path.join(base, 'klower');
  const kernel = path.join(base, 'kmnt');
  const mnt = path.join(base, 'mnt');
  let m: MountProcess | undefined;
  after(async () => {
    await m?.stop();
    if (isMountpoint(kernel)) spawnSync('umount', ['-l', kernel]);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`applies ${count} random operations (seed ${seed}) with the outcomes and tree of kernel overlayfs`, async () => {
    fs.mkdirSync(lower);
    makeLower(lower);
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(lower, i % 2 ? 'docs' : '', `f${i}`), `file ${i}\n`.repeat(i));
    sh(`cp -a ${lower} ${kernelLower}`);
    for (const d of ['kup', 'kwork', 'kmnt']) fs.mkdirSync(path.join(base, d));
    // redirect_dir=on: the kernel renames lower directories too (as we do) instead of EXDEV.
    const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${kernelLower},upperdir=${base}/kup,workdir=${base}/kwork,redirect_dir=on`, kernel], { encoding: 'utf8' });
    assert.equal(r.status, 0, `kernel overlayfs mount failed: ${r.stderr}`);
    m = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt]);
    const random = rng(seed);
    for (let i = 0; i < count; i++) {
      const { name, op } = makeOps(random, kernel);
      const expected = outcome(op, kernel);
      const actual = outcome(op, mnt);
      assert.equal(actual, expected, `op #${i} (${name}), seed ${seed}`);
    }
    assert.deepEqual(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(kernel), [...FIELDS]));
  });
});
