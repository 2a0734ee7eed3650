/**
 * Update: bytes and time of `overpack update` against zsync (Debian's `zsync`: `zsyncmake` on
 * the new bundle, then `zsync -i old.run` from the same local HTTP server) for the same
 * changes of the eslint app: one file edited (eslint's package.json, and the manifest's
 * version), and the same with a new runtime (`--runtime-compression zstd:3`). Bytes are what
 * the server sent (test/range-server.ts counts every body byte), the .zsync file included for
 * zsync; time is the wall time of the command, the server on 127.0.0.1 (no network latency:
 * fewer requests would count for more on a real network).
 *
 * In run.ts: `npm run bench -- --quick --only update`. Alone (without the benchmark's data
 * tree): `node dist/bench/update.js [--reps N]` installs eslint once in its own directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildEnv, formatTable, have, median, ms, sh, type BenchContext, type Section, type Table } from './common.js';
import { eslintApp } from './apps.js';

interface Server {
  port: number;
  bytes(): number;
  requests(): number;
  stop(): Promise<void>;
}

function startServer(script: string, root: string): Promise<Server> {
  const p: ChildProcess = spawn(process.execPath, [script, '--root', root, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let bytes = 0;
  let requests = 0;
  let buf = '';
  return new Promise((resolve, reject) => {
    p.on('exit', () => reject(new Error('the range server exited')));
    p.stdout!.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const e = JSON.parse(buf.slice(0, nl)) as { event?: string; port?: number; bytes?: number };
        buf = buf.slice(nl + 1);
        if (e.event === 'listening') {
          resolve({
            port: e.port!,
            bytes: () => bytes,
            requests: () => requests,
            stop: () => new Promise<void>((r) => {
              p.removeAllListeners('exit');
              p.on('exit', () => r());
              p.kill('SIGTERM');
            }),
          });
        } else {
          bytes += e.bytes ?? 0;
          requests++;
        }
      }
    });
  });
}

/** Wall time and status of a command run without blocking the server (a child of this process). */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ ms: number; status: number | null; stderr: string; stdout: string }> {
  const t = process.hrtime.bigint();
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ ms: Number(process.hrtime.bigint() - t) / 1e6, status, stderr, stdout }));
  });
}

function build(ctx: BenchContext, app: string, out: string, args: string[]): void {
  const r = spawnSync(process.execPath, [ctx.cli, 'build', app, '-o', out, ...args], { env: buildEnv(ctx), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`overpack build failed: ${r.stderr}`);
}

export async function updateSection(ctx: BenchContext): Promise<Section> {
  const reps = ctx.reps ?? (ctx.quick ? 3 : 5);
  const script = path.join(ctx.root, 'dist', 'test', 'range-server.js');
  const dir = path.join(ctx.work, 'update');
  const www = path.join(dir, 'www');
  fs.mkdirSync(www, { recursive: true });
  const app = path.join(dir, 'app');
  // A copy of the eslint app (hard links), whose changed files are replaced, never written through.
  sh(`cp -al ${JSON.stringify(eslintApp(ctx))} ${JSON.stringify(app)}`);
  const key = path.join(dir, 'key');
  spawnSync(process.execPath, [ctx.cli, 'keygen', key], { env: buildEnv(ctx) });
  const server = await startServer(script, www);
  const env = { ...buildEnv(ctx), NO_COLOR: '1' };
  const url = `http://127.0.0.1:${server.port}/latest.run`;
  const json: Record<string, unknown> = { reps };
  const table: Table = {
    title: `Update of the eslint app bundle: overpack update vs zsync (median of ${reps}; local HTTP server, bytes as sent by it)`,
    header: ['change', 'bundle MiB', 'overpack: bytes', 'requests', 'ms', 'zsync: bytes (.zsync file)', 'requests', 'ms', 'full download bytes'],
    rows: [],
    notes: [],
  };
  try {
    const manifest = (version: string) => JSON.stringify({ name: 'bench-eslint', version, entrypoint: 'node_modules/eslint/bin/eslint.js', update: { url } });
    fs.rmSync(path.join(app, 'overpack.json'));
    fs.writeFileSync(path.join(app, 'overpack.json'), manifest('1'));
    const v1 = path.join(dir, 'v1.run');
    build(ctx, app, v1, ['--sign', `${key}.key`]);
    const pkgFile = path.join(app, 'node_modules', 'eslint', 'package.json');
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8')) as { version: string };
    fs.rmSync(pkgFile);
    fs.writeFileSync(pkgFile, `${JSON.stringify({ ...pkg, version: `${pkg.version}-bench` }, null, 2)}\n`);
    fs.rmSync(path.join(app, 'overpack.json'));
    fs.writeFileSync(path.join(app, 'overpack.json'), manifest('2'));
    const cases: Array<[string, string[]]> = [['one file edited', []], ['one file edited + new runtime (zstd:3)', ['--runtime-compression', 'zstd:3']]];
    for (const [name, args] of cases) {
      const v2 = path.join(dir, `v2-${cases.findIndex(([n]) => n === name)}.run`);
      build(ctx, app, v2, ['--sign', `${key}.key`, ...args]);
      fs.copyFileSync(v2, path.join(www, 'latest.run'));
      const zsyncFile = path.join(www, 'latest.run.zsync');
      fs.rmSync(zsyncFile, { force: true });
      const zmake = have('zsyncmake') ? spawnSync('zsyncmake', ['-u', 'latest.run', '-o', zsyncFile, path.join(www, 'latest.run')], { encoding: 'utf8' }) : null;
      const ours: Array<{ bytes: number; requests: number; ms: number }> = [];
      const theirs: Array<{ bytes: number; requests: number; ms: number; zsyncFile: number }> = [];
      for (let r = 0; r < reps; r++) {
        const t = path.join(dir, 'target.run');
        fs.copyFileSync(v1, t);
        let b0 = server.bytes();
        let q0 = server.requests();
        const u = await timed(process.execPath, [ctx.cli, 'update', t], env, dir);
        if (u.status !== 0 || !fs.readFileSync(t).equals(fs.readFileSync(v2))) throw new Error(`overpack update failed: ${u.stderr}`);
        ours.push({ bytes: server.bytes() - b0, requests: server.requests() - q0, ms: u.ms });
        if (zmake?.status === 0) {
          const out = path.join(dir, 'zsync-out.run');
          fs.rmSync(out, { force: true });
          fs.rmSync(`${out}.part`, { force: true });
          b0 = server.bytes();
          q0 = server.requests();
          const z = await timed('zsync', ['-q', '-i', v1, '-o', out, `http://127.0.0.1:${server.port}/latest.run.zsync`], env, dir);
          if (z.status !== 0 || !fs.readFileSync(out).equals(fs.readFileSync(v2))) throw new Error(`zsync failed (${z.status}): ${z.stderr}`);
          theirs.push({ bytes: server.bytes() - b0, requests: server.requests() - q0, ms: z.ms, zsyncFile: fs.statSync(zsyncFile).size });
        }
      }
      const m = (xs: Array<{ [k: string]: number }>, k: string) => median(xs.map((x) => x[k]!));
      const size = fs.statSync(v2).size;
      table.rows.push([
        name,
        (size / 1048576).toFixed(1),
        m(ours, 'bytes').toLocaleString('en'),
        String(m(ours, 'requests')),
        ms(m(ours, 'ms')),
        theirs.length ? `${m(theirs, 'bytes').toLocaleString('en')} (${theirs[0]!.zsyncFile.toLocaleString('en')})` : 'zsync missing',
        theirs.length ? String(m(theirs, 'requests')) : '-',
        theirs.length ? ms(m(theirs, 'ms')) : '-',
        size.toLocaleString('en'),
      ]);
      json[name] = { size, overpack: ours, zsync: theirs };
    }
    if (!have('zsync')) table.notes!.push('zsync missing: apt-get install -y zsync');
  } finally {
    await server.stop();
  }
  return { id: 'update', tables: [table], json };
}

// Alone: node dist/bench/update.js [--reps N]
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const data = path.join(process.env.OVERPACK_BENCH_DATA || '/var/tmp/overpack-bench', 'update-alone');
  const tree = path.join(data, 'tree');
  if (!fs.existsSync(path.join(tree, '.complete'))) {
    fs.mkdirSync(tree, { recursive: true });
    sh('npm init -y >/dev/null && npm install --no-audit --no-fund eslint@9 >/dev/null 2>&1', tree);
    fs.writeFileSync(path.join(tree, '.complete'), '');
  }
  const work = fs.mkdtempSync(path.join(data, 'run-'));
  const repsAt = process.argv.indexOf('--reps');
  const ctx: BenchContext = { root, cli: path.join(root, 'dist', 'builder', 'cli.js'), data, tree, treeBundle: null, work, quick: true, reps: repsAt > 0 ? Number(process.argv[repsAt + 1]) : null, log: (m) => process.stderr.write(`bench: ${m}\n`) };
  updateSection(ctx)
    .then((s) => {
      for (const t of s.tables) process.stdout.write(`${formatTable(t)}\n`);
      process.stdout.write(`${JSON.stringify(s.json)}\n`);
    })
    .finally(() => fs.rmSync(work, { recursive: true, force: true }));
}
