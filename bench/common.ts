/**
 * Shared by the launch, build and scale sections of the benchmark (bench/launch.ts,
 * bench/build-time.ts, bench/scale.ts): the context run.ts hands them, tables, timing, scratch
 * environments (the apps they bundle are in apps.ts). Every bundle run here gets HOME and the XDG
 * directories in a scratch directory, so nothing touches the real user's cache or data.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface BenchContext {
  root: string;
  /** dist/builder/cli.js */
  cli: string;
  /** the benchmark's data directory (/var/tmp/overpack-bench) */
  data: string;
  /** the node_modules tree run.ts builds (eslint, webpack, ...) */
  tree: string;
  /** a bundle of that tree (run.ts builds it), or null */
  treeBundle: string | null;
  /** a scratch directory for this run, removed afterwards */
  work: string;
  quick: boolean;
  /** --reps from the command line, if given */
  reps: number | null;
  log(msg: string): void;
}

export interface Table {
  title: string;
  header: string[];
  rows: string[][];
  notes?: string[];
}

export interface Section {
  id: string;
  tables: Table[];
  json: Record<string, unknown>;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

export function sh(cmd: string, cwd?: string): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

export function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

export function ms(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

export function formatTable(t: Table): string {
  const lines = [`${t.title}`, t.header.join(' | '), t.header.map(() => '---').join(' | '), ...t.rows.map((r) => r.join(' | '))];
  for (const n of t.notes ?? []) lines.push(`  ${n}`);
  return lines.join('\n');
}

/** HOME and XDG dirs inside `home` (created), the rest of our environment as is. */
export function scratchEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  fs.mkdirSync(home, { recursive: true });
  return { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, 'cache'), XDG_DATA_HOME: path.join(home, 'data'), NO_COLOR: '1', ...extra };
}

/** Wall time of one run of argv, in ms; throws with its stderr if it fails. */
export function timeRun(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const elapsed = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return elapsed;
}

/** The bundle builder's own cache (runtime executables), kept between benchmark runs. */
export function buildEnv(ctx: BenchContext): NodeJS.ProcessEnv {
  return scratchEnv(path.join(ctx.data, 'build-home'));
}

/**
 * The Node a bundle runs its app on, as the official binary the builder cached for it (the
 * bundle's own copy is the same Node, stripped of debug symbols, which does not change its
 * speed: bench/README.md, "Node lines and stripping"). The direct runs the launches are
 * compared with use it, so a difference is the bundle's, not another Node's.
 */
export function bundledNode(ctx: BenchContext, bundle: string): string {
  const r = spawnSync(bundle, ['--overpack-version'], { env: buildEnv(ctx), encoding: 'utf8' });
  const m = /node (v[\d.]+), (linux-[a-z0-9]+)/.exec(r.stdout);
  if (!m) throw new Error(`${bundle} --overpack-version did not name its Node: ${r.stdout}${r.stderr}`);
  const node = path.join(buildEnv(ctx).XDG_CACHE_HOME!, 'overpack', 'build', 'node', `${m[2]}-${m[1]!.slice(1)}`, 'bin', 'node');
  if (!fs.existsSync(node)) throw new Error(`the builder's cache has no ${node} for ${bundle}`);
  return node;
}

export function buildBundle(ctx: BenchContext, appDir: string, out: string, args: string[] = []): { ms: number; stderr: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [ctx.cli, 'build', appDir, '-o', out, ...args], { env: buildEnv(ctx), encoding: 'utf8' });
  const elapsed = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`overpack build ${appDir} failed: ${r.stderr}`);
  return { ms: elapsed, stderr: r.stderr };
}

/** Resident and peak memory of a process, in bytes, from /proc. */
export function processMemory(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

export interface Served {
  pid: number;
  mountPoint: string;
  /** ms from spawn to the mountpoint being announced */
  readyMs: number;
  stop(): Promise<void>;
}

/** `bundle --overpack-mount --overpack-discard`: resolves once it prints its mountpoint. */
export function serveBundle(bundle: string, env: NodeJS.ProcessEnv): Promise<Served> {
  const t = process.hrtime.bigint();
  const p = spawn(bundle, ['--overpack-mount', '--overpack-discard'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => reject(new Error(`${bundle} --overpack-mount exited with ${code}: ${err}`)));
    p.stdout.on('data', (d) => {
      out += d;
      if (!out.includes('\n')) return;
      const readyMs = Number(process.hrtime.bigint() - t) / 1e6;
      p.removeAllListeners('exit');
      const exited = new Promise<void>((r) => p.on('exit', () => r()));
      resolve({
        pid: p.pid!,
        mountPoint: out.split('\n')[0]!,
        readyMs,
        stop: async () => {
          p.kill('SIGTERM');
          await exited;
        },
      });
    });
  });
}

/** Mounts under `dir` (left by a failed run): detach them. */
export function unmountUnder(dir: string): void {
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp?.startsWith(dir)) continue;
    spawnSync('fusermount3', ['-uz', mp], { stdio: 'ignore' });
    if (fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mp} `)) spawnSync('umount', ['-l', mp], { stdio: 'ignore' });
  }
}
