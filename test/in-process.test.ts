/**
 * A Node app in a mount another process serves runs in the launch's own process
 * (runtime/launcher/in-process.ts): the bundle's pid is the app's. What it sees and what its
 * caller sees must be what `node app.js` gives: compared with the bundle's own Node running the
 * same script directly. Real bundles with the linger on (the suite's default is 0), run as
 * separate processes; the mount server is the detached process the first launch starts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, mountsUnder, forceUnmount, tempDir, isolatedEnv, lockPid, pidAlive } from './helpers.js';

const base = tempDir('in-process');
const home = path.join(base, 'home');
const env: NodeJS.ProcessEnv = { ...isolatedEnv(home), OVERPACK_LINGER: undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Reports what a Node app sees; its first argument picks a behaviour. */
const APP = `const fs = require('node:fs');
const mode = process.argv[2];
console.log(JSON.stringify({ pid: process.pid, argv: process.argv.slice(2), exec: process.execPath, main: require.main === module,
  appdir: process.env.APPDIR, bundle: process.env.OVERPACK_BUNDLE, cwd: process.cwd(), pathHead: process.env.PATH.split(':')[0],
  nodeOnPath: fs.existsSync(process.env.PATH.split(':')[0] + '/node'),
  pre: globalThis.preloaded === true, private: Object.keys(process.env).filter((k) => /^OVERPACK_(SERVE|NODE_GATE|APP_NODE)/.test(k)) }));
fs.appendFileSync(process.env.APPDIR + '/runs.txt', 'x');
if (mode === 'code') process.exitCode = 7;
if (mode === 'throw') throw new Error('boom from the app');
if (mode === 'stdin') { let n = 0; process.stdin.on('data', (d) => (n += d.length)); process.stdin.on('end', () => console.log('stdin bytes ' + n)); }
if (mode === 'fork') require('node:child_process').fork(__filename, ['child']).on('exit', (c) => console.log('forked child exit ' + c));
if (mode === 'term-handler') { process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(3); }); console.log('ready'); setTimeout(() => {}, 30000); }
if (mode === 'term-default') { console.log('ready'); setTimeout(() => {}, 30000); }
`;

interface Seen {
  pid: number;
  argv: string[];
  exec: string;
  main: boolean;
  appdir: string;
  bundle: string;
  cwd: string;
  pathHead: string;
  nodeOnPath: boolean;
  pre: boolean;
  private: string[];
}

function build(dir: string, out: string): void {
  const r = spawnSync(process.execPath, [CLI, 'build', dir, '-o', out], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  assert.equal(r.status, 0, r.stderr);
}

function makeApp(dir: string, name: string, manifestExtra: object = {}, file = 'app.js', source = APP): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, file), source);
  fs.writeFileSync(path.join(dir, 'overpack.json'), JSON.stringify({ name, version: '1', entrypoint: file, overlay: { linger: 2 }, ...manifestExtra }));
}

function run(bundle: string, args: string[], extra: NodeJS.ProcessEnv = {}, input?: string): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extra }, cwd: base, timeout: 60000, input });
}

function seen(r: SpawnSyncReturns<string>): Seen {
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line, `no report in ${JSON.stringify(r.stdout)} (stderr ${r.stderr})`);
  return JSON.parse(line) as Seen;
}

const serverPid = (name: string) => lockPid(path.join(home, '.local/share/overpack', name));
const alive = pidAlive;

/** Stdout and stderr with the paths that differ between the two ways of running made equal. */
function normalized(text: string, appDir: string): string {
  return text.split(appDir).join('<APP>').replace(/"pid":\d+/g, '"pid":0').replace(/"(appdir|cwd|pathHead)":"[^"]*"/g, '"$1":""').replace(/"nodeOnPath":(true|false)/g, '"nodeOnPath":_').replace(/\n\s+at .*/g, '').replace(/\n+Node\.js v[\d.]+\n?$/, '');
}

describe('a Node app in a mount served by another process runs in the launch\'s own process', () => {
  const src = path.join(base, 'src');
  const bundle = path.join(base, 'app.run');
  let node = '';
  let directAppDir = '';
  const direct = (args: string[], extra: NodeJS.ProcessEnv = {}, input?: string) =>
    spawnSync(node, [path.join(src, 'app.js'), ...args], { encoding: 'utf8', env: { ...env, APPDIR: directAppDir, OVERPACK_BUNDLE: bundle, ...extra }, cwd: base, timeout: 60000, input });

  before(() => {
    fs.mkdirSync(home, { recursive: true });
    makeApp(src, 'inproc-app');
    build(src, bundle);
    const first = run(bundle, ['first']);
    assert.equal(first.status, 0, first.stderr);
    node = seen(first).exec;
    directAppDir = path.join(base, 'direct-appdir');
    fs.mkdirSync(directAppDir);
  });
  after(async () => {
    for (const name of ['inproc-app', 'inproc-esm', 'inproc-nodepath', 'inproc-bin', 'inproc-dotbin', 'inproc-flagged']) {
      const pid = serverPid(name);
      for (let i = 0; pid && alive(pid) && i < 150; i++) await sleep(100);
    }
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it('the first launch (starting the mount server) and a relaunch (joining it) are the app\'s process: its pid, argv, execPath and environment', () => {
    for (const label of ['relaunch', 'another relaunch']) {
      const r = run(bundle, ['a', 'b c']);
      assert.equal(r.status, 0, `${label}: ${r.stderr}`);
      const s = seen(r);
      assert.equal(s.pid, r.pid, `${label}: the app's pid is the bundle's`);
      assert.deepEqual(s.argv, ['a', 'b c']);
      assert.equal(s.main, true, 'the entrypoint is the main module');
      assert.equal(path.basename(s.exec), 'node', 'process.execPath is the bundle\'s plain node');
      assert.equal(s.exec, node);
      assert.match(s.appdir, /\/\.cache\/overpack\/mnt\/inproc-app-/);
      assert.equal(s.bundle, bundle);
      assert.equal(s.cwd, base, 'the caller\'s working directory');
      assert.deepEqual(s.private, [], 'none of the runtime\'s own variables');
      assert.equal(s.nodeOnPath, true, 'the bundle\'s node first on PATH');
    }
    const sep = run(bundle, ['a'], { OVERPACK_SEPARATE_APP_PROCESS: '1' });
    assert.equal(sep.status, 0, sep.stderr);
    assert.notEqual(seen(sep).pid, sep.pid, 'OVERPACK_SEPARATE_APP_PROCESS=1: a process of its own');
  });

  it('gives the caller what `node app.js` gives: output, exit status, an uncaught exception, stdin, fork()', () => {
    for (const [args, input] of [[['code']], [['throw']], [['stdin'], 'x'.repeat(100000)], [['fork']]] as Array<[string[], string?]>) {
      const want = direct(args, {}, input);
      const got = run(bundle, args, {}, input);
      assert.equal(seen(got).pid, got.pid, `${args[0]}: in the launch's process`);
      assert.equal(got.status, want.status, `${args[0]}: exit status (stderr ${got.stderr})`);
      assert.equal(got.signal, want.signal);
      assert.equal(normalized(got.stdout, seen(got).appdir), normalized(want.stdout, directAppDir), `${args[0]}: stdout`);
      assert.equal(normalized(got.stderr, seen(got).appdir), normalized(want.stderr, src), `${args[0]}: stderr`);
    }
  });

  it('signals reach the app once: its SIGTERM handler runs once; without one it dies of SIGTERM', async () => {
    for (const mode of ['term-handler', 'term-default']) {
      const child = spawn(bundle, [mode], { env, cwd: base, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      for (let i = 0; !out.includes('ready') && i < 300; i++) await sleep(50);
      assert.match(out, /ready/);
      assert.equal(JSON.parse(out.split('\n')[0]!).pid, child.pid, 'in the launch\'s process');
      const exited = new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      if (mode === 'term-handler') {
        assert.equal(code, 3);
        assert.equal(out.match(/got SIGTERM/g)?.length, 1, out);
      } else {
        assert.equal(signal, 'SIGTERM');
      }
    }
  });

  it('leaves nothing: no client registration, no run directory, and the server exits after the linger', async () => {
    // Through the runtime (in-process.ts): its run directory goes when the app exits.
    const r = run(bundle, ['x'], { OVERPACK_EXPRESS: '0' });
    assert.equal(r.status, 0, r.stderr);
    const s = seen(r);
    assert.equal(s.pid, r.pid);
    assert.equal(fs.existsSync(path.dirname(s.pathHead)), false, 'the run directory is removed when the app exits');
    assert.ok(!fs.readdirSync(path.join(home, '.local/share/overpack/inproc-app/clients')).includes(String(r.pid)), 'it left the mount: its registration is gone');
    // The express relaunch (express.test.ts) runs with the server's bin directory: it goes with the server.
    const e = run(bundle, ['x']);
    assert.equal(seen(e).pid, e.pid);
    const pid = serverPid('inproc-app')!;
    for (let i = 0; alive(pid) && i < 100; i++) await sleep(100);
    assert.equal(alive(pid), false, 'the mount server exits on its own');
    assert.equal(fs.existsSync(path.dirname(seen(e).pathHead)), false, 'the server\'s run directory is removed when it exits');
    assert.deepEqual(fs.readdirSync(path.join(home, '.local/share/overpack/inproc-app/clients')), [], 'no client left registered');
    assert.deepEqual(mountsUnder(home), []);
    assert.ok(fs.readFileSync(path.join(home, '.local/share/overpack/inproc-app/upper/runs.txt'), 'utf8').length >= 8, 'every run wrote to the preserved layer');
  });

  it('an ES module entrypoint runs in-process too', () => {
    const dir = path.join(base, 'esm');
    makeApp(dir, 'inproc-esm', {}, 'main.mjs', "import fs from 'node:fs';\nawait new Promise((r) => setTimeout(r, 10));\nconsole.log(JSON.stringify({ pid: process.pid, url: import.meta.url.startsWith('file://'), data: fs.readFileSync(new URL('./overpack.json', import.meta.url), 'utf8').length > 0 }));\n");
    const esm = path.join(base, 'esm.run');
    build(dir, esm);
    for (let i = 0; i < 2; i++) {
      const r = run(esm, []);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { pid: r.pid, url: true, data: true });
    }
  });

  it('an npm-style bin (no .js name, a node #! line), also through a node_modules/.bin link, runs in-process; a #! line with node options keeps its own process', () => {
    const dir = path.join(base, 'bins');
    const report = "console.log(JSON.stringify({ pid: process.pid, main: require.main === module, args: process.argv.slice(2), flag: process.execArgv.includes('--no-warnings') }));\n";
    fs.mkdirSync(path.join(dir, 'node_modules', 'tool', 'bin'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'node_modules', '.bin'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'node_modules', 'tool', 'bin', 'tool'), `#!/usr/bin/env node\n${report}`, { mode: 0o755 });
    fs.symlinkSync('../tool/bin/tool', path.join(dir, 'node_modules', '.bin', 'tool'));
    fs.writeFileSync(path.join(dir, 'flagged'), `#!/usr/bin/env -S node --no-warnings\n${report}`, { mode: 0o755 });
    const cases: Array<[string, string, boolean]> = [
      ['inproc-bin', 'node_modules/tool/bin/tool', true],
      ['inproc-dotbin', 'node_modules/.bin/tool', true],
      ['inproc-flagged', 'flagged', false],
    ];
    for (const [name, entrypoint, inProcess] of cases) {
      fs.writeFileSync(path.join(dir, 'overpack.json'), JSON.stringify({ name, version: '1', entrypoint, overlay: { linger: 2 } }));
      const out = path.join(base, `${name}.run`);
      build(dir, out);
      for (const label of ['first launch', 'relaunch']) {
        const r = run(out, ['x', 'y z']);
        assert.equal(r.status, 0, `${name} ${label}: ${r.stderr}`);
        const s = JSON.parse(r.stdout) as { pid: number; main: boolean; args: string[]; flag: boolean };
        assert.deepEqual(s.args, ['x', 'y z'], `${name} ${label}`);
        assert.equal(s.main, true, `${name} ${label}: the main module`);
        // A relaunch joining the server is the bundle's process whatever the entrypoint (express.test.ts).
        if (label === 'first launch') assert.equal(s.pid === r.pid, inProcess, `${name} ${label}: ${inProcess ? 'in the launch\'s process' : 'a process of its own'}`);
        assert.equal(s.flag, !inProcess, `${name} ${label}: the #! line's node options ${inProcess ? 'none' : 'honoured'}`);
      }
    }
  });

  it('NODE_OPTIONS, or a manifest variable Node reads at start-up, gets the app a Node of its own that honours it', () => {
    const pre = path.join(base, 'pre.cjs');
    fs.writeFileSync(pre, 'globalThis.preloaded = true;\n');
    const r = run(bundle, ['y'], { NODE_OPTIONS: `--require ${pre}` });
    assert.equal(r.status, 0, r.stderr);
    assert.notEqual(seen(r).pid, r.pid, 'NODE_OPTIONS: a process of its own');
    assert.equal(seen(r).pre, true, 'its --require ran in the app');

    const dir = path.join(base, 'nodepath');
    const lib = path.join(base, 'lib');
    fs.mkdirSync(path.join(lib, 'answer'), { recursive: true });
    fs.writeFileSync(path.join(lib, 'answer/index.js'), 'module.exports = 42;\n');
    makeApp(dir, 'inproc-nodepath', { env: { NODE_PATH: lib } }, 'main.js', "console.log(JSON.stringify({ pid: process.pid, answer: require('answer') }));\n");
    const np = path.join(base, 'nodepath.run');
    build(dir, np);
    // The first launch, and a relaunch through the runtime: a Node of its own. A relaunch the
    // loader runs (express.test.ts) execs a Node for the app in the bundle's process.
    for (const [extra, ownProcess] of [[{}, true], [{ OVERPACK_EXPRESS: '0' }, true], [{}, false]] as const) {
      const n = run(np, [], extra);
      assert.equal(n.status, 0, n.stderr);
      const out = JSON.parse(n.stdout) as { pid: number; answer: number };
      assert.equal(out.answer, 42, 'NODE_PATH from the manifest works');
      assert.equal(out.pid !== n.pid, ownProcess, ownProcess ? 'in a Node of its own' : 'exec\'d by the loader');
    }
  });
});
