/**
 * Faults and load on one mount: several processes hammering it at once (OVERPACK_STRESS_SECONDS,
 * 6 in the suite, 120 in `npm run test:stress`), and an upper on a filesystem that fills up.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { forceUnmount, startMount, tempDir, type MountProcess } from './helpers.js';

/** Seconds of the hammer: short in `npm test`, two minutes in `npm run test:stress`. */
const SECONDS = Number(process.env.OVERPACK_STRESS_SECONDS ?? 6);
const WORKERS = 6;

/**
 * One worker: writes, reads back, renames within its own dir and across into a shared dir,
 * deletes, reads shared files and appends to a shared log. Every file it leaves in moved/ has
 * content derived from its name, so the test can account for each one afterwards.
 */
const WORKER = `
const fs = require('fs');
const [root, id, seconds] = process.argv.slice(1);
const end = Date.now() + Number(seconds) * 1000;
let ops = 0;
let moved = 0;
const mine = root + '/w' + id;
fs.mkdirSync(mine, { recursive: true });
const body = (tag, n) => Buffer.alloc(1000 + (n % 7) * 3000, tag + ':' + n + ';');
while (Date.now() < end) {
  const n = ops % 50;
  const p = mine + '/f' + n;
  const data = body('w' + id, ops);
  fs.writeFileSync(p, data);
  const back = fs.readFileSync(p);
  if (!back.equals(data)) { console.error('mismatch at', p); process.exit(2); }
  fs.renameSync(p, p + '.r');
  if (ops % 3 === 0) fs.unlinkSync(p + '.r');
  else if (ops % 5 === 1) { fs.renameSync(p + '.r', root + '/moved/w' + id + '-' + ops); moved++; }
  fs.readFileSync(root + '/shared/s' + (ops % 20));
  fs.readdirSync(root + '/shared');
  if (ops % 10 === 0) fs.readdirSync(root + '/moved');
  fs.appendFileSync(root + '/shared/log', id + ':' + ops + '\\n');
  ops++;
}
console.log(JSON.stringify({ ops, moved }));
`;

describe('load and faults', () => {
  const base = tempDir('stress');
  let m: MountProcess | undefined;
  const tmpfs = path.join(base, 'small');
  after(async () => {
    await m?.stop();
    forceUnmount(tmpfs);
    spawnSync('umount', [tmpfs], { stdio: 'ignore' });
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`serves ${WORKERS} processes hammering one mount for ${SECONDS} s: no failed request, no deadlock, every write accounted for`, { timeout: (SECONDS + 180) * 1000 }, async () => {
    const lower = path.join(base, 'lower');
    fs.mkdirSync(path.join(lower, 'shared'), { recursive: true });
    fs.mkdirSync(path.join(lower, 'moved'));
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(lower, 'shared', `s${i}`), `shared ${i}\n`.repeat(100));
    fs.writeFileSync(path.join(lower, 'shared', 'log'), '');
    m = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', path.join(base, 'mnt')]);
    const running = new Set<ChildProcess>();
    // A worker that is not done well after its time is stuck: that is a deadlock, not slowness.
    const watchdog = setTimeout(() => {
      for (const p of running) p.kill('SIGKILL');
    }, (SECONDS + 120) * 1000);
    const workers = Array.from({ length: WORKERS }, (_, id) =>
      new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, ['-e', WORKER, m!.mountPoint, String(id), String(SECONDS)], { stdio: ['ignore', 'pipe', 'pipe'] });
        running.add(p);
        let out = '';
        let err = '';
        p.stdout!.on('data', (d) => (out += d));
        p.stderr!.on('data', (d) => (err += d));
        p.on('exit', (code, signal) => (running.delete(p), resolve({ code, signal, out, err })));
      }),
    );
    const results = await Promise.all(workers);
    clearTimeout(watchdog);
    const counts: Array<{ ops: number; moved: number }> = [];
    for (const r of results) {
      assert.equal(r.signal, null, `a worker was stuck and killed by the watchdog: ${r.err}`);
      assert.equal(r.code, 0, r.err);
      counts.push(JSON.parse(r.out) as { ops: number; moved: number });
    }
    const total = counts.reduce((n, c) => n + c.ops, 0);
    assert.ok(total > 100, `only ${total} iterations`);
    // every append landed whole: exactly one line per iteration of each worker, none torn or lost
    const lines = fs.readFileSync(path.join(m.mountPoint, 'shared', 'log'), 'utf8').trim().split('\n');
    assert.equal(lines.length, total);
    assert.ok(lines.every((l) => /^\d:\d+$/.test(l)));
    counts.forEach((c, id) => {
      const mine = new Set(lines.filter((l) => l.startsWith(`${id}:`)));
      assert.equal(mine.size, c.ops, `worker ${id}: each append once`);
    });
    // every file renamed into the shared dir is there once, whole, with the bytes written
    const moved = fs.readdirSync(path.join(m.mountPoint, 'moved')).sort();
    assert.equal(moved.length, counts.reduce((n, c) => n + c.moved, 0));
    for (const name of moved) {
      const [, id, ops] = /^w(\d)-(\d+)$/.exec(name)!;
      const n = Number(ops);
      const expected = Buffer.alloc(1000 + (n % 7) * 3000, `w${id}:${n};`);
      assert.ok(fs.readFileSync(path.join(m.mountPoint, 'moved', name)).equals(expected), name);
    }
    assert.doesNotMatch(m.stderr(), /failed/);
    process.stderr.write(`stress: ${WORKERS} workers, ${SECONDS} s, ${total} iterations (${(total / SECONDS).toFixed(0)}/s), ${moved.length} cross-directory renames checked\n`);
    await m.stop();
    m = undefined;
    // and the same accounting holds in the upper after unmount
    assert.equal(fs.readdirSync(path.join(base, 'upper', 'moved')).length, moved.length);
  });

  it('gives the app ENOSPC on a full upper and keeps serving', async () => {
    const lower = path.join(base, 'lower2');
    fs.mkdirSync(lower);
    fs.writeFileSync(path.join(lower, 'keep.txt'), 'still here');
    fs.mkdirSync(tmpfs);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', tmpfs]);
    assert.equal(mounted.status, 0, String(mounted.stderr));
    m = await startMount(lower, ['--upper', path.join(tmpfs, 'upper'), '--mountpoint', path.join(base, 'mnt2')]);
    const big = path.join(m.mountPoint, 'big');
    const r = spawnSync('dd', ['if=/dev/zero', `of=${big}`, 'bs=1M', 'count=16'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /No space left on device/);
    // still serving: reads work, and space freed is usable again
    assert.equal(fs.readFileSync(path.join(m.mountPoint, 'keep.txt'), 'utf8'), 'still here');
    fs.unlinkSync(big);
    fs.writeFileSync(path.join(m.mountPoint, 'after.txt'), 'ok');
    assert.equal(fs.readFileSync(path.join(m.mountPoint, 'after.txt'), 'utf8'), 'ok');
    // a copy-up that does not fit fails cleanly and leaves the lower file visible and intact
    fs.writeFileSync(path.join(lower, 'huge.bin'), Buffer.alloc(8 * 1024 * 1024, 7));
    assert.throws(() => fs.appendFileSync(path.join(m!.mountPoint, 'huge.bin'), 'x'), /ENOSPC/);
    const seen = fs.readFileSync(path.join(m.mountPoint, 'huge.bin'));
    assert.equal(seen.length, 8 * 1024 * 1024);
    assert.ok(!fs.existsSync(path.join(tmpfs, 'upper', 'huge.bin')), 'no partial copy in the upper');
    assert.equal(fs.readdirSync(path.join(tmpfs, 'upper', '.wh..wh..work')).length, 0, 'scratch cleaned');
    assert.equal(await m.stop(), 0);
    m = undefined;
  });
});
