/**
 * `npm run bench [-- --quick] [--out FILE] [--reps N] [--only w1,w2,...,launch,build,scale,copyup,update]`: every variant on
 * the same data in the same run, repetitions interleaved, medians and ratios to the native
 * directory and to fuse-overlayfs, as a table and as JSON. Needs root (kernel overlayfs,
 * dropping caches). Workloads run as child processes; nothing here touches a mount served by
 * this process.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatTable, unmountUnder, type BenchContext, type Section, scratchEnv } from './common.js';
import { launchSection } from './launch.js';
import { buildSection } from './build-time.js';
import { scaleSection } from './scale.js';
import { copyUpSection } from './copyup.js';
import { updateSection } from './update.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(ROOT, 'dist', 'builder', 'cli.js');
const USAGE = `usage: npm run bench -- [--quick] [--reps N] [--only LIST] [--out FILE]

  --quick       fewer repetitions and smaller workloads (ratios compare with full mode)
  --reps N      repetitions of each timed variant (default 5, quick 3)
  --only LIST   comma-separated sections: w1..w7, launch, build, scale, copyup, update
  --out FILE    where the JSON results go (default bench/results/<time>.json)

Needs root (kernel overlayfs, dropping caches); data in $OVERPACK_BENCH_DATA or /var/tmp/overpack-bench.
`;
function parseBenchArgs(): { quick: boolean; reps: string | undefined; only: string | undefined; out: string | undefined } {
  try {
    const { values } = parseArgs({
      options: { quick: { type: 'boolean', default: false }, reps: { type: 'string' }, only: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    return { quick: values.quick, reps: values.reps, only: values.only, out: values.out };
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}
const args = parseBenchArgs();
const quick = args.quick;
const repsArg = args.reps !== undefined ? Number(args.reps) || null : null;
const reps = repsArg ?? (quick ? 3 : 5);
const only = args.only !== undefined ? args.only.split(',') : null;
const outFile = args.out ?? path.join(ROOT, 'bench', 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
// OVERPACK_BENCH_DATA: somewhere else for the data (e.g. two checkouts benchmarking at once).
const DATA = process.env.OVERPACK_BENCH_DATA || '/var/tmp/overpack-bench';
const BIG_MIB = quick ? 256 : 1024;
// W4: full mode is the issue's (1,000 appends, 5,000 creates, 1 GiB, 20 directories of 100
// files removed). Quick mode does 20% of each part: all of it was more than 80 s of a quick
// run, every second of it measured runs, and ext4 on this disk makes creates vary 2-5x from
// minute to minute. The operations and their mix are the same, so the ratios compare.
const W4 = quick ? { appends: 200, creates: 1000, mib: 12, dirs: 4 } : { appends: 1000, creates: 5000, mib: 1024, dirs: 20 };
/** W7: rows of the SQLite database in the W4 data (100-byte values: 133 MB at 900,000), and the changes made to it. */
const W7 = quick ? { rows: 200_000, ops: 4000 } : { rows: 900_000, ops: 20_000 };
const W7_SCRIPT = path.join(ROOT, 'bench', 'w7-sqlite.py');

function sh(cmd: string, cwd?: string): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}
function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}
function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

/** The data, built once and cached: a node_modules tree plus a big file; a small tree for writes. */
function prepareData(): { tree: string; w4: string; squash: string; w4Squash: string } {
  const tree = path.join(DATA, 'tree');
  if (!fs.existsSync(path.join(tree, '.complete'))) {
    log(`building the test tree in ${tree} (npm install of a few large packages; once)`);
    fs.rmSync(tree, { recursive: true, force: true });
    fs.mkdirSync(tree, { recursive: true });
    sh('npm init -y >/dev/null && npm install --no-audit --no-fund eslint webpack @babel/core rollup typescript@5 >/dev/null 2>&1', tree);
    fs.writeFileSync(path.join(tree, '.complete'), '');
  }
  const big = path.join(tree, 'big.bin');
  if (!fs.existsSync(big) || fs.statSync(big).size !== BIG_MIB * 1048576) {
    sh(`head -c ${BIG_MIB * 1048576} /dev/urandom > ${big}`);
    fs.rmSync(path.join(DATA, 'tree.squashfs'), { force: true });
  }
  const w4 = path.join(DATA, 'w4');
  if (!fs.existsSync(path.join(w4, '.complete'))) {
    fs.rmSync(w4, { recursive: true, force: true });
    fs.mkdirSync(path.join(w4, 'append'), { recursive: true });
    for (let i = 0; i < 1000; i++) fs.writeFileSync(path.join(w4, 'append', `f${i}`), 'x'.repeat(4096));
    for (let d = 0; d < 20; d++) {
      fs.mkdirSync(path.join(w4, 'doomed', `d${d}`), { recursive: true });
      for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(w4, 'doomed', `d${d}`, `f${i}`), 'y');
    }
    fs.writeFileSync(path.join(w4, '.complete'), '');
    fs.rmSync(path.join(DATA, 'w4.squashfs'), { force: true });
  }
  // W7's database, beside W4's files (so every variant, the images included, has it).
  const w7Marker = path.join(w4, 'state', `.rows-${W7.rows}`);
  if (have('python3') && !fs.existsSync(w7Marker)) {
    log(`making W7's SQLite database (${W7.rows} rows; once)`);
    fs.rmSync(path.join(w4, 'state'), { recursive: true, force: true });
    sh(`python3 ${W7_SCRIPT} make ${path.join(w4, 'state')} ${W7.rows}`);
    fs.writeFileSync(w7Marker, '');
    fs.rmSync(path.join(DATA, 'w4.squashfs'), { force: true });
  }
  const squash = path.join(DATA, 'tree.squashfs');
  if (have('mksquashfs') && !fs.existsSync(squash)) {
    log('mksquashfs of the tree (once)');
    sh(`mksquashfs ${tree} ${squash} -noappend -quiet -comp zstd >/dev/null`);
  }
  const w4Squash = path.join(DATA, 'w4.squashfs');
  if (have('mksquashfs') && !fs.existsSync(w4Squash)) sh(`mksquashfs ${w4} ${w4Squash} -noappend -quiet >/dev/null`);
  return { tree, w4, squash, w4Squash };
}

interface Mounted {
  dir: string;
  unmount(): Promise<void>;
}
interface Variant {
  name: string;
  /** Mounted for the workloads on this data only (a variant that only changes writes). */
  only?: 'tree' | 'w4';
  missing(): string | null;
  mount(lower: string, work: string, which: 'tree' | 'w4'): Promise<Mounted>;
}

function waitLine(p: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    p.stderr?.on('data', (d) => (err += d));
    p.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    p.on('exit', (code) => reject(new Error(`mount process exited with ${code}: ${err}`)));
  });
}

function serverMount(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<Mounted> {
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  return waitLine(p).then((dir) => ({
    dir,
    unmount: async () => {
      const exited = new Promise((r) => p.on('exit', r));
      p.kill('SIGTERM');
      await exited;
    },
  }));
}

function fuseUnmount(dir: string): Promise<void> {
  spawnSync('fusermount3', ['-u', dir]);
  if (fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${dir} `)) spawnSync('umount', ['-l', dir]);
  return Promise.resolve();
}

function fresh(work: string, ...names: string[]): string[] {
  return names.map((n) => {
    const p = path.join(work, n);
    fs.rmSync(p, { recursive: true, force: true });
    fs.mkdirSync(p, { recursive: true });
    return p;
  });
}

function variants(data: ReturnType<typeof prepareData>, bundles: Record<'tree' | 'w4', string>, rawBundles: Record<'tree' | 'w4', string>): Variant[] {
  const imageMount = (files: Record<'tree' | 'w4', string>): Variant['mount'] => async (_lower, work, which) => {
    const home = fresh(work, 'home')[0]!;
    return serverMount([files[which], '--overpack-mount', '--overpack-discard'], { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, 'c'), XDG_DATA_HOME: path.join(home, 'd') });
  };
  return [
    {
      name: 'native',
      missing: () => null,
      mount: async (lower, work, which) => {
        if (which === 'tree') return { dir: lower, unmount: async () => undefined };
        const [copy] = fresh(work, 'copy');
        sh(`cp -a ${lower}/. ${copy}`);
        return { dir: copy!, unmount: async () => undefined };
      },
    },
    {
      name: 'kernel',
      missing: () => null,
      mount: async (lower, work) => {
        const [u, w, m] = fresh(work, 'u', 'w', 'm');
        sh(`mount -t overlay overlay -o lowerdir=${lower},upperdir=${u},workdir=${w} ${m}`);
        return { dir: m!, unmount: async () => void sh(`umount ${m}`) };
      },
    },
    {
      name: 'fuse-overlayfs',
      missing: () => (have('fuse-overlayfs') ? null : 'install the Debian package fuse-overlayfs'),
      mount: async (lower, work) => {
        const [u, w, m] = fresh(work, 'u', 'w', 'm');
        sh(`fuse-overlayfs -o lowerdir=${lower},upperdir=${u},workdir=${w} ${m} 2>/dev/null`);
        return { dir: m!, unmount: () => fuseUnmount(m!) };
      },
    },
    {
      name: 'squashfuse+fuse-overlayfs',
      missing: () => (have('squashfuse') && have('fuse-overlayfs') && fs.existsSync(data.squash) ? null : 'install squashfuse, squashfs-tools and fuse-overlayfs'),
      mount: async (_lower, work, which) => {
        const [sq, u, w, m] = fresh(work, 'sq', 'u', 'w', 'm');
        sh(`squashfuse ${which === 'w4' ? data.w4Squash : data.squash} ${sq}`);
        sh(`fuse-overlayfs -o lowerdir=${sq},upperdir=${u},workdir=${w} ${m} 2>/dev/null`);
        return {
          dir: m!,
          unmount: async () => {
            await fuseUnmount(m!);
            await fuseUnmount(sq!);
          },
        };
      },
    },
    {
      name: 'overpack-dir',
      missing: () => (fs.existsSync(CLI) ? null : 'run npm install first'),
      mount: async (lower, work) => {
        const [u, m] = fresh(work, 'u', 'm');
        return serverMount([process.execPath, CLI, 'mount', lower, '--upper', u!, '--mountpoint', m!, '--on-exit', 'discard']);
      },
    },
    {
      // The kernel's writeback cache (an opt-in, README: FUSE bindings), for the write workloads.
      name: 'overpack-dir-writeback',
      only: 'w4',
      missing: () => (fs.existsSync(CLI) ? null : 'run npm install first'),
      mount: async (lower, work) => {
        const [u, m] = fresh(work, 'u', 'm');
        return serverMount([process.execPath, CLI, 'mount', lower, '--upper', u!, '--mountpoint', m!, '--on-exit', 'discard', '--writeback']);
      },
    },
    {
      name: 'overpack-dir-fuse-native',
      missing: () => (fs.existsSync(CLI) ? null : 'run npm install first'),
      mount: async (lower, work) => {
        const [u, m] = fresh(work, 'u', 'm');
        return serverMount([process.execPath, CLI, 'mount', lower, '--upper', u!, '--mountpoint', m!, '--on-exit', 'discard'], { ...process.env, OVERPACK_FUSE_BINDING: 'fuse-native' });
      },
    },
    { name: 'overpack-image', missing: () => (fs.existsSync(bundles.tree) ? null : 'bundle build failed'), mount: imageMount(bundles) },
    { name: 'overpack-image-raw', missing: () => (fs.existsSync(rawBundles.tree) ? null : 'bundle build failed'), mount: imageMount(rawBundles) },
  ];
}

interface Workload {
  id: string;
  title: string;
  lower: 'tree' | 'w4';
  /** A shell command run with cwd at the mount, which is fresh for every timed run. */
  cmd: string;
  /**
   * What precedes the timed run: cold: caches dropped; cached: the lower and the images made
   * of it read into the page cache, no warm-up (for writes, which a warm-up would change);
   * warm (the default): one untimed run of cmd in the same mount.
   */
  start?: 'cold' | 'cached' | 'warm';
  /** Time the mount and unmount themselves instead of a command. */
  mountOnly?: boolean;
}

const WORKLOADS: Workload[] = [
  { id: 'w1-cold', title: 'W1 find + stat every file, cold', lower: 'tree', cmd: 'find . -type f -printf "%s %i\\n" | wc -l', start: 'cold' },
  { id: 'w1-warm', title: 'W1 find + stat every file, warm', lower: 'tree', cmd: 'find . -type f -printf "%s %i\\n" | wc -l' },
  { id: 'w2-warm', title: 'W2 tar of every file, warm', lower: 'tree', cmd: 'tar cf - --exclude=./big.bin . | cat > /dev/null' },
  { id: 'w3-cold', title: 'W3 sequential read of the big file, cold', lower: 'tree', cmd: 'cat big.bin > /dev/null', start: 'cold' },
  { id: 'w3-warm', title: 'W3 sequential read of the big file, warm', lower: 'tree', cmd: 'cat big.bin > /dev/null' },
  {
    id: 'w4',
    title: `W4${quick ? ' (20%)' : ''} append ${W4.appends.toLocaleString('en')} files, create ${W4.creates.toLocaleString('en')}, write ${W4.mib} MiB, rm -rf ${(W4.dirs * 100).toLocaleString('en')}`,
    lower: 'w4',
    cmd: `for f in $(ls append | head -n ${W4.appends}); do echo more >> "append/$f"; done; mkdir new && cd new && seq ${W4.creates} | xargs touch && cd .. && head -c ${W4.mib * 1048576} /dev/zero > blob && rm -rf ${W4.dirs === 20 ? 'doomed' : `doomed/d[0-${W4.dirs - 1}]`}`,
    // Not cold: the native copy (made by its "mount") was always in the page cache, the overlays'
    // lower was not. Cached for all, the figure is the write path (dropping caches cost the
    // overlays only 0.1-0.2 s of rereading the 1,000 lower files here: not where W4's time goes).
    start: 'cached',
  },
  { id: 'w5-warm', title: 'W5 node -e "require(\'eslint\')", warm', lower: 'tree', cmd: `${process.execPath} -e "require('eslint')"` },
  { id: 'w6', title: 'W6 mount + unmount', lower: 'tree', cmd: '', mountOnly: true, start: 'cold' },
  // Desktop apps keep their state in SQLite: every change is a few 4 KiB page writes, a journal
  // and fsyncs, through the mount onto a copy-up of the whole database.
  ...(have('python3')
    ? [{ id: 'w7', title: `W7 app state in SQLite: ${W7.ops} changes in 40 transactions to a ${W7.rows}-row database`, lower: 'w4' as const, cmd: `python3 ${W7_SCRIPT} run state ${W7.ops}`, start: 'cached' as const }]
    : []),
];

/**
 * The order workloads run in (the table keeps WORKLOADS' order). Each inner list shares one
 * mount per variant and repetition, its workloads in that order, each warm one still after its
 * own warm-up run in that mount: mounting anew for each cost a mount cycle and a fresh mount's
 * first walk in every warm-up. The cold workloads run first, so that their cache drops do not
 * send the warm-ups to the disk. (Putting W1 warm in W1 cold's mount instead saved nothing:
 * the first walk of a fresh mount moved to W2's warm-up.)
 */
const MOUNT_GROUPS: string[][] = [['w1-cold'], ['w3-cold'], ['w1-warm', 'w2-warm', 'w3-warm', 'w5-warm'], ['w4'], ['w7'], ['w6']];
for (const w of WORKLOADS) if (!MOUNT_GROUPS.flat().includes(w.id)) throw new Error(`workload ${w.id} is in no MOUNT_GROUPS entry`);

function dropCaches(): void {
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    /* not root: cold runs are then only "fresh mount" */
  }
}

/** Every file under each path (file or directory) read once, so it is in the page cache. */
function readIntoCache(paths: string[]): void {
  for (const p of paths) if (fs.existsSync(p)) sh(`find ${p} -type f -exec cat {} + > /dev/null`);
}

function timeCmd(cmd: string, cwd: string): number {
  const t = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`"${cmd}" failed in ${cwd}: ${r.stderr}`);
  return ms;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) log('warning: not root; kernel overlayfs and cold runs need root');
  const data = prepareData();
  const work = fs.mkdtempSync(path.join(DATA, 'run-'));
  const bundles = { tree: path.join(DATA, 'tree.run'), w4: path.join(DATA, 'w4.run') };
  // The same data with its contents stored raw: what compression costs on reads.
  const rawBundles = { tree: path.join(DATA, 'tree-raw.run'), w4: path.join(DATA, 'w4-raw.run') };
  const bundlesStarted = Date.now();
  // Both at once (two cores; the runtime executable comes from the builder's cache, filled
  // atomically). Rebuilt every run (quick with the runtime cached): a bundle left by an older
  // checkout would measure an older runtime.
  for (const which of ['tree', 'w4'] as const) {
    const app = path.join(DATA, `app-${which}`);
    fs.rmSync(app, { recursive: true, force: true });
    sh(`cp -al ${which === 'tree' ? data.tree : data.w4} ${app}`);
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: `bench-${which}`, version: '1', entrypoint: 'overpack.sh' }));
    fs.writeFileSync(path.join(app, 'overpack.sh'), '#!/bin/sh\n', { mode: 0o755 });
  }
  await Promise.all(
    (['tree', 'w4', 'tree-raw', 'w4-raw'] as const).map((name) => {
      const which = name.startsWith('tree') ? 'tree' : 'w4';
      const out = name.endsWith('raw') ? rawBundles[which] : bundles[which];
      const app = path.join(DATA, `app-${which}`);
      // A bundle needs a manifest: a tiny app dir whose tree is the data (symlinks are stored as
      // links, so the manifest goes beside a hard-linked copy of the data).
      log(`building the overpack-image bundle of the ${which} data${out === bundles[which] ? '' : ', stored raw'}`);
      // Built with the sections' builder cache, never the real user's ~/.cache/overpack.
      const p = spawn(process.execPath, [CLI, 'build', app, '-o', out, '--compression', out === bundles[which] ? 'zstd' : 'none'], { stdio: ['ignore', 'ignore', 'pipe'], env: scratchEnv(path.join(DATA, 'build-home')) });
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      return new Promise<void>((resolve) =>
        p.on('close', (code) => {
          if (code !== 0) log(`bundle build failed: ${err}`);
          resolve();
        }),
      );
    }),
  );
  log(`bundles built in ${((Date.now() - bundlesStarted) / 1000).toFixed(0)} s`);
  const all = variants(data, bundles, rawBundles).filter((v) => {
    // The fuse-native comparison is not one of the issue's variants: full mode only, so that
    // quick mode stays a few minutes.
    if (quick && v.name === 'overpack-dir-fuse-native') return false;
    const why = v.missing();
    if (why) log(`skipping ${v.name}: ${why}`);
    return !why;
  });
  const results: Record<string, Record<string, number[]>> = Object.fromEntries(WORKLOADS.map((w) => [w.id, {}]));
  const cleanup: Mounted[] = [];
  const onSignal = async () => {
    for (const m of cleanup) await m.unmount().catch(() => undefined);
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  try {
    const selected = new Set(WORKLOADS.filter((x) => !only || only.some((o) => x.id.startsWith(o))).map((x) => x.id));
    for (const ids of MOUNT_GROUPS) {
      const group = ids.filter((id) => selected.has(id)).map((id) => WORKLOADS.find((x) => x.id === id)!);
      if (!group.length) continue;
      const first = group[0]!;
      log(group.map((w) => w.title).join('; '));
      const started = Date.now();
      // Wall time per workload and variant (warm-ups included) and of the mounts themselves
      // (cache drops, mount, unmount, cleanup): where a run's time goes.
      const spent: Record<string, Record<string, number>> = {};
      let mounting = 0;
      // The data in the page cache, once (nothing here evicts it later): for the warm workloads,
      // after the cold ones' drops, so that the first repetition's warm-ups find it there as the
      // later ones do; for W4, the lower and the images made of it.
      if ((first.start ?? 'warm') === 'warm') readIntoCache([data.tree, bundles.tree, rawBundles.tree, data.squash]);
      if (first.start === 'cached') readIntoCache([data.w4, bundles.w4, rawBundles.w4, data.w4Squash]);
      for (let r = 0; r < reps; r++) {
        for (const v of all) {
          if (v.only && v.only !== first.lower) continue;
          let t = Date.now();
          const vwork = path.join(work, v.name);
          fs.mkdirSync(vwork, { recursive: true });
          const lower = first.lower === 'tree' ? data.tree : data.w4;
          if (first.start === 'cold') dropCaches();
          const t0 = process.hrtime.bigint();
          const m = await v.mount(lower, vwork, first.lower);
          cleanup.push(m);
          try {
            if (first.mountOnly) {
              await m.unmount();
              (results[first.id]![v.name] ??= []).push(Number(process.hrtime.bigint() - t0) / 1e6);
            } else {
              mounting += Date.now() - t;
              for (const w of group) {
                t = Date.now();
                if ((w.start ?? 'warm') === 'warm') timeCmd(w.cmd, m.dir); // warm-up run
                (results[w.id]![v.name] ??= []).push(timeCmd(w.cmd, m.dir));
                (spent[w.id] ??= {})[v.name] = (spent[w.id]![v.name] ?? 0) + Date.now() - t;
              }
              t = Date.now();
            }
          } finally {
            if (!first.mountOnly) await m.unmount();
            cleanup.pop();
            // The upper goes now: its dirty pages (W4's big write) are dropped instead of being
            // written back while the next variant is timed.
            fs.rmSync(vwork, { recursive: true, force: true });
          }
          mounting += Date.now() - t;
        }
      }
      for (const w of group) {
        const perVariant = Object.entries(spent[w.id] ?? {}).map(([n, ms]) => `${n} ${(ms / 1000).toFixed(1)}`).join(', ');
        if (perVariant) log(`${w.id}: ${(Object.values(spent[w.id]!).reduce((a, b) => a + b, 0) / 1000).toFixed(0)} s (${perVariant})`);
      }
      log(`${ids.filter((id) => selected.has(id)).join(', ')} done in ${((Date.now() - started) / 1000).toFixed(0)} s, of which mounting, unmounting and cache drops ${(mounting / 1000).toFixed(0)} s`);
    }
  } finally {
    for (const m of cleanup) await m.unmount().catch(() => undefined);
    // anything still mounted under the work dir (a variant that failed to unmount) goes first
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const mp = line.split(' ')[4];
      if (mp?.startsWith(work)) await fuseUnmount(mp);
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
  // Launch, build and scale (bench/launch.ts, build-time.ts, scale.ts): own tables and JSON.
  const SECTIONS: Array<[string, (ctx: BenchContext) => Promise<Section>]> = [['launch', launchSection], ['build', buildSection], ['scale', scaleSection], ['copyup', copyUpSection], ['update', updateSection]];
  const sections: Section[] = [];
  const sectionWork = fs.mkdtempSync(path.join(DATA, 'run-'));
  const ctx: BenchContext = { root: ROOT, cli: CLI, data: DATA, tree: data.tree, treeBundle: fs.existsSync(bundles.tree) ? bundles.tree : null, work: sectionWork, quick, reps: repsArg, log };
  try {
    for (const [id, run] of SECTIONS.filter(([id]) => !only || only.includes(id))) {
      log(`${id} section`);
      const t = Date.now();
      sections.push(await run(ctx));
      log(`${id} section done in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    }
  } finally {
    unmountUnder(sectionWork);
    fs.rmSync(sectionWork, { recursive: true, force: true });
  }
  // report
  const names = all.map((v) => v.name);
  const rows: string[] = [];
  const json: Record<string, Record<string, { median: number; runs: number[]; vsNative: number; vsFuseOverlayfs: number | null }>> = {};
  rows.push(['workload', ...names.map((n) => `${n} ms (×native, ×fuse-ovl)`)].join(' | '));
  for (const w of WORKLOADS) {
    const res = results[w.id]!;
    if (!Object.keys(res).length) continue;
    json[w.id] = {};
    const nat = median(res.native ?? []);
    const fo = median(res['fuse-overlayfs'] ?? []);
    const cells = names.map((n) => {
      if (!res[n]?.length) return '-';
      const m = median(res[n]);
      json[w.id]![n] = { median: m, runs: res[n], vsNative: m / nat, vsFuseOverlayfs: Number.isFinite(fo) ? m / fo : null };
      return `${m.toFixed(0)} (${(m / nat).toFixed(2)}, ${Number.isFinite(fo) ? (m / fo).toFixed(2) : '-'})`;
    });
    rows.push([w.title, ...cells].join(' | '));
  }
  if (rows.length > 1) process.stdout.write(`\n${rows.join('\n')}\n\nmedians of ${reps} runs, interleaved; ${quick ? 'quick mode' : 'full mode'}\n`);
  for (const sec of sections) for (const t of sec.tables) process.stdout.write(`\n${formatTable(t)}\n`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify({ date: new Date().toISOString(), quick, reps, bigMiB: BIG_MIB, w4MiB: W4.mib, results: json, ...Object.fromEntries(sections.map((sec) => [sec.id, sec.json])) }, null, 2));
  log(`wrote ${outFile}; ${(process.uptime()).toFixed(0)} s in all (tsc and vendoring before it not counted)`);
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
