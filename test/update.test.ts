/**
 * Updates (runtime/update/): real bundles of the eslint app built and signed by the CLI, served
 * by a separate HTTP server process with range support (test/range-server.ts) on 127.0.0.1
 * that reports every byte it sends; `overpack update` and `./app.run --overpack-update` run as
 * their own processes. Checked: only the changed frames, the index and the tree are fetched for
 * a one-file change (no runtime byte), a new runtime is fetched, a bundle signed by another key
 * is refused unless that key is named, an update cut by a dying server resumes, a flipped byte
 * is refused, a server without ranges gives a full (checked) download, proxies and NO_PROXY,
 * and the result is byte for byte the new build.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { readImage } from '../runtime/image/format.js';
import { bypassesProxy, proxyFor } from '../runtime/update/proxy.js';
import { compareVersions } from '../runtime/update/version.js';
import { CLI, ROOT, isolatedEnv, mountsUnder, tempDir } from './helpers.js';

const base = tempDir('update');
const home = path.join(base, 'home');
const env = isolatedEnv(home);
for (const k of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY', 'no_proxy', 'NO_PROXY']) delete env[k];
const buildEnv = { ...process.env, NO_COLOR: '1' };
const served = path.join(base, 'www');
const SERVER = path.join(ROOT, 'dist', 'test', 'range-server.js');
const CHANGED = '/node_modules/eslint/package.json';
const KiB = 1024;
const MiB = 1024 * 1024;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a process without blocking this one (the servers are children of this process too). */
function runAsync(cmd: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}, timeoutMs = 180000): Promise<Result> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...env, ...extraEnv }, cwd: base, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

interface Server {
  port: number;
  proc: ChildProcess;
  events: Array<Record<string, unknown>>;
  /** Body bytes sent since `mark` (an index into events). */
  bytesSince(mark: number): number;
  rangesSince(mark: number): string[];
  stop(): Promise<void>;
  exited: Promise<void>;
}

async function startServer(args: string[], port = 0): Promise<Server> {
  const proc = spawn(process.execPath, [SERVER, '--root', served, '--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events: Array<Record<string, unknown>> = [];
  let buf = '';
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const listening = new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const e = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        events.push(e);
        if (e.event === 'listening') resolve(e.port as number);
      }
    });
    void exited.then(() => reject(new Error('the test server exited before listening')));
  });
  const p = await listening;
  return {
    port: p,
    proc,
    events,
    exited,
    bytesSince: (mark) => events.slice(mark).reduce((n, e) => n + (typeof e.bytes === 'number' ? e.bytes : 0), 0),
    rangesSince: (mark) => events.slice(mark).filter((e) => e.path).map((e) => String(e.range)),
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function cli(args: string[]): ReturnType<typeof spawnSync> & { stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: buildEnv, timeout: 300000 });
}

function build(app: string, out: string, args: string[]): void {
  const r = cli(['build', app, '-o', out, ...args]);
  assert.equal(r.status, 0, r.stderr);
}

/** Stored bytes of the frames holding `file` in `bundle`. */
function framesOf(bundle: string, file: string): { bytes: number; ranges: Array<[number, number]> } {
  const img = readImage(bundle);
  try {
    const r = img.tree.lookup(file)!;
    const seen = new Map<number, number>();
    for (let k = 0; k * MiB < r.size || (k === 0 && r.size === 0); k++) {
      const ref = img.tree.pieceRef(r, k);
      seen.set(ref.position, ref.storedLength);
    }
    return { bytes: [...seen.values()].reduce((a, b) => a + b, 0), ranges: [...seen].map(([p, l]) => [p, p + l]) };
  } finally {
    fs.closeSync(img.fd);
  }
}

function layout(bundle: string): { imageStart: number; index: number; tree: number; size: number } {
  const img = readImage(bundle);
  fs.closeSync(img.fd);
  return { imageStart: img.footer.imageStart, index: img.footer.indexLength, tree: img.index.tree.length, size: img.size };
}

/** Ranges (from the server's log) that touch [0, end). */
function touching(ranges: string[], size: number, end: number): string[] {
  return ranges.filter((r) => {
    if (r === 'null') return true;
    const m = /^bytes=(\d*)-(\d*)$/.exec(r)!;
    const start = m[1] === '' ? size - Number(m[2]) : Number(m[1]);
    return start < end;
  });
}

describe('updates', { timeout: 1500000 }, () => {
  const app = path.join(base, 'app');
  const keys = { one: path.join(base, 'keys', 'one'), two: path.join(base, 'keys', 'two') };
  const b = { v1: path.join(base, 'v1.run'), v2: path.join(base, 'v2.run'), v2rt: path.join(base, 'v2-runtime.run'), v2other: path.join(base, 'v2-other-key.run') };
  let server: Server;
  let port = 0;
  let keyTwo = '';
  let fullRuntimeUpdate = 0;
  const figures: Record<string, unknown> = {};
  const url = () => `http://127.0.0.1:${port}/latest.run`;
  const serve = (bundle: string) => fs.copyFileSync(bundle, path.join(served, 'latest.run'));
  const target = (name: string, from = b.v1) => {
    const t = path.join(base, `${name}.run`);
    fs.copyFileSync(from, t);
    fs.chmodSync(t, 0o750);
    return t;
  };
  const update = (t: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}) => runAsync(process.execPath, [CLI, 'update', t, ...args], extraEnv);

  before(async () => {
    fs.mkdirSync(served, { recursive: true });
    fs.mkdirSync(path.dirname(keys.one), { recursive: true });
    for (const k of Object.values(keys)) assert.equal(cli(['keygen', k]).status, 0);
    keyTwo = rawKey(`${keys.two}.pub`).toString('base64');
    server = await startServer([]);
    port = server.port;
    fs.mkdirSync(app, { recursive: true });
    const npm = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', app, 'eslint@9'], { encoding: 'utf8', timeout: 300000 });
    assert.equal(npm.status, 0, npm.stderr);
    const manifest = { name: 'eslint-app', version: '1.0.0', entrypoint: 'node_modules/eslint/bin/eslint.js', update: { url: url() } };
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify(manifest));
    build(app, b.v1, ['--sign', `${keys.one}.key`]);
    // v2: one file of the app changed (eslint's package.json: `eslint --version` shows it).
    const pkgFile = path.join(app, CHANGED);
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8')) as { version: string };
    pkg.version = `${pkg.version}-update2`;
    fs.rmSync(pkgFile); // npm may hard-link from its cache
    fs.writeFileSync(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`);
    figures.newVersion = pkg.version;
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ ...manifest, version: '2.0.0' }));
    build(app, b.v2, ['--sign', `${keys.one}.key`]);
    build(app, b.v2rt, ['--sign', `${keys.one}.key`, '--runtime-compression', 'zstd:3']);
    build(app, b.v2other, ['--sign', `${keys.two}.key`]);
  });

  after(async () => {
    await server?.stop();
    assert.deepEqual(mountsUnder(home), [], 'no mount left behind');
    process.stderr.write(`update figures: ${JSON.stringify(figures)}\n`);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('v1 -> v2 with one file changed: fetches its frames, the index and the tree only (no runtime byte), and gives v2 byte for byte', async () => {
    const t = target('one-file');
    const upper = path.join(home, '.local', 'share', 'overpack', 'eslint-app', 'upper');
    fs.mkdirSync(upper, { recursive: true });
    fs.writeFileSync(path.join(upper, 'kept.txt'), 'user data');
    serve(b.v2);
    const mark = server.events.length;
    const r = await update(t);
    assert.equal(r.status, 0, r.stderr);
    const got = server.bytesSince(mark);
    const l = layout(b.v2);
    // The changed file, and overpack.json (the manifest is one of the app's files: its version changed).
    const changed = [framesOf(b.v2, CHANGED), framesOf(b.v2, '/overpack.json')];
    const changedBytes = changed.reduce((n, c) => n + c.bytes, 0);
    const bound = changedBytes + l.index + l.tree + 64 * KiB;
    Object.assign(figures, { oneFile: { fetched: got, bound, changedFrames: changedBytes, index: l.index, tree: l.tree, bundle: l.size, requests: server.rangesSince(mark).length } });
    assert.ok(got <= bound, `fetched ${got} bytes, at most ${bound} expected (frames ${changedBytes} + index ${l.index} + tree ${l.tree} + 64 KiB)`);
    assert.deepEqual(touching(server.rangesSince(mark), l.size, l.imageStart), [], 'no request touches the runtime');
    const treeAt = l.size - l.tree - l.index - 72 - 120;
    const frames = changed.flatMap((c) => c.ranges);
    for (const r of server.rangesSince(mark)) {
      const [, s, e] = /^bytes=(\d*)-(\d*)$/.exec(r)!;
      if (s === '' || Number(s) >= treeAt) continue; // the end: footer, signature, index, tree
      const inFrame = (x: number) => frames.some(([fs0, fe]) => x >= fs0 && x < fe);
      assert.ok(inFrame(Number(s)) && inFrame(Number(e)), `${r} starts and ends in frames of the changed files (${JSON.stringify(frames)})`);
    }
    assert.equal(sha(t), sha(b.v2), 'the result is the new build, byte for byte');
    assert.equal(fs.statSync(t).mode & 0o777, 0o750, 'mode kept');
    assert.ok(!fs.existsSync(`${t}.part`) && !fs.existsSync(`${t}.part.json`), 'no part left');
    assert.equal(fs.readFileSync(path.join(upper, 'kept.txt'), 'utf8'), 'user data', 'preserved data untouched');
    const v = await runAsync(t, ['--version']);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stdout.trim(), `v${figures.newVersion as string}`);
  });

  it('v2 with a new runtime: the runtime is fetched', async () => {
    const t = target('runtime');
    serve(b.v2rt);
    const mark = server.events.length;
    const r = await update(t);
    assert.equal(r.status, 0, r.stderr);
    const l = layout(b.v2rt);
    fullRuntimeUpdate = server.bytesSince(mark);
    figures.newRuntime = { fetched: fullRuntimeUpdate, front: l.imageStart, bundle: l.size };
    assert.ok(fullRuntimeUpdate >= l.imageStart, `fetched ${fullRuntimeUpdate} bytes, the runtime alone is ${l.imageStart}`);
    assert.ok(fullRuntimeUpdate < l.size, 'the app files were still copied');
    assert.match(r.stderr, /new runtime/);
    assert.equal(sha(t), sha(b.v2rt));
  });

  it('v2 signed by another key: refused (v1 unchanged), accepted when that key is named', async () => {
    const t = target('other-key');
    serve(b.v2other);
    const before = sha(t);
    const mark = server.events.length;
    const r = await update(t);
    assert.equal(r.status, 77, r.stderr);
    assert.match(r.stderr, /signed by key .* not by this bundle's key .*--accept-key/s);
    assert.equal(sha(t), before, 'v1 intact');
    assert.ok(!fs.existsSync(`${t}.part`), 'nothing assembled');
    assert.ok(server.bytesSince(mark) <= 64 * KiB, 'refused after the first request');
    const wrong = await update(t, ['--accept-key', rawKey(`${keys.one}.pub`).toString('base64')]);
    assert.equal(wrong.status, 77, 'naming another key does not help');
    const ok = await update(t, ['--accept-key', `${keys.two}.pub`]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(sha(t), sha(b.v2other));
    const t2 = target('other-key-base64');
    const ok2 = await update(t2, ['--accept-key', keyTwo]);
    assert.equal(ok2.status, 0, ok2.stderr);
    assert.equal(sha(t2), sha(b.v2other));
  });

  it('a server killed mid-download: the next update resumes and completes', async () => {
    const t = target('resume');
    serve(b.v2rt);
    await server.stop();
    const dying = await startServer(['--die-after', String(6 * MiB)], port);
    const first = await update(t);
    await dying.exited;
    assert.equal(first.status, 75, first.stderr);
    assert.match(first.stderr, /run the update again/);
    assert.equal(sha(t), sha(b.v1), 'v1 intact');
    assert.ok(fs.existsSync(`${t}.part`) && fs.existsSync(`${t}.part.json`), 'the part is kept');
    server = await startServer([], port);
    const mark = server.events.length;
    const second = await update(t);
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stderr, /resuming an interrupted update/);
    const again = server.bytesSince(mark);
    figures.resume = { firstRun: dying.bytesSince(0), secondRun: again, fullRedo: fullRuntimeUpdate };
    assert.ok(again < fullRuntimeUpdate - 4 * MiB, `the second run fetched ${again} bytes, a full redo ${fullRuntimeUpdate}`);
    assert.equal(sha(t), sha(b.v2rt));
    assert.ok(!fs.existsSync(`${t}.part`) && !fs.existsSync(`${t}.part.json`));
  });

  it('a flipped byte in the served bundle: refused, v1 intact, the download discarded', async () => {
    const t = target('flipped');
    const bad = fs.readFileSync(b.v2);
    const [[s, e]] = framesOf(b.v2, CHANGED).ranges as [[number, number]];
    const at = Math.floor((s + e) / 2);
    bad[at] = bad[at]! ^ 0x40;
    fs.writeFileSync(path.join(served, 'latest.run'), bad);
    const r = await update(t);
    assert.equal(r.status, 65, r.stderr);
    assert.match(r.stderr, /does not check out/);
    assert.equal(sha(t), sha(b.v1), 'v1 intact');
    assert.ok(!fs.existsSync(`${t}.part`) && !fs.existsSync(`${t}.part.json`), 'the damaged download is not kept');
  });

  it('a server without range support: a full download, still checked', async () => {
    const t = target('no-ranges');
    serve(b.v2);
    await server.stop();
    server = await startServer(['--no-ranges'], port);
    try {
      const mark = server.events.length;
      const r = await update(t);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /does not answer range requests/);
      assert.equal(server.bytesSince(mark), layout(b.v2).size);
      assert.equal(sha(t), sha(b.v2));
      const bad = fs.readFileSync(b.v2);
      bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 1;
      fs.writeFileSync(path.join(served, 'latest.run'), bad);
      const t2 = target('no-ranges-bad');
      const refused = await update(t2);
      assert.equal(refused.status, 65, refused.stderr);
      assert.equal(sha(t2), sha(b.v1));
    } finally {
      await server.stop();
      server = await startServer([], port);
    }
  });

  it('./v1.run --overpack-update from inside the bundle, and --overpack-check', async () => {
    const t = target('self');
    serve(b.v2);
    const check = await runAsync(t, ['--overpack-update', '--overpack-check']);
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stderr, /update available: eslint-app 1\.0\.0 -> 2\.0\.0/);
    const noYes = await runAsync(t, ['--overpack-update']);
    assert.equal(noYes.status, 2, noYes.stderr);
    assert.match(noYes.stderr, /--overpack-yes/);
    const r = await runAsync(t, ['--overpack-update', '--overpack-yes']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(sha(t), sha(b.v2));
    const after = await runAsync(t, ['--overpack-update', '--overpack-check']);
    assert.equal(after.status, 1, after.stderr);
    assert.match(after.stderr, /up to date/);
    const v = await runAsync(t, ['--overpack-version']);
    assert.match(v.stdout, /^eslint-app 2\.0\.0/);
  });

  it('a running instance keeps running on the old bundle while it is replaced', async () => {
    const t = target('running');
    serve(b.v2);
    const instance = spawn(t, ['--overpack-mount', '--overpack-discard'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<void>((r) => instance.on('exit', () => r()));
    try {
      const mp = await new Promise<string>((resolve, reject) => {
        let out = '';
        instance.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('\n')) resolve(out.split('\n')[0]!);
        });
        instance.on('exit', (code) => reject(new Error(`--overpack-mount exited with ${code}`)));
      });
      const r = await update(t);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(sha(t), sha(b.v2));
      // Read from another process (this one does not serve the mount, but stays out of it anyway).
      const old = await runAsync('cat', [path.join(mp, CHANGED)]);
      assert.equal(old.status, 0, old.stderr);
      assert.doesNotMatch(old.stdout, /-update2/, 'the running instance still serves the old image');
    } finally {
      instance.kill('SIGTERM');
      await exited;
    }
    assert.deepEqual(mountsUnder(home), []);
  });

  it('up to date, --check, --from a file, no network and a missing bundle each say so with their own exit code', async () => {
    serve(b.v2);
    const t = target('latest', b.v2);
    const same = await update(t);
    assert.equal(same.status, 0, same.stderr);
    assert.match(same.stderr, /up to date/);
    assert.equal((await update(t, ['--check'])).status, 1);
    const old = target('check-old');
    assert.equal((await update(old, ['--check'])).status, 0);
    assert.equal(sha(old), sha(b.v1), '--check changes nothing');
    const fromFile = await update(old, ['--from', b.v2]);
    assert.equal(fromFile.status, 0, fromFile.stderr);
    assert.equal(sha(old), sha(b.v2));
    const closed = await freePort();
    const offline = await update(target('offline'), ['--from', `http://127.0.0.1:${closed}/latest.run`]);
    assert.equal(offline.status, 68, offline.stderr);
    assert.match(offline.stderr, /cannot reach 127\.0\.0\.1:\d+: the connection was refused/);
    const missing = await update(target('missing'), ['--from', `http://127.0.0.1:${port}/nothing.run`]);
    assert.equal(missing.status, 69, missing.stderr);
    assert.match(missing.stderr, /404/);
  });

  it('a progress bar with bytes and rate on a terminal (no colour with NO_COLOR), none elsewhere', async () => {
    serve(b.v2rt);
    const t = target('tty');
    const quoted = [process.execPath, CLI, 'update', t].map((a) => `'${a}'`).join(' ');
    const r = await runAsync('script', ['-qefc', quoted, '/dev/null'], { NO_COLOR: '1', COLUMNS: '100' });
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /\r\x1b\[Kdownloading \d+(\.\d)? (B|KiB|MiB) \/ \d+\.\d MiB \[[#.]+\] +\d+% [\d.]+ (B|KiB|MiB)\/s/, 'bytes, bar, percent, rate');
    assert.doesNotMatch(r.stdout, /\x1b\[3\dm/, 'no colour with NO_COLOR');
    assert.equal(sha(t), sha(b.v2rt));
    const plain = await update(target('no-tty'));
    assert.equal(plain.status, 0, plain.stderr);
    assert.doesNotMatch(plain.stderr, /downloading|\r/, 'no bar without a terminal');
    const shellApp = path.join(base, 'no-url-app');
    fs.cpSync(path.join(ROOT, 'templates', 'shell'), shellApp, { recursive: true });
    const noUrl = path.join(base, 'no-url.run');
    build(shellApp, noUrl, []);
    const none = await update(noUrl);
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /names no update URL.*--from/);
  });

  it('an older version is refused (a replayed old bundle) unless allowed', async () => {
    const t = target('downgrade', b.v2);
    const r = await update(t, ['--from', b.v1]);
    assert.equal(r.status, 77, r.stderr);
    assert.match(r.stderr, /version 1\.0\.0, older than this one \(2\.0\.0\); refused.*--allow-downgrade/s);
    assert.equal(sha(t), sha(b.v2));
    const ok = await update(t, ['--from', b.v1, '--allow-downgrade']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(sha(t), sha(b.v1));
    assert.equal(compareVersions('1.10.0', '1.9.2'), 1);
    assert.ok(compareVersions('2.0.0-rc.1', '2.0.0')! < 0);
    assert.ok(compareVersions('2.0.0-rc.2', '2.0.0-rc.10')! < 0);
    assert.equal(compareVersions('v3', '3.0.0'), 0);
    assert.equal(compareVersions('2024-11 build', '1.0'), null);
  });

  it('goes through HTTP_PROXY, and around it for NO_PROXY hosts', async () => {
    serve(b.v2);
    const proxy = await startServer(['--proxy']);
    try {
      const t = target('proxied');
      const r = await update(t, [], { HTTP_PROXY: `http://127.0.0.1:${proxy.port}` });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(sha(t), sha(b.v2));
      assert.ok(proxy.events.some((e) => e.proxy === 'get' && String(e.url).startsWith(`http://127.0.0.1:${port}/latest.run`)), 'the requests went through the proxy');
      const dead = await freePort();
      const direct = await update(target('no-proxy'), ['--check'], { HTTP_PROXY: `http://127.0.0.1:${dead}`, NO_PROXY: 'localhost,127.0.0.1' });
      assert.equal(direct.status, 0, direct.stderr);
      const viaDead = await update(target('dead-proxy'), ['--check'], { HTTP_PROXY: `http://127.0.0.1:${dead}` });
      assert.equal(viaDead.status, 68, viaDead.stderr);
      assert.match(viaDead.stderr, /through the proxy/);
    } finally {
      await proxy.stop();
    }
    assert.equal(bypassesProxy('api.example.org', 443, '.example.org'), true);
    assert.equal(bypassesProxy('example.org', 443, 'example.org:443'), true);
    assert.equal(bypassesProxy('example.org', 80, 'example.org:443'), false);
    assert.equal(bypassesProxy('10.1.2.3', 80, '10.0.0.0/8'), true);
    assert.equal(bypassesProxy('notexample.org', 80, 'example.org'), false);
    assert.equal(bypassesProxy('anything', 80, '*'), true);
    assert.equal(proxyFor(new URL('https://h.example/x'), { https_proxy: 'proxy:3128' })?.port, 3128);
    assert.equal(proxyFor(new URL('http://h.example/x'), { https_proxy: 'proxy:3128' }), null);
  });

  it('https through an HTTPS_PROXY CONNECT tunnel, the server certificate checked', async () => {
    const cert = path.join(base, 'tls-cert.pem');
    const key = path.join(base, 'tls-key.pem');
    const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    assert.equal(ssl.status, 0, `openssl makes the test certificate: ${ssl.stderr}`);
    serve(b.v2);
    const tlsServer = await startServer(['--tls-cert', cert, '--tls-key', key]);
    const proxy = await startServer(['--proxy']);
    try {
      const from = `https://127.0.0.1:${tlsServer.port}/latest.run`;
      const t = target('https');
      const untrusted = await update(t, ['--from', from], { HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` });
      assert.equal(untrusted.status, 69, untrusted.stderr);
      assert.match(untrusted.stderr, /certificate/);
      assert.equal(sha(t), sha(b.v1));
      const r = await update(t, ['--from', from], { HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`, NODE_EXTRA_CA_CERTS: cert });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(sha(t), sha(b.v2));
      assert.ok(proxy.events.some((e) => e.proxy === 'connect' && e.target === `127.0.0.1:${tlsServer.port}`), 'tunnelled through the proxy');
      assert.ok(tlsServer.bytesSince(0) < 256 * KiB, 'ranges over https too');
      const direct = target('https-direct');
      const d = await update(direct, ['--from', from], { NODE_EXTRA_CA_CERTS: cert });
      assert.equal(d.status, 0, d.stderr);
      assert.equal(sha(direct), sha(b.v2));
    } finally {
      await proxy.stop();
      await tlsServer.stop();
    }
  });

  it('a damaged old bundle: the frames it cannot give are fetched instead of copied', async () => {
    const t = target('damaged-old');
    serve(b.v2);
    const victim = '/node_modules/eslint/lib/linter/linter.js';
    const [[s, e]] = framesOf(t, victim).ranges as [[number, number]];
    const bytes = fs.readFileSync(t);
    const at = Math.floor((s + e) / 2);
    bytes[at] = bytes[at]! ^ 0x10;
    fs.writeFileSync(t, bytes);
    const r = await update(t);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /instead of copying them/);
    assert.equal(sha(t), sha(b.v2));
  });

  it('a bundle declaring update must be signed; update fields are checked like the others', () => {
    const r = cli(['build', app, '-o', path.join(base, 'unsigned.run')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /update: a bundle that updates itself must be signed.*--sign/s);
    const small = path.join(base, 'small');
    fs.mkdirSync(small);
    fs.writeFileSync(path.join(small, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    for (const [update, why] of [[{ url: 'ftp://x/y' }, /update\.url: must be an http:\/\/, https:\/\/ or file:\/\/ URL/], [{ uri: 'https://x/y' }, /update\.uri: unknown field \(known: url, channel\)/], [{ url: 'https://x/y', channel: 'a b' }, /update\.channel: letters, digits/]] as const) {
      fs.writeFileSync(path.join(small, 'overpack.json'), JSON.stringify({ name: 's', version: '1', entrypoint: 'run.sh', update }));
      const bad = cli(['build', small, '-o', path.join(base, 'small.run')]);
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, why);
    }
  });
});

/** The raw Ed25519 key of a .pub file (what `overpack keygen` prints). */
function rawKey(pubFile: string): Buffer {
  const der = createPublicKey(fs.readFileSync(pubFile, 'utf8')).export({ type: 'spki', format: 'der' });
  return der.subarray(der.length - 32);
}
