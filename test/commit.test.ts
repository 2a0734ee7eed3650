/**
 * commit and commit-atomic: through real mounts (`overpack mount --on-exit ...`) and the
 * `overpack commit` command, with crashes injected at every step of commit-atomic.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { CLI, ROOT, comparable, makeLower, sh, snapshot, startMount, tempDir, treeDiff } from './helpers.js';
import { makeOps, outcome, rng } from './random-ops.js';
import { mknod } from '../runtime/native/syscalls.js';

const META = ['type', 'mode', 'uid', 'gid', 'size', 'hash', 'target', 'xattrs'] as const;
const base = tempDir('commit');
after(() => fs.rmSync(base, { recursive: true, force: true }));

function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 120000 });
}

/** File mtimes (ms) of a tree; directories' times legitimately differ between the two sides. */
function fileTimes(root: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of snapshot(root)) if (v.type === 'file') out[k] = v.mtimeMs;
  return out;
}

function linkGroups(root: string): string[][] {
  const groups = new Map<number, string[]>();
  for (const [k, v] of snapshot(root)) if (v.type === 'file' && v.nlink > 1) groups.set(v.ino, [...(groups.get(v.ino) ?? []), k]);
  return [...groups.values()].map((g) => g.sort()).sort();
}

for (const action of ['commit', 'commit-atomic'] as const) {
  describe(`--on-exit ${action}`, () => {
    it('leaves the lower equal to what the mount showed, and to a plain copy given the same operations', async () => {
      const dir = fs.mkdtempSync(path.join(base, `${action}-`));
      const lower = path.join(dir, 'lower');
      const plain = path.join(dir, 'plain');
      fs.mkdirSync(lower);
      makeLower(lower);
      sh(`cp -a ${lower} ${plain}`); // cp -a keeps xattrs, which fs.cpSync drops
      const m = await startMount(lower, ['--upper', path.join(dir, 'upper'), '--mountpoint', path.join(dir, 'mnt'), '--on-exit', action, '--cache-timeout', '0']);
      let merged: ReturnType<typeof comparable>;
      let mergedTimes: Record<string, number>;
      try {
        const random = rng(action === 'commit' ? 7 : 8);
        for (let i = 0; i < 800; i++) {
          const { name, op } = makeOps(random, plain, { sockets: false });
          assert.equal(outcome(op, m.mountPoint), outcome(op, plain), `op #${i} ${name}`);
        }
        // hard links and explicit times, which the random operations do not make
        for (const root of [m.mountPoint, plain]) {
          fs.writeFileSync(path.join(root, 'linked-a'), 'shared');
          fs.linkSync(path.join(root, 'linked-a'), path.join(root, 'linked-b'));
          fs.writeFileSync(path.join(root, 'dated'), 'x');
          fs.utimesSync(path.join(root, 'dated'), new Date('2011-11-11T11:11:11Z'), new Date('2012-12-12T12:12:12Z'));
        }
        merged = comparable(snapshot(m.mountPoint), [...META]);
        mergedTimes = fileTimes(m.mountPoint);
      } finally {
        assert.equal(await m.stop(), 0, m.stderr());
      }
      assert.match(m.stderr(), /committed/);
      assert.ok(!fs.existsSync(path.join(dir, 'upper')), 'upper removed after success');
      assert.deepEqual(treeDiff(comparable(snapshot(lower), [...META]), merged), []);
      // times within the precision the mount reports (whole milliseconds)
      const times = fileTimes(lower);
      assert.deepEqual(Object.keys(times).sort(), Object.keys(mergedTimes).sort());
      for (const [k, t] of Object.entries(times)) assert.ok(Math.abs(t - mergedTimes[k]!) <= 1, `${k}: mtime ${t} vs ${mergedTimes[k]}`);
      assert.deepEqual(comparable(snapshot(lower), ['type', 'mode', 'size', 'hash', 'target', 'xattrs']), comparable(snapshot(plain), ['type', 'mode', 'size', 'hash', 'target', 'xattrs']));
      assert.deepEqual(linkGroups(lower), [['linked-a', 'linked-b']]);
      assert.equal(new Date(fs.statSync(path.join(lower, 'dated')).mtimeMs).toISOString(), '2012-12-12T12:12:12.000Z');
    });
  });
}

describe('dedup', () => {
  it('a commit where most files are unchanged rewrites none of them', async () => {
    const dir = fs.mkdtempSync(path.join(base, 'dedup-'));
    const lower = path.join(dir, 'lower');
    fs.mkdirSync(lower);
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(lower, `f${i}`), `content ${i}\n`.repeat(50));
    const before = snapshot(lower);
    const m = await startMount(lower, ['--upper', path.join(dir, 'upper'), '--mountpoint', path.join(dir, 'mnt')]);
    try {
      // chmod and back: each file is copied up with its content and mtime unchanged
      for (let i = 0; i < 200; i++) {
        fs.chmodSync(path.join(m.mountPoint, `f${i}`), 0o600);
        fs.chmodSync(path.join(m.mountPoint, `f${i}`), 0o644);
      }
      fs.appendFileSync(path.join(m.mountPoint, 'f0'), 'changed');
      fs.appendFileSync(path.join(m.mountPoint, 'f1'), 'changed');
    } finally {
      await m.stop();
    }
    assert.equal(fs.readdirSync(path.join(dir, 'upper')).filter((n) => n.startsWith('f')).length, 200);
    const r = cli(['commit', lower, '--upper', path.join(dir, 'upper')]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /2 written .* 198 unchanged \(\d+ bytes not rewritten\), 0 deleted/);
    const after = snapshot(lower);
    for (let i = 2; i < 200; i++) {
      const a = before.get(`f${i}`)!;
      const b = after.get(`f${i}`)!;
      assert.equal(b.ino, a.ino, `f${i} kept its inode`);
      assert.equal(b.mtimeMs, a.mtimeMs);
    }
    assert.notEqual(after.get('f0')!.hash, before.get('f0')!.hash);
  });
});

describe('hostile uppers', () => {
  function setup(tag: string) {
    const dir = fs.mkdtempSync(path.join(base, `${tag}-`));
    const lower = path.join(dir, 'lower');
    const upper = path.join(dir, 'upper');
    fs.mkdirSync(path.join(lower, 'd', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(lower, 'd', 'sub', 'f'), 'lower');
    fs.writeFileSync(path.join(lower, 'keep'), 'keep');
    fs.mkdirSync(upper);
    return { dir, lower, upper };
  }

  for (const atomic of [false, true]) {
    it(`${atomic ? 'commit-atomic' : 'commit'}: fifos and device nodes are committed as such, sockets left out and counted`, () => {
      const { lower, upper } = setup(atomic ? 'special-atomic' : 'special');
      fs.writeFileSync(path.join(upper, 'new'), 'new');
      assert.equal(spawnSync('mkfifo', ['-m', '640', path.join(upper, 'pipe')]).status, 0);
      assert.equal(spawnSync('mknod', [path.join(upper, 'null2'), 'c', '1', '3']).status, 0);
      // A socket file as a server leaves it behind (bound, then the server gone).
      mknod(path.join(upper, 'app.sock'), fs.constants.S_IFSOCK | 0o755, 0);
      const r = cli(['commit', lower, '--upper', upper, ...(atomic ? ['--atomic'] : [])]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr + r.stdout, /1 socket left out/);
      const pipe = fs.lstatSync(path.join(lower, 'pipe'));
      assert.ok(pipe.isFIFO());
      assert.equal(pipe.mode & 0o777, 0o640);
      const dev = fs.lstatSync(path.join(lower, 'null2'));
      assert.ok(dev.isCharacterDevice());
      assert.equal(dev.rdev, fs.lstatSync('/dev/null').rdev);
      assert.equal(fs.existsSync(path.join(lower, 'app.sock')), false);
      assert.equal(fs.readFileSync(path.join(lower, 'new'), 'utf8'), 'new');
      assert.equal(fs.existsSync(upper), false, 'the upper is removed after success');
    });
  }

  it('replaces types for real and never follows a symlink out of the tree', () => {
    const { dir, lower, upper } = setup('types');
    const outside = path.join(dir, 'outside');
    fs.mkdirSync(outside);
    fs.symlinkSync(outside, path.join(lower, 'escape')); // lower: escape -> outside dir
    fs.mkdirSync(path.join(upper, 'escape')); // upper: escape is a real dir with a file
    fs.writeFileSync(path.join(upper, 'escape', 'payload'), 'p');
    fs.symlinkSync('keep', path.join(upper, 'd')); // upper: symlink where lower has a dir
    fs.writeFileSync(path.join(upper, '.wh.nothing-here'), ''); // whiteout of a missing name
    fs.mkdirSync(path.join(upper, 'keep')); // dir replacing a file
    const r = cli(['commit', lower, '--upper', upper]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(outside), [], 'nothing written outside the lower');
    assert.ok(fs.lstatSync(path.join(lower, 'escape')).isDirectory());
    assert.equal(fs.readFileSync(path.join(lower, 'escape', 'payload'), 'utf8'), 'p');
    assert.equal(fs.readlinkSync(path.join(lower, 'd')), 'keep');
    assert.ok(fs.lstatSync(path.join(lower, 'keep')).isDirectory());
  });

  it('an upper edited by hand between runs still commits what it says', () => {
    const { lower, upper } = setup('hand');
    fs.mkdirSync(path.join(upper, 'd'));
    fs.writeFileSync(path.join(upper, 'd', '.wh..wh..opq'), '');
    fs.writeFileSync(path.join(upper, 'd', 'only'), 'o');
    xattr.setAttributeSync(path.join(upper, 'd', 'only'), 'user.tag', 'v');
    const r = cli(['commit', lower, '--upper', upper, '--atomic']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(path.join(lower, 'd')), ['only'], 'opaque dir replaced the lower contents');
    assert.equal(xattr.getAttributeSync(path.join(lower, 'd', 'only'), 'user.tag').toString(), 'v');
  });
});

describe('commit-atomic crash-proofing', () => {
  it('killed with SIGKILL at every step, the lower is always entirely old or entirely new after recovery', () => {
    const dir = fs.mkdtempSync(path.join(base, 'crash-'));
    const seedLower = path.join(dir, 'seed-lower');
    const seedUpper = path.join(dir, 'seed-upper');
    fs.mkdirSync(path.join(seedLower, 'a', 'b'), { recursive: true });
    for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(seedLower, 'a', `old${i}`), `old ${i}`);
    fs.writeFileSync(path.join(seedLower, 'a', 'b', 'gone'), 'gone');
    fs.mkdirSync(path.join(seedUpper, 'a', 'b'), { recursive: true });
    for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(seedUpper, 'a', `new${i}`), `new ${i}`);
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(seedUpper, 'a', `old${i}`), `rewritten ${i}`);
    fs.writeFileSync(path.join(seedUpper, 'a', 'b', '.wh.gone'), '');
    fs.symlinkSync('a/new0', path.join(seedUpper, 'link'));
    const FIELDS = ['type', 'mode', 'size', 'hash', 'target'] as const;
    const oldTree = comparable(snapshot(seedLower), [...FIELDS]);
    // the reference: an uninterrupted commit
    const refLower = path.join(dir, 'ref');
    fs.cpSync(seedLower, refLower, { recursive: true, verbatimSymlinks: true });
    fs.cpSync(seedUpper, path.join(dir, 'ref-upper'), { recursive: true, verbatimSymlinks: true });
    assert.equal(cli(['commit', refLower, '--upper', path.join(dir, 'ref-upper'), '--atomic']).status, 0);
    const newTree = comparable(snapshot(refLower), [...FIELDS]);
    assert.notDeepEqual(newTree, oldTree);

    let crashes = 0;
    const outcomes = { old: 0, new: 0 };
    for (let at = 1; at < 500; at++) {
      const lower = path.join(dir, `l${at}`);
      const upper = path.join(dir, `u${at}`);
      fs.cpSync(seedLower, lower, { recursive: true, verbatimSymlinks: true });
      fs.cpSync(seedUpper, upper, { recursive: true, verbatimSymlinks: true });
      // The library's atomic commit (the CLI's --atomic), killed at its step `at`.
      const script = `import { commitUpperAtomic } from ${JSON.stringify(path.join(ROOT, 'dist', 'runtime', 'overlay', 'index.js'))};
await commitUpperAtomic(${JSON.stringify(lower)}, ${JSON.stringify(upper)}, { onDiskStep: (n) => { if (n === ${at}) process.kill(process.pid, 'SIGKILL'); } });`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      if (r.signal !== 'SIGKILL') {
        assert.equal(r.status, 0, r.stderr);
        break; // ran to the end without reaching step `at`: every step has been tried
      }
      crashes++;
      const rec = cli(['commit', '--recover', lower]);
      assert.equal(rec.status, 0, rec.stderr);
      const now = comparable(snapshot(lower), [...FIELDS]);
      const isOld = JSON.stringify(now) === JSON.stringify(oldTree);
      const isNew = JSON.stringify(now) === JSON.stringify(newTree);
      assert.ok(isOld || isNew, `after a kill at step ${at}, the lower is a mix`);
      if (isOld) {
        outcomes.old++;
        assert.ok(fs.existsSync(upper), `step ${at}: rolled back, the upper must be kept`);
      } else {
        outcomes.new++;
      }
      assert.ok(!fs.existsSync(path.join(dir, `.l${at}.overpack-commit`)), 'recovery leaves no staging behind');
      fs.rmSync(lower, { recursive: true, force: true });
      fs.rmSync(upper, { recursive: true, force: true });
    }
    assert.ok(crashes >= 50, `only ${crashes} crash points`);
    assert.ok(outcomes.old > 0 && outcomes.new > 0);
    process.stderr.write(`commit-atomic: ${crashes} crash points, ${outcomes.old} rolled back, ${outcomes.new} completed, 0 mixed\n`);
  });
});
