/**
 * Differential test: the same seeded random operations go through the overlay and onto a plain
 * copy of the lower; afterwards both trees (and every operation's outcome) must match. Set
 * OVERPACK_DIFF_SEED to replay a failure, OVERPACK_DIFF_OPS to change the length.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { comparable, makeLower, snapshot, startMount, tempDir, type MountProcess } from './helpers.js';

/** mulberry32: small, seedable, good enough to pick operations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Op = (root: string) => void;

function outcome(op: Op, root: string): string {
  try {
    op(root);
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** All relative paths currently in a tree (dirs and non-dirs), from the plain copy. */
function listPaths(root: string): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  const dirs: string[] = [''];
  const walk = (rel: string) => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        dirs.push(r);
        walk(r);
      } else files.push(r);
    }
  };
  walk('');
  return { files, dirs };
}

function makeOps(random: () => number, plain: string): { name: string; op: Op } {
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  const { files, dirs } = listPaths(plain);
  const fresh = () => `n${Math.floor(random() * 1e6)}`;
  const anyPath = () => (random() < 0.5 && files.length ? pick(files) : pick(dirs));
  const newIn = () => {
    const d = pick(dirs);
    return d ? `${d}/${fresh()}` : fresh();
  };
  const bytes = Buffer.from(Array.from({ length: Math.floor(random() * 5000) }, () => Math.floor(random() * 256)));
  const offset = Math.floor(random() * 8000);
  const size = Math.floor(random() * 6000);
  const mode = pick([0o644, 0o600, 0o755, 0o700, 0o640]);
  const kind = random();
  if (kind < 0.15) {
    const p = newIn();
    return { name: `create ${p}`, op: (r) => fs.writeFileSync(path.join(r, p), bytes) };
  }
  if (kind < 0.3 && files.length) {
    const p = pick(files);
    return {
      name: `write ${p}@${offset}`,
      op: (r) => {
        const fd = fs.openSync(path.join(r, p), fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
        try {
          fs.writeSync(fd, bytes, 0, bytes.length, offset);
        } finally {
          fs.closeSync(fd);
        }
      },
    };
  }
  if (kind < 0.38 && files.length) {
    const p = pick(files);
    return { name: `truncate ${p} ${size}`, op: (r) => fs.truncateSync(path.join(r, p), size) };
  }
  if (kind < 0.48) {
    const p = newIn();
    return { name: `mkdir ${p}`, op: (r) => fs.mkdirSync(path.join(r, p), mode) };
  }
  if (kind < 0.54) {
    const p = pick(dirs.filter((d) => d !== '')) ?? 'none';
    return { name: `rmdir ${p}`, op: (r) => fs.rmdirSync(path.join(r, p)) };
  }
  if (kind < 0.58) {
    const p = pick(dirs.filter((d) => d !== '')) ?? 'none';
    return { name: `rm -rf ${p}`, op: (r) => fs.rmSync(path.join(r, p), { recursive: true }) };
  }
  if (kind < 0.68 && files.length) {
    const p = pick(files);
    return { name: `unlink ${p}`, op: (r) => fs.unlinkSync(path.join(r, p)) };
  }
  if (kind < 0.8) {
    const from = anyPath() || pick(files.length ? files : ['none']); // the root itself is not renamed
    const to = random() < 0.7 ? newIn() : anyPath() || newIn();
    return { name: `rename ${from} -> ${to}`, op: (r) => fs.renameSync(path.join(r, from), path.join(r, to)) };
  }
  if (kind < 0.86) {
    const p = newIn();
    const target = random() < 0.5 ? anyPath() : 'dangling/target';
    return { name: `symlink ${p} -> ${target}`, op: (r) => fs.symlinkSync(target, path.join(r, p)) };
  }
  if (kind < 0.93) {
    const p = anyPath();
    return { name: `chmod ${p} ${mode.toString(8)}`, op: (r) => fs.chmodSync(path.join(r, p || '.'), p === '' ? 0o755 : mode) };
  }
  const p = anyPath();
  const key = `user.k${Math.floor(random() * 3)}`;
  return {
    name: `setxattr ${p} ${key}`,
    op: (r) => {
      const target = path.join(r, p);
      if (fs.lstatSync(target).isSymbolicLink()) throw Object.assign(new Error('symlink'), { code: 'EPERM' });
      xattr.setAttributeSync(target, key, bytes.subarray(0, 64));
    },
  };
}

const FIELDS = ['type', 'mode', 'size', 'hash', 'target', 'xattrs'] as const;

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
    fs.cpSync(lower, plain, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    const lowerBefore = comparable(snapshot(lower), [...FIELDS, 'mtimeMs', 'uid', 'gid']);
    m = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    const random = rng(seed);
    for (let i = 0; i < count; i++) {
      const { name, op } = makeOps(random, plain);
      const expected = outcome(op, plain);
      const actual = outcome(op, mnt);
      assert.equal(actual, expected, `op #${i} (${name}), seed ${seed}`);
    }
    assert.deepEqual(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS]));
    // the lower is untouched, and a preserved upper mounts again with the same view
    assert.deepEqual(comparable(snapshot(lower), [...FIELDS, 'mtimeMs', 'uid', 'gid']), lowerBefore);
    await m.stop();
    m = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    assert.deepEqual(comparable(snapshot(mnt), [...FIELDS]), comparable(snapshot(plain), [...FIELDS]));
  });
});
