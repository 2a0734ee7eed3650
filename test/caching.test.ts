/**
 * The kernel's caches must never cost correctness. The mount lets the kernel keep attributes,
 * lookups, misses, directory listings and file pages; here several processes change the same
 * names at once (create, overwrite, positioned writes, truncate, rename across directories,
 * unlink, mkdir, rmdir) while others list and read. Afterwards the view through the mount,
 * caches warm, must equal what a fresh mount (nothing cached) shows, every stat size must match
 * the bytes read, and `rm -rf` must succeed. Runs on whichever binding OVERPACK_FUSE_BINDING
 * selects (`npm test` runs it on both).
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { comparable, forceUnmount, snapshot, startMount, tempDir, treeDiff, type MountProcess } from './helpers.js';

/** Random operations on shared names; POSIX refusals that races produce are expected, anything else fails. */
const WORKER = `
const fs = require('fs');
const [root, id, seconds, seed] = process.argv.slice(1);
let s = Number(seed) >>> 0;
const rnd = (n) => { s = (s * 1103515245 + 12345) >>> 0; return s % n; };
const dirs = ['d0', 'd1', 'd2', 'd0/sub'];
const name = () => root + '/' + dirs[rnd(dirs.length)] + '/n' + rnd(12);
const expected = new Set(['ENOENT', 'EEXIST', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'EINVAL', 'EBUSY']);
const end = Date.now() + Number(seconds) * 1000;
let ops = 0;
while (Date.now() < end) {
  const p = name();
  try {
    switch (rnd(11)) {
      case 0: fs.writeFileSync(p, Buffer.alloc(1 + rnd(20000), 97 + rnd(26))); break;
      case 1: fs.appendFileSync(p, id + ':' + ops + '\\n'); break;
      case 2: { const fd = fs.openSync(p, 'r+'); fs.writeSync(fd, Buffer.alloc(1 + rnd(5000), 65 + rnd(26)), 0, undefined, rnd(30000)); fs.closeSync(fd); break; }
      case 3: fs.truncateSync(p, rnd(15000)); break;
      case 4: fs.renameSync(p, name()); break;
      case 5: fs.unlinkSync(p); break;
      case 6: fs.mkdirSync(p); break;
      case 7: fs.rmdirSync(p); break;
      case 8: fs.readdirSync(root + '/' + dirs[rnd(dirs.length)]); break;
      case 9: { const st = fs.statSync(p); if (st.isFile()) fs.readFileSync(p); break; }
      default: { const d = root + '/' + dirs[rnd(dirs.length)]; for (const n of fs.readdirSync(d)) { try { fs.lstatSync(d + '/' + n); } catch (e) { if (e.code !== 'ENOENT') throw e; } } }
    }
  } catch (err) {
    if (!expected.has(err.code)) { console.error('unexpected', err.code, err.message); process.exit(2); }
  }
  ops++;
}
console.log(ops);
`;

function runWorkers(root: string, count: number, seconds: number): Promise<number> {
  return Promise.all(
    Array.from({ length: count }, (_, id) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, ['-e', WORKER, root, String(id), String(seconds), String(1000 + id)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('exit', (code) => resolve({ code, out, err }));
      }),
    ),
  ).then((results) => {
    let total = 0;
    for (const r of results) {
      assert.equal(r.code, 0, r.err);
      total += Number(r.out.trim());
    }
    return total;
  });
}

describe('kernel caching under concurrent change', () => {
  const base = tempDir('cache');
  const lower = path.join(base, 'lower');
  const upper = path.join(base, 'upper');
  let m: MountProcess | undefined;
  after(async () => {
    await m?.stop();
    forceUnmount(path.join(base, 'mnt'));
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('a warm mount shows exactly what a fresh mount shows after 4 processes raced on the same names', async () => {
    for (const d of ['d0', 'd1', 'd2', 'd0/sub']) {
      fs.mkdirSync(path.join(lower, d), { recursive: true });
      for (let i = 0; i < 12; i += 2) fs.writeFileSync(path.join(lower, d, `n${i}`), `lower ${d} ${i}\n`.repeat(50));
    }
    // A long cache timeout: anything stale would survive to the comparison.
    const args = ['--upper', upper, '--mountpoint', path.join(base, 'mnt'), '--cache-timeout', '300'];
    m = await startMount(lower, args);
    const ops = await runWorkers(m.mountPoint, 4, 5);
    assert.ok(ops > 200, `only ${ops} operations`);

    const warm = snapshot(m.mountPoint);
    for (const [p, e] of warm) {
      if (e.type === 'file') assert.equal(e.size, fs.readFileSync(path.join(m.mountPoint, p)).length, `stat size of ${p} matches its bytes`);
    }
    // every name a listing shows can be looked up, and nothing listed twice
    for (const d of ['d0', 'd1', 'd2']) {
      const names: string[] = fs.readdirSync(path.join(m.mountPoint, d));
      assert.equal(new Set(names).size, names.length);
      for (const n of names) assert.ok(fs.existsSync(path.join(m.mountPoint, d, n)), `${d}/${n} listed but not found`);
    }
    fs.rmSync(path.join(m.mountPoint, 'd1'), { recursive: true });
    assert.ok(!fs.existsSync(path.join(m.mountPoint, 'd1')));
    assert.doesNotMatch(m.stderr(), /failed/);
    assert.equal(await m.stop(), 0);

    m = await startMount(lower, args);
    const fresh = snapshot(m.mountPoint);
    const fields: Array<'type' | 'mode' | 'size' | 'hash' | 'target' | 'nlink'> = ['type', 'mode', 'size', 'hash', 'target', 'nlink'];
    const expected = comparable(new Map([...warm].filter(([p]) => p !== 'd1' && !p.startsWith('d1/'))), fields);
    assert.deepEqual(treeDiff(comparable(fresh, fields), expected), []);
    assert.equal(await m.stop(), 0);
    m = undefined;
  });
});
