/**
 * Soak: a mixed workload through one mount for OVERPACK_SOAK_SECONDS (60 by default in the
 * suite; the full run is 600), checking that the server leaks no file descriptors, that
 * no request failed, and that memory growth stays under a bound.
 *
 * Known and open (issue 6): the 600 s run grows the server's RSS by ~1.1 KB per iteration
 * (104 -> 214 MB over 98k iterations) while the JS heap (6-7 MB), external memory and thread
 * count stay flat and MALLOC_ARENA_MAX=2 does not change it. The libfuse 3 binding grows the
 * same way (2026-12-01, `npm run test:stress`: 114 -> 209 MB over 88k iterations), so it is not
 * fuse-native's: native memory common to both bindings (the engine's backing-file calls, Node).
 * The 60 s bound here catches anything worse than that; the 600 s run fails on it today.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startMount, tempDir, type MountProcess } from './helpers.js';

const SECONDS = Number(process.env.OVERPACK_SOAK_SECONDS ?? 60);

const WORKER = `
const fs = require('fs');
const [root, id, seconds] = process.argv.slice(1);
const end = Date.now() + Number(seconds) * 1000;
let ops = 0;
const dir = root + '/soak' + id;
fs.mkdirSync(dir, { recursive: true });
while (Date.now() < end) {
  const n = ops % 200;
  const p = dir + '/f' + n;
  fs.writeFileSync(p, 'x'.repeat(100 + (ops % 5000)));
  fs.appendFileSync(root + '/lower-' + (ops % 50), 'y');
  fs.readFileSync(root + '/lower-' + ((ops + 7) % 50));
  if (ops % 3 === 0) fs.renameSync(p, p + '.moved');
  if (ops % 5 === 0) fs.rmSync(p + '.moved', { force: true });
  if (ops % 50 === 0) { fs.mkdirSync(dir + '/d' + ops); fs.rmdirSync(dir + '/d' + ops); }
  fs.readdirSync(dir);
  fs.statSync(root + '/lower-' + (ops % 50));
  ops++;
}
console.log(ops);
`;

function serverPid(m: MountProcess): number {
  return m.proc.pid!;
}
function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}
function fds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

describe('soak', () => {
  const base = tempDir('soak');
  let m: MountProcess | undefined;
  after(async () => {
    await m?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`serves a mixed workload for ${SECONDS} s with flat memory and no leaked descriptors`, { timeout: (SECONDS + 120) * 1000 }, async () => {
    const lower = path.join(base, 'lower');
    fs.mkdirSync(lower);
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(lower, `lower-${i}`), 'seed');
    m = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', path.join(base, 'mnt')]);
    const pid = serverPid(m);
    const run = (secs: number) =>
      Promise.all(
        Array.from({ length: 3 }, (_, id) =>
          new Promise<number>((resolve, reject) => {
            const p = spawn(process.execPath, ['-e', WORKER, m!.mountPoint, String(id), String(secs)], { stdio: ['ignore', 'pipe', 'pipe'] });
            let out = '';
            let err = '';
            p.stdout.on('data', (d) => (out += d));
            p.stderr.on('data', (d) => (err += d));
            p.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(err))));
          }),
        ),
      );
    // a warm-up fills caches and the descriptor pool, then the measured stretch
    await run(Math.min(10, SECONDS / 4));
    const rss0 = rssKiB(pid);
    const fd0 = fds(pid);
    const ops = (await run(SECONDS)).reduce((a, b) => a + b, 0);
    const rss1 = rssKiB(pid);
    const fd1 = fds(pid);
    process.stderr.write(`soak: ${ops} iterations in ${SECONDS} s; server RSS ${rss0} -> ${rss1} KiB; fds ${fd0} -> ${fd1}\n`);
    assert.ok(ops > 1000, `only ${ops} iterations`);
    assert.ok(rss1 - rss0 < 40 * 1024, `memory grew by ${rss1 - rss0} KiB`);
    assert.ok(fd1 <= fd0 + 8, `descriptors grew from ${fd0} to ${fd1}`);
    assert.ok(rss1 < 150 * 1024, `server uses ${rss1} KiB`);
    assert.doesNotMatch(m.stderr(), /failed/);
  });
});
