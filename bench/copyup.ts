/**
 * Copy-up of a big lower file: the first write to `big.bin` (an append of one byte) copies the
 * whole file into the upper before it returns. Timed against `cp` of the same file on the same
 * disk (the bar: at least 70% of cp's speed), with fuse-overlayfs and kernel overlayfs
 * as references. Every run has a fresh upper and starts with the file in the page cache, so the
 * figure is the copy itself, not the disk's read speed.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { have, median, ms, scratchEnv, serveBundle, sh, type BenchContext, type Section, type Table } from './common.js';

interface Mounted {
  dir: string;
  stop(): Promise<void>;
}

function overpackMount(ctx: BenchContext, lower: string, upper: string, mp: string): Promise<Mounted> {
  const p = spawn(process.execPath, [ctx.cli, 'mount', lower, '--upper', upper, '--mountpoint', mp, '--on-exit', 'discard'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => reject(new Error(`overpack mount exited with ${code}: ${err}`)));
    p.stdout.on('data', (d) => {
      out += d;
      if (!out.includes('\n')) return;
      p.removeAllListeners('exit');
      const exited = new Promise<void>((r) => p.on('exit', () => r()));
      resolve({ dir: out.split('\n')[0]!, stop: async () => void (p.kill('SIGTERM'), await exited) });
    });
  });
}

/** ms of `cmd` run by sh with cwd `dir` (from a child: never from a process serving a mount). */
function timed(cmd: string, dir: string): number {
  const t = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', `cd "$0" && ${cmd}`, dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} in ${dir} failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function fresh(...dirs: string[]): void {
  for (const d of dirs) {
    fs.rmSync(d, { recursive: true, force: true });
    fs.mkdirSync(d, { recursive: true });
  }
}

export async function copyUpSection(ctx: BenchContext): Promise<Section> {
  const reps = ctx.reps ?? (ctx.quick ? 3 : 5);
  const big = path.join(ctx.tree, 'big.bin');
  const size = fs.statSync(big).size;
  const w = path.join(ctx.work, 'copyup');
  const [u, wk, m, home] = ['u', 'w', 'm', 'home'].map((n) => path.join(w, n)) as [string, string, string, string];
  const append = 'printf x >> big.bin';
  const variants: Array<[string, () => Promise<number>]> = [
    ['cp (same disk)', async () => {
      fresh(u);
      return timed(`cp ${JSON.stringify(big)} ${u}/big.bin`, w);
    }],
    ['overpack-dir', async () => {
      fresh(u, m);
      const mounted = await overpackMount(ctx, ctx.tree, u, m);
      try {
        return timed(append, mounted.dir);
      } finally {
        await mounted.stop();
      }
    }],
  ];
  if (ctx.treeBundle) {
    const bundle = ctx.treeBundle;
    variants.push(['overpack-image', async () => {
      fresh(home);
      const served = await serveBundle(bundle, scratchEnv(home));
      try {
        return timed(append, served.mountPoint);
      } finally {
        await served.stop();
      }
    }]);
  }
  if (have('fuse-overlayfs')) {
    variants.push(['fuse-overlayfs', async () => {
      fresh(u, wk, m);
      sh(`fuse-overlayfs -o lowerdir=${ctx.tree},upperdir=${u},workdir=${wk} ${m} 2>/dev/null`);
      try {
        return timed(append, m);
      } finally {
        spawnSync('fusermount3', ['-u', m]);
      }
    }]);
  }
  if (process.getuid?.() === 0) {
    variants.push(['kernel', async () => {
      fresh(u, wk, m);
      sh(`mount -t overlay overlay -o lowerdir=${ctx.tree},upperdir=${u},workdir=${wk} ${m}`);
      try {
        return timed(append, m);
      } finally {
        sh(`umount ${m}`);
      }
    }]);
  }
  const times: Record<string, number[]> = {};
  try {
    // In the page cache for every variant: the file, and the bundle the image variant reads it from.
    sh(`cat ${[big, ctx.treeBundle ?? '/dev/null'].map((f) => JSON.stringify(f)).join(' ')} > /dev/null`);
    for (let r = 0; r < reps; r++) {
      for (const [name, run] of variants) {
        ctx.log(`copy-up: ${name}, run ${r + 1}/${reps}`);
        // Every variant starts with the previous one's copy deleted: writing 256 MiB into page
        // cache that must first be reclaimed took 10x longer here than into just-freed pages,
        // and a variant that skipped this step paid for it.
        fresh(u, home);
        (times[name] ??= []).push(await run());
      }
    }
  } finally {
    fs.rmSync(w, { recursive: true, force: true });
  }
  const cp = median(times['cp (same disk)']!);
  const table: Table = {
    title: `Copy-up of a ${(size / 1048576).toFixed(0)} MiB lower file by its first write (median of ${reps}, file in the page cache, fresh upper each run)`,
    header: ['variant', 'ms', 'MB/s', 'speed vs cp'],
    rows: variants.map(([name]) => {
      const t = median(times[name]!);
      return [name, ms(t), ms(size / 1e6 / (t / 1000)), `${((cp / t) * 100).toFixed(0)}%`];
    }),
    notes: ['target: overpack at least 70% of cp; the timer runs from the append to its return (mounting and unmounting are outside it)'],
  };
  return { id: 'copyup', tables: [table], json: { reps, bytes: size, times } };
}
