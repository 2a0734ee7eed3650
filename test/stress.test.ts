/**
 * Faults and load on one mount: several processes hammering it at once, and an upper on a
 * filesystem that fills up.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { forceUnmount, startMount, tempDir, type MountProcess } from './helpers.js';

/** One worker: a loop of writes, reads, renames and deletes on its own files plus shared reads. */
const WORKER = `
const fs = require('fs');
const [root, id, seconds] = process.argv.slice(1);
const end = Date.now() + Number(seconds) * 1000;
let ops = 0;
const mine = root + '/w' + id;
fs.mkdirSync(mine, { recursive: true });
while (Date.now() < end) {
  const n = ops % 50;
  const p = mine + '/f' + n;
  const data = Buffer.alloc(1000 + (ops % 7) * 3000, 65 + (ops % 26));
  fs.writeFileSync(p, data);
  const back = fs.readFileSync(p);
  if (!back.equals(data)) { console.error('mismatch at', p); process.exit(2); }
  fs.renameSync(p, p + '.r');
  if (ops % 3 === 0) fs.unlinkSync(p + '.r');
  fs.readFileSync(root + '/shared/s' + (ops % 20));
  fs.readdirSync(root + '/shared');
  fs.appendFileSync(root + '/shared/log', id + ':' + ops + '\\n');
  ops++;
}
console.log(ops);
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

  it('serves 6 processes hammering one mount without a failed request or a lost append', async () => {
    const lower = path.join(base, 'lower');
    fs.mkdirSync(path.join(lower, 'shared'), { recursive: true });
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(lower, 'shared', `s${i}`), `shared ${i}\n`.repeat(100));
    fs.writeFileSync(path.join(lower, 'shared', 'log'), '');
    m = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', path.join(base, 'mnt')]);
    const workers = Array.from({ length: 6 }, (_, id) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, ['-e', WORKER, m!.mountPoint, String(id), '6'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('exit', (code) => resolve({ code, out, err }));
      }),
    );
    const results = await Promise.all(workers);
    let total = 0;
    for (const r of results) {
      assert.equal(r.code, 0, r.err);
      total += Number(r.out.trim());
    }
    assert.ok(total > 100, `only ${total} iterations`);
    // every append landed whole: one line per iteration, none torn or lost
    const lines = fs.readFileSync(path.join(m.mountPoint, 'shared', 'log'), 'utf8').trim().split('\n');
    assert.equal(lines.length, total);
    assert.ok(lines.every((l) => /^\d:\d+$/.test(l)));
    assert.doesNotMatch(m.stderr(), /failed/);
    await m.stop();
    m = undefined;
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
