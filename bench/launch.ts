/**
 * Launch: a bundled hello-world (Node and shell) against running the same script directly,
 * warm and right after the bundle cache (`$XDG_CACHE_HOME/overpack`) was cleared; `eslint.run
 * --version` against `node eslint.js --version`; and the memory of the runtime process while
 * it serves a small and a large image. Variants are interleaved, medians reported.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildBundle, bundledNode, median, mib, ms, processMemory, scratchEnv, serveBundle, timeRun, type BenchContext, type Section, type Table } from './common.js';
import { eslintApp, helloApps, prettierApp, sourceDir, tscApp } from './apps.js';

interface Case {
  id: string;
  argv: string[];
  /** the direct run it is compared with */
  ref?: string;
  env?: NodeJS.ProcessEnv;
  /** clear `$XDG_CACHE_HOME/overpack` before every run */
  first?: boolean;
  /** the mount lingers: an untimed run of the same command just before joins it (linger.env) */
  relaunch?: boolean;
  /** with relaunch: through the runtime (OVERPACK_EXPRESS=0), not the loader's express relaunch */
  viaRuntime?: boolean;
  /** the mount lingers 0.3 s: every run waits until the previous server has exited (its loader may start the next one; viaRuntime: not) */
  afterLinger?: boolean;
  /** the mount lingers, but every run has a data directory of its own: it starts a mount server */
  newServer?: boolean;
  /** run in this directory (the file to lint or format is there) */
  cwd?: string;
}

/**
 * Lingering mounts get a home of their own: a first launch's wipe of the cache must never
 * meet a mount that is still served under it. Its servers are stopped when the section ends.
 */
function lingerHome(ctx: BenchContext): { env: NodeJS.ProcessEnv; fresh(): NodeJS.ProcessEnv; after: NodeJS.ProcessEnv; waitGone(): void; stop(): void } {
  const home = path.join(ctx.work, 'launch-linger-home');
  const env = scratchEnv(home, { OVERPACK_LINGER: '30' });
  const afterData = path.join(home, 'data-after');
  let n = 0;
  return {
    env,
    fresh: () => ({ ...env, OVERPACK_LINGER: '5', XDG_DATA_HOME: path.join(home, `data-${n++}`) }),
    after: { ...env, OVERPACK_LINGER: '0.3', XDG_DATA_HOME: afterData },
    waitGone: () => {
      const apps = path.join(afterData, 'overpack');
      const t0 = Date.now();
      const serving = () => fs.existsSync(apps) && fs.readdirSync(apps).some((a) => fs.existsSync(path.join(apps, a, 'lock')));
      while (serving() && Date.now() - t0 < 10000) spawnSync('sleep', ['0.02']);
    },
    stop: () => {
      const locks = fs.readdirSync(home).filter((d) => d.startsWith('data')).flatMap((d) => {
        const apps = path.join(home, d, 'overpack');
        return fs.existsSync(apps) ? fs.readdirSync(apps).map((a) => path.join(apps, a, 'lock')) : [];
      });
      for (const lock of locks.filter((l) => fs.existsSync(l))) {
        const pid = (JSON.parse(fs.readFileSync(lock, 'utf8')) as { pid: number }).pid;
        try {
          process.kill(pid, 'SIGTERM'); // a mount server our runs started: it unmounts and exits
        } catch {
          /* gone already */
        }
      }
      const t0 = Date.now();
      while (locks.some((l) => fs.existsSync(l)) && Date.now() - t0 < 10000) spawnSync('sleep', ['0.05']);
    },
  };
}

export async function launchSection(ctx: BenchContext): Promise<Section> {
  const apps = helloApps(ctx);
  const eslint = eslintApp(ctx);
  const tsc = tscApp(ctx);
  const prettier = prettierApp(ctx);
  const source = sourceDir(ctx);
  const dir = path.join(ctx.data, 'bundles');
  fs.mkdirSync(dir, { recursive: true });
  const bundles = {
    node: path.join(dir, 'hello-node.run'), shell: path.join(dir, 'hello-shell.run'), eslint: path.join(dir, 'eslint.run'),
    tsc: path.join(dir, 'tsc.run'), prettier: path.join(dir, 'prettier.run'),
    nodeRaw: path.join(dir, 'hello-node-raw.run'), eslintRaw: path.join(dir, 'eslint-raw.run'),
  };
  ctx.log('launch: building the hello, eslint, tsc and prettier bundles');
  let t = Date.now();
  const took = () => `${((Date.now() - t) / 1000).toFixed(1)} s`;
  buildBundle(ctx, apps.node, bundles.node);
  buildBundle(ctx, apps.shell, bundles.shell);
  buildBundle(ctx, eslint, bundles.eslint);
  buildBundle(ctx, tsc, bundles.tsc);
  buildBundle(ctx, prettier, bundles.prettier);
  // The same, stored as before compression: what the loader and the compressed image cost.
  const rawArgs = ['--compression', 'none', '--runtime-compression', 'none'];
  buildBundle(ctx, apps.node, bundles.nodeRaw, rawArgs);
  buildBundle(ctx, eslint, bundles.eslintRaw, rawArgs);
  const sizes: Table = {
    title: 'Bundle sizes (bytes): compressed (the default) and stored raw',
    header: ['bundle', 'compressed', 'raw', 'ratio'],
    rows: [['hello-node', bundles.node, bundles.nodeRaw], ['eslint', bundles.eslint, bundles.eslintRaw]].map(([name, c, r]) => {
      const [cs, rs] = [c!, r!].map((f) => fs.statSync(f).size);
      return [name!, String(cs), String(rs), (cs! / rs!).toFixed(3)];
    }),
  };

  // Direct runs on the bundles' own Node, not the bench's: a difference is then the bundle's.
  const node = bundledNode(ctx, bundles.node);
  ctx.log(`launch: direct runs on ${node}`);
  const home = path.join(ctx.work, 'launch-home');
  // A fresh mount at every launch (the linger off), as before the mount server existed.
  const env = scratchEnv(home, { OVERPACK_LINGER: '0' });
  const linger = lingerHome(ctx);
  const cache = path.join(env.XDG_CACHE_HOME!, 'overpack');
  const eslintJs = path.join(eslint, 'node_modules', 'eslint', 'bin', 'eslint.js');
  const tscJs = path.join(tsc, 'node_modules', 'typescript', 'bin', 'tsc');
  const prettierJs = path.join(prettier, 'node_modules', 'prettier', 'bin', 'prettier.cjs');
  const inSource = { cwd: source.dir };
  const cases: Case[] = [
    { id: 'node hello.js', argv: [node, path.join(apps.node, 'hello.js')] },
    { id: 'hello-node.run', argv: [bundles.node], ref: 'node hello.js' },
    { id: 'hello-node.run, first launch', argv: [bundles.node], ref: 'node hello.js', first: true },
    { id: 'hello-node-raw.run', argv: [bundles.nodeRaw], ref: 'node hello.js' },
    { id: 'hello-node-raw.run, first launch', argv: [bundles.nodeRaw], ref: 'node hello.js', first: true },
    { id: 'sh hello.sh', argv: ['/bin/sh', path.join(apps.shell, 'hello.sh')] },
    { id: 'hello-shell.run', argv: [bundles.shell], ref: 'sh hello.sh' },
    { id: 'hello-shell.run, first launch', argv: [bundles.shell], ref: 'sh hello.sh', first: true },
    { id: 'node eslint.js --version', argv: [node, eslintJs, '--version'] },
    { id: 'eslint.run --version', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version' },
    { id: 'eslint.run --version, first launch', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', first: true },
    { id: 'eslint-raw.run --version', argv: [bundles.eslintRaw, '--version'], ref: 'node eslint.js --version' },
    // Real work on one file: what a user runs in an editor's save hook or a pre-commit hook.
    { id: `node eslint.js ${source.file}`, argv: [node, eslintJs, source.file], ...inSource },
    { id: `eslint.run ${source.file}`, argv: [bundles.eslint, source.file], ref: `node eslint.js ${source.file}`, ...inSource },
    { id: 'node tsc --version', argv: [node, tscJs, '--version'] },
    { id: 'tsc.run --version', argv: [bundles.tsc, '--version'], ref: 'node tsc --version' },
    { id: `node prettier.cjs ${source.file}`, argv: [node, prettierJs, source.file], ...inSource },
    { id: `prettier.run ${source.file}`, argv: [bundles.prettier, source.file], ref: `node prettier.cjs ${source.file}`, ...inSource },
    // The linger on (the default): a launch that starts the mount server, and a relaunch that joins it.
    { id: 'hello-node.run, starting a mount server', argv: [bundles.node], ref: 'node hello.js', newServer: true },
    { id: 'hello-node.run, relaunch', argv: [bundles.node], ref: 'node hello.js', relaunch: true },
    { id: 'hello-shell.run, relaunch', argv: [bundles.shell], ref: 'sh hello.sh', relaunch: true },
    { id: 'hello-node.run, relaunch through the runtime', argv: [bundles.node], ref: 'node hello.js', relaunch: true, viaRuntime: true },
    { id: 'hello-shell.run, relaunch through the runtime', argv: [bundles.shell], ref: 'sh hello.sh', relaunch: true, viaRuntime: true },
    { id: 'eslint.run --version, starting a mount server', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', newServer: true },
    { id: 'eslint.run --version, relaunch', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', relaunch: true },
    { id: 'eslint.run --version, relaunch through the runtime', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', relaunch: true, viaRuntime: true },
    { id: `eslint.run ${source.file}, relaunch`, argv: [bundles.eslint, source.file], ref: `node eslint.js ${source.file}`, relaunch: true, ...inSource },
    { id: 'tsc.run --version, relaunch', argv: [bundles.tsc, '--version'], ref: 'node tsc --version', relaunch: true },
    { id: `prettier.run ${source.file}, relaunch`, argv: [bundles.prettier, source.file], ref: `node prettier.cjs ${source.file}`, relaunch: true, ...inSource },
    // After the linger ran out: the loader starts the mount server while the runtime starts up.
    { id: 'hello-node.run, after the linger', argv: [bundles.node], ref: 'node hello.js', afterLinger: true },
    { id: 'hello-node.run, after the linger, server started by the runtime', argv: [bundles.node], ref: 'node hello.js', afterLinger: true, viaRuntime: true },
    { id: 'eslint.run --version, after the linger', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', afterLinger: true },
    { id: 'eslint.run --version, after the linger, server started by the runtime', argv: [bundles.eslint, '--version'], ref: 'node eslint.js --version', afterLinger: true, viaRuntime: true },
  ];
  const lingerEnv = (c: Case) => (c.afterLinger ? linger.after : linger.env);
  const envOf = (c: Case) => (c.newServer ? linger.fresh() : c.relaunch || c.afterLinger ? (c.viaRuntime ? { ...lingerEnv(c), OVERPACK_EXPRESS: '0' } : lingerEnv(c)) : (c.env ?? env));
  // NODE_EXTRA_CA_CERTS makes every Node start parse the whole CA file (about 25 ms here): the
  // runtime pays it once more than `node hello.js` does. Shown both ways when it is set.
  if (process.env.NODE_EXTRA_CA_CERTS) {
    const clean = { ...env };
    delete clean.NODE_EXTRA_CA_CERTS;
    cases.push(
      { id: 'node hello.js, no NODE_EXTRA_CA_CERTS', argv: [node, path.join(apps.node, 'hello.js')], env: clean },
      { id: 'hello-node.run, no NODE_EXTRA_CA_CERTS', argv: [bundles.node], env: clean, ref: 'node hello.js, no NODE_EXTRA_CA_CERTS' },
    );
  }
  const reps = ctx.reps ?? (ctx.quick ? 3 : 21);
  const runs: Record<string, number[]> = {};
  ctx.log(`launch: bundles built in ${took()}`);
  t = Date.now();
  for (const c of cases) timeRun(c.argv, { env: envOf(c), cwd: c.cwd }); // warm-up (and the first build of the caches)
  ctx.log(`launch: warm-up runs in ${took()}`);
  t = Date.now();
  for (let r = 0; r < reps; r++) {
    // A first launch empties the cache: every warm case after it gets an untimed run first, or
    // it would be timed as a first launch too.
    let wiped = false;
    for (const c of cases) {
      if (c.first) fs.rmSync(cache, { recursive: true, force: true });
      else if (wiped || c.relaunch) timeRun(c.argv, { env: envOf(c), cwd: c.cwd });
      if (c.afterLinger) linger.waitGone();
      wiped ||= c.first === true;
      (runs[c.id] ??= []).push(timeRun(c.argv, { env: envOf(c), cwd: c.cwd }));
    }
  }
  linger.stop();
  ctx.log(`launch: ${reps} repetitions of ${cases.length} commands in ${took()} (${cases.map((c) => `${c.id} ${(runs[c.id]!.reduce((a, b) => a + b, 0) / 1000).toFixed(1)}`).join(', ')})`);
  t = Date.now();
  const med = (id: string) => median(runs[id] ?? []);
  const launch: Table = {
    title: `Launch (median of ${reps}, interleaved; first launch: $XDG_CACHE_HOME/overpack removed before each run; the others with OVERPACK_LINGER=0 (a fresh mount each time) except: relaunch, run right after an untimed run of the same command, in its lingering mount (by the loader's express relaunch, or through the runtime with OVERPACK_EXPRESS=0); starting a mount server, the linger on with no server running yet; after the linger, the linger 0.3 s and the previous server gone, so the loader starts one while the runtime starts up, or the runtime starts it with OVERPACK_EXPRESS=0)`,
    header: ['command', 'ms', 'vs direct run', 'first / warm'],
    rows: cases.map((c) => {
      const m = med(c.id);
      const warm = c.first ? med(c.id.replace(', first launch', '')) : NaN;
      return [c.id, ms(m, 1), c.ref ? `+${ms(m - med(c.ref), 1)} ms (${(m / med(c.ref)).toFixed(2)}x)` : '', c.first ? (m / warm).toFixed(2) : ''];
    }),
    notes: process.env.NODE_EXTRA_CA_CERTS ? ['NODE_EXTRA_CA_CERTS is set here: each Node start-up reads and parses that file (the runtime too)'] : [],
  };

  // Memory of the serving runtime: right after mounting, and after walking and reading the tree.
  const mem: Array<{ image: string; files: number; afterMount: number; afterWork: number; peak: number; readyMs: number }> = [];
  const images: Array<[string, string, string]> = [['hello-shell.run', bundles.shell, 'find . -type f | wc -l']];
  images.push(['eslint.run', bundles.eslint, 'find . -type f -printf "%s\\n" | wc -l && tar cf - . | cat > /dev/null']);
  if (ctx.treeBundle) images.push(['tree.run (bench tree)', ctx.treeBundle, 'find . -type f -printf "%s\\n" | wc -l && tar cf - --exclude=./big.bin . | cat > /dev/null && cat big.bin > /dev/null']);
  for (const [name, bundle, work] of images) {
    const served = await serveBundle(bundle, env);
    try {
      const afterMount = processMemory(served.pid).rss;
      const r = spawnSync('sh', ['-c', work], { cwd: served.mountPoint, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${work} in ${served.mountPoint} failed: ${r.stderr}`);
      const after = processMemory(served.pid);
      mem.push({ image: name, files: Number(r.stdout.split('\n')[0]), afterMount, afterWork: after.rss, peak: after.hwm, readyMs: served.readyMs });
    } finally {
      await served.stop();
    }
  }
  ctx.log(`launch: serving memory in ${took()}`);
  const memory: Table = {
    title: 'Runtime memory while serving (RSS of the bundle process, --overpack-mount)',
    header: ['image', 'files', 'mounted in ms', 'RSS after mount MiB', 'RSS after find + tar MiB', 'peak MiB'],
    rows: mem.map((m) => [m.image, String(m.files), ms(m.readyMs), mib(m.afterMount), mib(m.afterWork), mib(m.peak)]),
  };
  const json: Record<string, unknown> = {
    reps,
    launch: Object.fromEntries(cases.map((c) => [c.id, { median: med(c.id), runs: runs[c.id], ref: c.ref ?? null, overheadMs: c.ref ? med(c.id) - med(c.ref) : null }])),
    memory: mem,
  };
  return { id: 'launch', tables: [sizes, launch, memory], json };
}
