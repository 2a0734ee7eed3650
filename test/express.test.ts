/**
 * The express relaunch (runtime/loader/express.c, runtime/launcher/express-plan.ts): a
 * relaunch that finds its bundle's mount server serving runs the app from the loader, in the
 * bundle's own process, without starting the runtime. What the app and its caller see must be
 * what the runtime gives them (`OVERPACK_EXPRESS=0` makes the same relaunch go through it), and
 * every launch the runtime would treat differently must not take it. Real bundles, run as
 * separate processes; the mount server is the detached process the first launch starts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, mountsUnder, forceUnmount, tempDir, isolatedEnv, lockPid, pidAlive, unprivilegedUser } from './helpers.js';

const base = tempDir('express');
const home = path.join(base, 'home');
// The linger on, as users get it (the suite's default is 0).
const env: NodeJS.ProcessEnv = { ...isolatedEnv(home), OVERPACK_LINGER: undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dataDir = (name: string, h = home) => path.join(h, '.local/share/overpack', name);
const planDir = (h = home) => path.join(h, '.cache/overpack/express');

/** A shell app: its pid, run counter, APPDIR, working directory and arguments; its environment to $ENV_TO; then what its first argument asks. */
const SHELL_APP = `#!/bin/sh
n=$(cat "$APPDIR/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$APPDIR/runs"
echo "pid $$ run $n appdir $APPDIR cwd $(pwd) args $*"
[ -n "$ENV_TO" ] && env > "$ENV_TO"
case $1 in
  read) read -r line; echo "got $line";;
  exit) exit "$2";;
  kill) kill -TERM $$;;
esac
exit 0
`;

/** A Node app: what it sees, as JSON; its environment to $ENV_TO. */
const NODE_APP = `const fs = require('node:fs');
if (process.env.ENV_TO) fs.writeFileSync(process.env.ENV_TO, Object.entries(process.env).map(([k, v]) => k + '=' + v).join('\\n') + '\\n');
console.log(JSON.stringify({ pid: process.pid, exec: process.execPath, argv0: process.argv0, argv: process.argv.slice(2), cwd: process.cwd(), appdir: process.env.APPDIR, pre: globalThis.preloaded === true }));
if (process.argv.includes('code')) process.exitCode = 5;
`;

function makeApp(dir: string, name: string, file: string, source: string, extra: object = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, file), source, { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'overpack.json'), JSON.stringify({ name, version: '1', entrypoint: file, overlay: { linger: 30 }, ...extra }));
}

function build(dir: string, out: string): void {
  const r = spawnSync(process.execPath, [CLI, 'build', dir, '-o', out], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  assert.equal(r.status, 0, r.stderr);
}

function run(bundle: string, args: string[] = [], extra: NodeJS.ProcessEnv = {}, input?: string, cwd = base): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extra }, cwd, timeout: 60000, input });
}

interface ShellSeen {
  pid: number;
  run: number;
  appdir: string;
  cwd: string;
  args: string;
}

function shellSeen(r: SpawnSyncReturns<string>): ShellSeen {
  const m = /^pid (\d+) run (\d+) appdir (\S+) cwd (.+?) args ?(.*)$/m.exec(r.stdout);
  assert.ok(m, `no report in ${JSON.stringify(r.stdout)} (status ${r.status}, stderr ${r.stderr})`);
  return { pid: Number(m[1]), run: Number(m[2]), appdir: m[3]!, cwd: m[4]!, args: m[5]! };
}

/** An environment file as a map, without what differs by design: the bin directory in front of PATH (the server's in an express relaunch, the launch's own otherwise) OVERPACK_EXPRESS, and ENV_TO (where it was written). */
function envOf(file: string): { vars: Record<string, string>; binDir: string } {
  const vars: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) vars[line.slice(0, eq)] = line.slice(eq + 1);
  }
  const [binDir, ...rest] = (vars.PATH ?? '').split(':');
  vars.PATH = rest.join(':');
  delete vars.OVERPACK_EXPRESS;
  delete vars.ENV_TO;
  return { vars, binDir: binDir! };
}

async function stopServer(name: string, h = home): Promise<void> {
  const pid = lockPid(dataDir(name, h));
  if (!pid || !pidAlive(pid)) return;
  process.kill(pid, 'SIGTERM'); // the mount server our launches started: it exits once idle
  for (let i = 0; pidAlive(pid) && i < 100; i++) await sleep(100);
  assert.equal(pidAlive(pid), false, `the mount server ${pid} did not exit at SIGTERM`);
}

describe('the express relaunch', () => {
  const shellBundle = path.join(base, 'sh.run');
  const nodeBundle = path.join(base, 'node.run');
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    makeApp(path.join(base, 'sh'), 'express-sh', 'show.sh', SHELL_APP, { env: { GREETING: 'hello there' } });
    build(path.join(base, 'sh'), shellBundle);
    makeApp(path.join(base, 'node'), 'express-node', 'app.js', NODE_APP, { args: ['--from-manifest'], env: { GREETING: 'hi' } });
    build(path.join(base, 'node'), nodeBundle);
  });
  after(async () => {
    for (const name of ['express-sh', 'express-node']) await stopServer(name).catch(() => undefined);
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it('a shell app: the relaunch is the bundle\'s own process, in the lingering mount, with the environment, arguments, stdin, working directory and exit status the runtime gives it', () => {
    const first = shellSeen(run(shellBundle, ['start']));
    assert.notEqual(first.pid, 0);
    const cwd = path.join(base, 'some dir');
    fs.mkdirSync(cwd, { recursive: true });
    const viaLoader = run(shellBundle, ['a', 'b c'], { ENV_TO: path.join(base, 'env-express') }, undefined, cwd);
    const express = shellSeen(viaLoader);
    assert.equal(express.pid, viaLoader.pid, 'the app is the bundle\'s process: no runtime in between');
    assert.equal(express.appdir, first.appdir, 'in the lingering mount');
    assert.equal(express.run, first.run + 1, 'its writable layer');
    assert.equal(express.cwd, cwd);
    assert.equal(express.args, 'a b c');
    const viaRuntime = run(shellBundle, ['a', 'b c'], { ENV_TO: path.join(base, 'env-runtime'), OVERPACK_EXPRESS: '0' }, undefined, cwd);
    const runtime = shellSeen(viaRuntime);
    assert.notEqual(runtime.pid, viaRuntime.pid, 'OVERPACK_EXPRESS=0: through the runtime, the app a child of it');
    assert.equal(runtime.appdir, first.appdir);
    assert.equal(runtime.run, express.run + 1);
    const [e, r] = [envOf(path.join(base, 'env-express')), envOf(path.join(base, 'env-runtime'))];
    assert.deepEqual(e.vars, r.vars, 'the same environment');
    assert.equal(e.vars.GREETING, 'hello there');
    assert.equal(e.vars.APPDIR, first.appdir);
    assert.equal(e.vars.OWD, cwd);
    assert.equal(e.vars.OVERPACK_BUNDLE, shellBundle);
    assert.match(fs.realpathSync(path.join(e.binDir, 'node')), /\/\.cache\/overpack\/node\/[0-9a-f]+\/node$/, 'the bundle\'s plain node first on PATH (in the server\'s run directory)');
    assert.match(r.binDir, /\/overpack-express-sh-[^/]+\/bin$/, 'through the runtime: its own run directory (removed when it exits)');
    for (const extra of [{}, { OVERPACK_EXPRESS: '0' }]) {
      const read = run(shellBundle, ['read'], extra, 'a line\n');
      assert.match(read.stdout, /^got a line$/m);
      const code = run(shellBundle, ['exit', '42'], extra);
      assert.equal(code.status, 42);
      const killed = run(shellBundle, ['kill'], extra);
      assert.equal(killed.signal, 'SIGTERM', 'dies of the signal that killed the app');
      assert.equal(shellSeen(killed).pid === killed.pid, !('OVERPACK_EXPRESS' in extra));
    }
  });

  it('a shell app relaunched express gives its caller what running the script directly gives: output, stdin, exit status, fatal signal', () => {
    shellSeen(run(shellBundle)); // the server, lingering
    const direct = (args: string[], input?: string) =>
      spawnSync('/bin/sh', [path.join(base, 'sh', 'show.sh'), ...args], { encoding: 'utf8', env: { ...env, APPDIR: path.join(base, 'direct-appdir') }, cwd: base, timeout: 60000, input });
    fs.mkdirSync(path.join(base, 'direct-appdir'), { recursive: true });
    // The report line differs by design (pid, run counter, APPDIR); what follows it must not.
    const rest = (out: string) => out.split('\n').slice(1).join('\n');
    for (const [args, input] of [[['read'], 'a line\n'], [['exit', '42']], [['kill']], [['x', 'y z']]] as Array<[string[], string?]>) {
      const want = direct(args, input);
      const got = run(shellBundle, args, {}, input);
      assert.equal(shellSeen(got).pid, got.pid, `${args[0]}: express`);
      assert.equal(got.status, want.status, `${args[0]}: exit status`);
      assert.equal(got.signal, want.signal, `${args[0]}: signal`);
      assert.equal(shellSeen(got).args, shellSeen(want).args);
      assert.equal(rest(got.stdout), rest(want.stdout), `${args[0]}: stdout`);
      assert.equal(got.stderr, want.stderr, `${args[0]}: stderr`);
    }
  });

  it('a Node app: the relaunch execs the bundle\'s plain node, with the argv, environment and NODE_OPTIONS the runtime gives it', () => {
    const first = run(nodeBundle, ['start']);
    assert.equal(first.status, 0, first.stderr);
    const relaunch = (extra: NodeJS.ProcessEnv, args: string[] = ['x', 'y z']) => {
      const r = run(nodeBundle, args, extra);
      const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
      assert.ok(line, `${r.stdout} ${r.stderr}`);
      return { r, seen: JSON.parse(line) as { pid: number; exec: string; argv0: string; argv: string[]; cwd: string; appdir: string; pre: boolean } };
    };
    const e = relaunch({ ENV_TO: path.join(base, 'node-env-express') });
    const r = relaunch({ ENV_TO: path.join(base, 'node-env-runtime'), OVERPACK_EXPRESS: '0' });
    assert.equal(e.seen.pid, e.r.pid);
    assert.equal(r.seen.pid, r.r.pid, 'the runtime runs it in the launch\'s process too (in-process.ts)');
    for (const k of ['exec', 'argv0', 'argv', 'cwd', 'appdir'] as const) assert.deepEqual(e.seen[k], r.seen[k], k);
    assert.match(e.seen.exec, /\/\.cache\/overpack\/node\/[0-9a-f]+\/node$/, 'the plain node');
    assert.deepEqual(e.seen.argv, ['--from-manifest', 'x', 'y z']);
    assert.deepEqual(envOf(path.join(base, 'node-env-express')).vars, envOf(path.join(base, 'node-env-runtime')).vars, 'the same environment');
    assert.equal(relaunch({}, ['code']).r.status, 5, 'the exit status');
    // NODE_OPTIONS is the app's, as with the runtime (which then gives the app a process of its own).
    const pre = path.join(base, 'pre.cjs');
    fs.writeFileSync(pre, 'globalThis.preloaded = true;\n');
    const withOptions = relaunch({ NODE_OPTIONS: `--require ${pre}` });
    assert.equal(withOptions.seen.pid, withOptions.r.pid);
    assert.equal(withOptions.seen.pre, true, 'its --require ran in the app');
    assert.equal(relaunch({ NODE_OPTIONS: `--require ${pre}`, OVERPACK_EXPRESS: '0' }).seen.pre, true);
  });

  it('is not taken where the runtime would act differently: a runtime option or variable, a changed bundle, a dead server, a portable data directory, a plan others could write', async () => {
    const first = shellSeen(run(shellBundle));
    const viaRuntime = (r: SpawnSyncReturns<string>, why: string) => {
      const s = shellSeen(r);
      assert.notEqual(s.pid, r.pid, `${why}: through the runtime`);
      return s;
    };
    const version = run(shellBundle, ['--overpack-version']);
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^express-sh 1 \(overpack runtime/, '--overpack-*: the runtime answers it');
    viaRuntime(run(shellBundle, [], { OVERPACK_SEPARATE_APP_PROCESS: '1' }), 'an OVERPACK_* setting');
    assert.equal(run(shellBundle, [], { OVERPACK_LINGER: 'soon' }).status, 2, 'a bad OVERPACK_LINGER is still refused');
    const lingerSet = run(shellBundle, [], { OVERPACK_LINGER: '10' });
    assert.equal(shellSeen(lingerSet).pid, lingerSet.pid, 'a plain OVERPACK_LINGER changes nothing for a relaunch: taken');
    // The plan is private: one that others could write is ignored.
    const [plan] = fs.readdirSync(planDir()).map((f) => path.join(planDir(), f)).filter((f) => fs.readFileSync(f, 'latin1').includes(shellBundle));
    assert.ok(plan, 'the server left a plan');
    assert.equal(fs.statSync(plan).mode & 0o777, 0o600);
    fs.chmodSync(plan, 0o666);
    viaRuntime(run(shellBundle), 'a plan others may write');
    fs.chmodSync(plan, 0o600);
    const again = run(shellBundle);
    assert.equal(shellSeen(again).pid, again.pid, 'taken again');
    // Touched (or rewritten in place): not the file the server read.
    const t = new Date(Date.now() + 5000);
    fs.utimesSync(shellBundle, t, t);
    const touched = viaRuntime(run(shellBundle), 'a changed bundle');
    assert.notEqual(touched.appdir, '', 'ran');
    // A data directory beside the bundle (portable mode) is another app instance altogether.
    const portable = `${shellBundle}.data`;
    fs.mkdirSync(portable);
    try {
      const p = viaRuntime(run(shellBundle), 'a portable data directory');
      assert.equal(p.run, 1, 'the portable data directory\'s own writable layer');
      await stopServer('express-sh'); // not the portable one's: that lock is beside the bundle
      const pp = lockPid(portable);
      if (pp && pidAlive(pp)) {
        process.kill(pp, 'SIGTERM');
        for (let i = 0; pidAlive(pp) && i < 100; i++) await sleep(100);
      }
    } finally {
      fs.rmSync(portable, { recursive: true, force: true });
    }
    // A server killed with SIGKILL leaves its plan and lock: refused by its pid and start time.
    shellSeen(run(shellBundle));
    const server = lockPid(dataDir('express-sh'))!;
    process.kill(server, 'SIGKILL'); // started by our launch
    for (let i = 0; pidAlive(server) && i < 100; i++) await sleep(50);
    const afterKill = viaRuntime(run(shellBundle, [], { OVERPACK_LINGER: '0' }), 'a dead server');
    assert.ok(afterKill.run > first.run, 'the preserved layer is intact');
    assert.deepEqual(mountsUnder(home).filter((m) => m.includes('express-sh')), [], 'the dead server\'s mount was cleaned up');
  });

  it('one bundle file, two data homes: each relaunch joins the server of its own data, express', async () => {
    const other = { XDG_DATA_HOME: path.join(base, 'other-data') };
    const mine = shellSeen(run(shellBundle));
    const theirs = shellSeen(run(shellBundle, [], other));
    assert.notEqual(mine.appdir, theirs.appdir, 'two servers, two mounts');
    for (let i = 1; i <= 2; i++) {
      for (const [extra, before] of [[{}, mine], [other, theirs]] as const) {
        const r = run(shellBundle, [], extra);
        const s = shellSeen(r);
        assert.equal(s.pid, r.pid, 'express');
        assert.equal(s.appdir, before.appdir, 'in the mount of its own data');
        assert.equal(s.run, before.run + i);
      }
    }
    const pid = lockPid(path.join(base, 'other-data', 'overpack', 'express-sh'));
    assert.ok(pid && pidAlive(pid));
    process.kill(pid, 'SIGTERM'); // the server our launch started
    for (let i = 0; pidAlive(pid) && i < 100; i++) await sleep(100);
    assert.equal(pidAlive(pid), false);
  });

  it('leaves nothing running: the app\'s registration goes with its process, the server with its linger; the plan it leaves starts the next server from the loader', async () => {
    const one = run(shellBundle);
    const two = run(shellBundle);
    assert.equal(shellSeen(two).pid, two.pid);
    const clients = path.join(dataDir('express-sh'), 'clients');
    for (let i = 0; fs.readdirSync(clients).length > 0 && i < 50; i++) await sleep(100);
    assert.deepEqual(fs.readdirSync(clients), [], 'the exited app\'s registration is gone (the server looks at its clients\' pids)');
    assert.ok(shellSeen(one).run < shellSeen(two).run);
    const old = lockPid(dataDir('express-sh'))!;
    await stopServer('express-sh');
    assert.deepEqual(mountsUnder(home).filter((m) => m.includes('express-sh')), []);
    const plans = fs.readdirSync(planDir()).filter((f) => fs.readFileSync(path.join(planDir(), f), 'latin1').includes(`\0${shellBundle}\0`) && fs.readFileSync(path.join(planDir(), f), 'latin1').includes(`\0${dataDir('express-sh')}\0`));
    assert.equal(plans.length, 1, 'the plan stays, as a record that a server lingered for this launch');
    // The next launch: its loader starts the server (the build and linger "auto") while the runtime starts up.
    const three = shellSeen(run(shellBundle));
    assert.equal(three.run, shellSeen(two).run + 1, 'in the preserved layer');
    const server = lockPid(dataDir('express-sh'))!;
    assert.ok(server !== old && pidAlive(server), 'a new server');
    assert.match(fs.readFileSync(`/proc/${server}/environ`, 'latin1'), /\0OVERPACK_SERVE_BUILD=auto\0/, 'started by the loader');
    const four = run(shellBundle);
    assert.equal(shellSeen(four).pid, four.pid, 'and relaunched express in it');
    await stopServer('express-sh');
    // A deleted bundle's plan goes when another server writes its own.
    const gone = path.join(base, 'gone.run');
    fs.copyFileSync(shellBundle, gone);
    fs.chmodSync(gone, 0o755);
    const goneData = { XDG_DATA_HOME: path.join(base, 'gone-data') };
    assert.equal(spawnSync(gone, [], { env: { ...env, ...goneData, OVERPACK_LINGER: '0.2' }, cwd: base, timeout: 60000 }).status, 0);
    const planOf = (bundle: string) => fs.readdirSync(planDir()).filter((f) => fs.readFileSync(path.join(planDir(), f), 'latin1').includes(`\0${bundle}\0`));
    for (let i = 0; fs.existsSync(path.join(base, 'gone-data/overpack/express-sh/lock')) && i < 100; i++) await sleep(100);
    assert.equal(planOf(gone).length, 1);
    fs.rmSync(gone);
    await stopServer('express-sh');
    const five = shellSeen(run(shellBundle)); // a server of another bundle writes its plan
    assert.deepEqual(planOf(gone), [], 'the deleted bundle\'s plan is gone');
    assert.equal(planOf(shellBundle).length > 0, true);
    await stopServer('express-sh');
    // With the linger off for a launch, the loader starts nothing, and nothing is left serving.
    const off = shellSeen(run(shellBundle, [], { OVERPACK_LINGER: '0' }));
    assert.equal(off.run, five.run + 1);
    assert.equal(fs.existsSync(path.join(dataDir('express-sh'), 'lock')), false, 'no server');
    assert.deepEqual(mountsUnder(home).filter((m) => m.includes('express-sh')), []);
  });

  it('relaunches racing the end of the linger: every run counted once, in a served mount', async () => {
    const racer = path.join(base, 'racer.run');
    makeApp(path.join(base, 'racer'), 'express-racer', 'show.sh', SHELL_APP, { overlay: { linger: 0.3 } });
    build(path.join(base, 'racer'), racer);
    let last = 0;
    for (let i = 0; i < 24; i++) {
      const r = run(racer);
      assert.equal(r.status, 0, r.stderr);
      const s = shellSeen(r);
      assert.equal(s.run, last + 1, `run ${i}: counted once, in the preserved layer`);
      last = s.run;
      await sleep(200 + ((i * 37) % 200)); // around the linger's end
    }
    const pid = lockPid(dataDir('express-racer'));
    for (let i = 0; pid && pidAlive(pid) && i < 100; i++) await sleep(100);
    assert.deepEqual(mountsUnder(home).filter((m) => m.includes('express-racer')), []);
  });

  it('a bundle run as `node` (a link of that name) stays node, with its server serving', () => {
    const first = run(nodeBundle, ['start']);
    assert.equal(first.status, 0, first.stderr);
    const link = path.join(base, 'bin', 'node');
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.rmSync(link, { force: true });
    fs.symlinkSync(nodeBundle, link);
    const script = path.join(base, 'answer.js');
    fs.writeFileSync(script, 'console.log(6 * 7);\n');
    const r = spawnSync(link, [script], { encoding: 'utf8', env, cwd: base, timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '42', 'node mode, not the app');
  });

  it('an app that exited but is not reaped yet no longer keeps the server', () => {
    const racer = path.join(base, 'racer.run');
    assert.equal(run(racer).status, 0); // the server (linger 0.3 s)
    // Starts the bundle (an express relaunch), waits for its exit without reaping it, then
    // watches the lock: the server must go while the zombie is still there.
    const script = `import json, os, subprocess, sys, time
p = subprocess.Popen([sys.argv[1]], stdout=subprocess.DEVNULL)
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
state = open(f'/proc/{p.pid}/stat').read().rsplit(')', 1)[1].split()[0]
t = time.time()
while os.path.exists(sys.argv[2]) and time.time() - t < 10: time.sleep(0.05)
print(json.dumps({'state': state, 'lock': os.path.exists(sys.argv[2]), 'clients': os.listdir(sys.argv[3])}))
p.wait()`;
    const r = spawnSync('python3', ['-c', script, racer, path.join(dataDir('express-racer'), 'lock'), path.join(dataDir('express-racer'), 'clients')], { encoding: 'utf8', env, cwd: base, timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    const seen = JSON.parse(r.stdout) as { state: string; lock: boolean; clients: string[] };
    assert.equal(seen.state, 'Z', 'the app had exited, unreaped');
    assert.equal(seen.lock, false, 'the server stopped after its linger');
    assert.deepEqual(seen.clients, []);
    assert.deepEqual(mountsUnder(home).filter((m) => m.includes('express-racer')), []);
  });

  it('a home reached through a symlink: the mount is found under its real path, the relaunch is express', async () => {
    const real = path.join(base, 'real-home');
    const link = path.join(base, 'home-link');
    fs.mkdirSync(real, { recursive: true });
    fs.symlinkSync(real, link);
    const linked = { ...isolatedEnv(link), OVERPACK_LINGER: undefined };
    const go = (extra: NodeJS.ProcessEnv = {}) => spawnSync(shellBundle, [], { encoding: 'utf8', env: { ...linked, ...extra }, cwd: base, timeout: 60000 });
    try {
      const one = shellSeen(go());
      assert.ok(one.appdir.startsWith(fs.realpathSync(real)), `APPDIR under the real path: ${one.appdir}`);
      const two = go();
      assert.equal(shellSeen(two).pid, two.pid, 'express');
      assert.equal(shellSeen(two).run, one.run + 1);
      const three = go({ OVERPACK_EXPRESS: '0' });
      assert.equal(three.status, 0, three.stderr);
      assert.equal(shellSeen(three).run, one.run + 2, 'through the runtime too');
    } finally {
      await stopServer('express-sh', real);
      for (const m of mountsUnder(real)) forceUnmount(m);
    }
  });

  it('for an unprivileged user, whose plan is theirs alone', async () => {
    const { uid, gid, home: uhome, restore } = unprivilegedUser(base);
    const ubundle = path.join(base, 'user.run');
    fs.copyFileSync(shellBundle, ubundle);
    fs.chmodSync(ubundle, 0o755);
    const as = () => {
      const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', ubundle], { env: { PATH: '/usr/bin:/bin', HOME: uhome }, cwd: uhome, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      return new Promise<{ pid: number; seen: ShellSeen }>((resolve, reject) =>
        child.on('exit', (code) => (code === 0 ? resolve({ pid: child.pid!, seen: shellSeen({ stdout: out } as SpawnSyncReturns<string>) }) : reject(new Error(`exit ${code}: ${err}`)))),
      );
    };
    try {
      const one = await as();
      const two = await as();
      assert.equal(two.seen.run, one.seen.run + 1);
      assert.equal(two.seen.pid, two.pid, 'the relaunch is setpriv\'s process, exec\'d into the app: no runtime in between');
      assert.notEqual(one.seen.pid, one.pid, 'the first launch ran it as a child of the runtime');
      const plans = fs.readdirSync(planDir(uhome));
      assert.equal(plans.length, 1);
      const st = fs.statSync(path.join(planDir(uhome), plans[0]!));
      assert.equal(st.uid, Number(uid));
      assert.equal(st.mode & 0o777, 0o600);
    } finally {
      const pid = lockPid(dataDir('express-sh', uhome));
      if (pid && pidAlive(pid)) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; pidAlive(pid) && i < 100; i++) await sleep(100);
      }
      restore();
      for (const m of mountsUnder(uhome)) forceUnmount(m);
    }
  });
});
