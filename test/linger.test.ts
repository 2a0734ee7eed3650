/**
 * The lingering mount (runtime/launcher/mount-server.ts): a preserved app's mount stays served
 * for a while after its launch exits, and a relaunch runs in it. Real bundles, run as separate
 * processes; the mount server is a detached process the bundle starts.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, mountsUnder, forceUnmount, tempDir, isolatedEnv, lockPid, pidAlive, unprivilegedUser } from './helpers.js';

const base = tempDir('linger');
const home = path.join(base, 'home');
// The linger on, as users get it: the suite's default (helpers.ts) is 0.
const env: NodeJS.ProcessEnv = { ...isolatedEnv(home), OVERPACK_LINGER: undefined };
const dataDir = path.join(home, '.local/share/overpack/linger-app');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An app that shows its version, its APPDIR and a run counter kept in its writable layer. */
function makeApp(dir: string, version: string, manifestExtra: object = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'version.txt'), `${version}\n`);
  fs.writeFileSync(
    path.join(dir, 'show.sh'),
    '#!/bin/sh\nn=$(cat "$APPDIR/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$APPDIR/runs"\necho "version $(cat "$APPDIR/version.txt") run $n appdir $APPDIR"\n[ -n "$APPEND" ] && echo "$APPEND" >> "$APPDIR/log"\nexit 0\n',
    { mode: 0o755 },
  );
  fs.writeFileSync(path.join(dir, 'overpack.json'), JSON.stringify({ name: 'linger-app', version, entrypoint: 'show.sh', ...manifestExtra }));
}

function build(appDir: string, out: string): void {
  const r = spawnSync(process.execPath, [CLI, 'build', appDir, '-o', out], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  assert.equal(r.status, 0, r.stderr);
}

function run(bundle: string, args: string[] = [], extra: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extra }, cwd: base, timeout: 60000 });
}

function shown(r: SpawnSyncReturns<string>): { version: string; run: number; appdir: string } {
  assert.equal(r.status, 0, r.stderr);
  const m = /^version (\S+) run (\d+) appdir (\S+)$/m.exec(r.stdout);
  assert.ok(m, r.stdout);
  return { version: m[1]!, run: Number(m[2]), appdir: m[3]! };
}

/** The mount's id in /proc/self/mountinfo: while it stays mounted, no other mount has it. */
function mountId(mp: string): string | null {
  const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mp);
  return line ? line.split(' ')[0]! : null;
}

const serverPid = (dir = dataDir) => lockPid(dir);
const alive = pidAlive;

async function waitGone(pid: number, ms: number): Promise<number> {
  const t0 = Date.now();
  while (alive(pid)) {
    assert.ok(Date.now() - t0 < ms, `the mount server ${pid} still runs after ${ms} ms`);
    await sleep(50);
  }
  return Date.now() - t0;
}

describe('a lingering mount', () => {
  const bundle = path.join(base, 'app.run');
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    makeApp(path.join(base, 'v1'), '1', { overlay: { linger: 2 } });
    build(path.join(base, 'v1'), bundle);
  });
  after(async () => {
    const pid = serverPid();
    if (pid && alive(pid)) await waitGone(pid, 15000).catch(() => undefined);
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it('stays for the manifest\'s linger: the caller sees the end of output when the app exits, a relaunch runs in the same mount, then the server exits on its own and no mount is left', async () => {
    const one = shown(run(bundle));
    // spawnSync returned (stdout and stderr closed) while the mount is still served
    assert.deepEqual(mountsUnder(home), [one.appdir]);
    const pid = serverPid()!;
    assert.ok(pid && alive(pid), 'a mount server holds the lock');
    const id = mountId(one.appdir);
    const two = shown(run(bundle));
    assert.equal(two.run, one.run + 1);
    assert.equal(two.appdir, one.appdir);
    assert.equal(mountId(two.appdir), id, 'the relaunch ran in the lingering mount, not a new one');
    assert.equal(serverPid(), pid);
    const waited = await waitGone(pid, 10000);
    assert.ok(waited > 1000, `lingered ${waited} ms after the last launch (manifest: 2 s)`);
    assert.deepEqual(mountsUnder(home), [], 'no mount left');
    assert.equal(fs.existsSync(path.join(dataDir, 'lock')), false);
    assert.equal(shown(run(bundle, [], { OVERPACK_LINGER: '0' })).run, two.run + 1, 'the data was preserved');
    assert.deepEqual(mountsUnder(home), [], 'OVERPACK_LINGER=0 unmounts at once');
  });

  it('--overpack-discard never joins it; a rebuilt bundle never joins it, the idle old server is stopped', async () => {
    const one = shown(run(bundle, [], { OVERPACK_LINGER: '30' }));
    const oldServer = serverPid()!;
    const oldId = mountId(one.appdir);
    const discarded = shown(run(bundle, ['--overpack-discard'], { OVERPACK_LINGER: '30' }));
    assert.notEqual(discarded.appdir, one.appdir);
    assert.equal(discarded.run, 1, 'a discarded run starts from the app as shipped');
    assert.equal(mountId(one.appdir), oldId, 'the lingering mount is untouched');
    assert.ok(alive(oldServer));
    // The same path, a new build: it runs its own image, with the preserved data.
    makeApp(path.join(base, 'v2'), '2', { overlay: { linger: 2 } });
    build(path.join(base, 'v2'), bundle);
    const two = shown(run(bundle, [], { OVERPACK_LINGER: '30' }));
    assert.equal(two.version, '2');
    assert.equal(two.run, one.run + 1);
    // The old server stopped and a new one mounted the new build (mount ids are reused: not a proof).
    await waitGone(oldServer, 5000);
    const newServer = serverPid()!;
    assert.ok(newServer !== oldServer && alive(newServer), 'a new server for the new build');
    // --overpack-reset stops an idle server, then resets
    const reset = run(bundle, ['--overpack-reset', '--overpack-yes']);
    assert.equal(reset.status, 0, reset.stderr);
    await waitGone(newServer, 5000);
    assert.deepEqual(mountsUnder(home), []);
    assert.equal(shown(run(bundle, [], { OVERPACK_LINGER: '0' })).run, 1);
  });

  it('kill -9 of a lingering server: the preserved data is intact and the next launch cleans up and runs', async () => {
    const one = shown(run(bundle, [], { OVERPACK_LINGER: '30', APPEND: 'kept line' }));
    const pid = serverPid()!;
    process.kill(pid, 'SIGKILL'); // started by our launch above
    await waitGone(pid, 5000);
    const two = shown(run(bundle, [], { OVERPACK_LINGER: '0' }));
    assert.equal(two.run, one.run + 1);
    assert.match(fs.readFileSync(path.join(dataDir, 'upper', 'log'), 'utf8'), /kept line/);
    assert.deepEqual(mountsUnder(home), [], 'the stale mount was cleaned up');
  });

  it('launches at once share one server: every append kept, one mount', async () => {
    const n = 6;
    const runs = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        new Promise<string>((resolve, reject) => {
          const p = spawn(bundle, [], { env: { ...env, OVERPACK_LINGER: '1', APPEND: `launch ${i}` }, cwd: base, stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          p.stdout.on('data', (d) => (out += d));
          p.stderr.on('data', (d) => (err += d));
          p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}: ${err}`))));
        }),
      ),
    );
    assert.equal(new Set(runs.map((o) => /appdir (\S+)/.exec(o)![1])).size, 1);
    const pid = serverPid()!;
    await waitGone(pid, 10000);
    const log = fs.readFileSync(path.join(dataDir, 'upper', 'log'), 'utf8');
    for (let i = 0; i < n; i++) assert.match(log, new RegExp(`^launch ${i}$`, 'm'));
    assert.deepEqual(mountsUnder(home), []);
  });

  it('refuses a bad linger, naming it: OVERPACK_LINGER at launch (exit 2), overlay.linger at build', () => {
    const r = run(bundle, [], { OVERPACK_LINGER: 'soon' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /OVERPACK_LINGER must be a number of seconds/);
    const bad = path.join(base, 'bad');
    makeApp(bad, '1', { overlay: { linger: -1 } });
    const b = spawnSync(process.execPath, [CLI, 'build', bad, '-o', path.join(base, 'bad.run')], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    assert.notEqual(b.status, 0);
    assert.match(b.stderr, /overlay\.linger/);
  });

  it('for an unprivileged user: the server runs as that user, a relaunch joins it, it exits on its own', async () => {
    const { uid, gid, home: uhome, restore } = unprivilegedUser(base);
    const ubundle = path.join(base, 'user.run');
    fs.copyFileSync(bundle, ubundle);
    fs.chmodSync(ubundle, 0o755);
    const as = () =>
      spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', ubundle], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: uhome }, cwd: uhome, timeout: 60000 });
    const udata = path.join(uhome, '.local/share/overpack/linger-app');
    try {
      const one = shown(as());
      const pid = serverPid(udata)!;
      assert.equal(fs.statSync(`/proc/${pid}`).uid, Number(uid), 'the server runs as the user');
      const two = shown(as());
      assert.equal(two.run, one.run + 1);
      assert.equal(serverPid(udata), pid);
      await waitGone(pid, 10000);
      assert.deepEqual(mountsUnder(uhome), []);
    } finally {
      restore();
      for (const m of mountsUnder(uhome)) forceUnmount(m);
    }
  });
});
