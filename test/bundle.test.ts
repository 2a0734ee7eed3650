/**
 * Real bundles, built with `overpack build` and run as separate processes. HOME and the XDG
 * directories point into a temp dir so runs never touch the user's own data.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_LINE } from '../builder/node-release.js';
import { readImage } from '../runtime/image/format.js';
import { CLI, ROOT, mountsUnder, forceUnmount, snapshot, comparable, tempDir, isolatedEnv } from './helpers.js';

const base = tempDir('bundle');
const home = path.join(base, 'home');
const env = isolatedEnv(home);
// Builds share the runtime executable cache of the real user: it only depends on node and the runtime.
const buildEnv = { ...process.env, NO_COLOR: '1' };

function build(appDir: string, out: string): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, 'build', appDir, '-o', out], { encoding: 'utf8', env: buildEnv, timeout: 300000 });
}

function run(bundle: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extraEnv }, cwd: base, timeout: 60000 });
}

let copies = 0;
function copyTemplate(name: string): string {
  const dir = path.join(base, copies++ === 0 ? `app-${name}` : `app-${name}-${copies}`);
  fs.cpSync(path.join(ROOT, 'templates', name), dir, { recursive: true });
  return dir;
}

describe('bundles', () => {
  const shellApp = path.join(base, 'shell.run');
  const nodeApp = path.join(base, 'node.run');
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    const shell = copyTemplate('shell');
    // extra content: a symlink, a duplicate file (dedup), a big file
    fs.symlinkSync('hello.sh', path.join(shell, 'bin', 'link'));
    fs.writeFileSync(path.join(shell, 'data-a.bin'), Buffer.alloc(300000, 9));
    fs.writeFileSync(path.join(shell, 'data-b.bin'), Buffer.alloc(300000, 9));
    fs.writeFileSync(path.join(shell, 'signal.sh'), '#!/bin/sh\ntrap "echo got TERM; exit 42" TERM\necho ready\nwhile :; do sleep 0.1; done\n', { mode: 0o755 });
    const r = build(shell, shellApp);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /dedup saved 0\.3 MiB/);
    const n = build(copyTemplate('node'), nodeApp);
    assert.equal(n.status, 0, n.stderr);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it('runs a shell app: arguments, stdout, exit code, environment', () => {
    const r = run(shellApp, ['one', 'two words']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^hello from the shell template \(run 1\), args: one two words$/m);
    const failed = run(shellApp, ['--fail', '9']);
    assert.equal(failed.status, 9);
    assert.deepEqual(mountsUnder(home), [], 'no mount left after the app exits');
  });

  it('preserves what the app writes across runs; --overpack-discard and reset do not keep it', () => {
    const before = Number(/run (\d+)/.exec(run(shellApp).stdout)![1]);
    assert.equal(Number(/run (\d+)/.exec(run(shellApp).stdout)![1]), before + 1);
    // --overpack-discard starts from the app as shipped and keeps nothing
    assert.equal(Number(/run (\d+)/.exec(run(shellApp, ['--overpack-discard']).stdout)![1]), 1);
    assert.equal(Number(/run (\d+)/.exec(run(shellApp).stdout)![1]), before + 2, 'the discarded run left nothing');
    assert.ok(fs.existsSync(path.join(home, '.local/share/overpack/hello-shell/upper/state/runs')));
    const reset = run(shellApp, ['--overpack-reset', '--overpack-yes']);
    assert.equal(reset.status, 0, reset.stderr);
    assert.equal(Number(/run (\d+)/.exec(run(shellApp).stdout)![1]), 1);
  });

  it('portable mode keeps data in <bundle>.data', () => {
    const portable = path.join(base, 'portable.run');
    fs.copyFileSync(shellApp, portable);
    fs.mkdirSync(`${portable}.data`);
    assert.match(run(portable).stdout, /run 1/);
    assert.match(run(portable).stdout, /run 2/);
    assert.ok(fs.existsSync(`${portable}.data/upper/state/runs`));
  });

  it('--overpack-mount serves the app dir; a runtime killed with SIGKILL is cleaned up by the next launch', async () => {
    const runDirs = () => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('overpack-hello-shell-'));
    const before = runDirs();
    const server = spawn(shellApp, ['--overpack-mount'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const mp = await new Promise<string>((resolve) => server.stdout.once('data', (d) => resolve(String(d).trim())));
    assert.ok(mp.startsWith(path.join(home, '.cache', 'overpack', 'mnt', 'hello-shell-')));
    const inside = spawnSync(path.join(mp, 'signal.sh'), [], { encoding: 'utf8', timeout: 1000, killSignal: 'SIGTERM' });
    assert.match(inside.stdout, /ready/);
    assert.equal(fs.readFileSync(path.join(mp, 'data-a.bin')).length, 300000);
    const left = runDirs().filter((n) => !before.includes(n));
    assert.equal(left.length, 1, 'the serving runtime has its run directory');
    server.kill('SIGKILL');
    await new Promise((r) => server.on('exit', r));
    assert.deepEqual(mountsUnder(home), [mp], 'the kill left a stale mount');
    fs.rmSync(path.join(home, '.local/share/overpack/hello-shell/lock'), { force: true });
    const r = run(shellApp);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(mountsUnder(home), [], 'the next launch cleaned the stale mount');
    assert.deepEqual(runDirs().filter((n) => left.includes(n)), [], 'and the run directory the killed runtime left in the temporary directory');
  });

  it('re-raises the app\'s fatal signal and forwards SIGTERM to it', async () => {
    const app = copyTemplate('shell');
    fs.writeFileSync(path.join(app, 'bin', 'hello.sh'), '#!/bin/sh\ntrap "echo got TERM; exit 42" TERM\necho ready\nwhile :; do sleep 0.1; done\n');
    const bundle = path.join(base, 'sig.run');
    assert.equal(build(app, bundle).status, 0);
    const p = spawn(bundle, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise((resolve) => p.stdout.once('data', resolve));
    p.kill('SIGTERM');
    const code = await new Promise((resolve) => p.on('exit', (c) => resolve(c)));
    assert.equal(code, 42, 'the app trapped SIGTERM and its status came back');
    fs.writeFileSync(path.join(app, 'bin', 'hello.sh'), '#!/bin/sh\nkill -USR1 $$\n');
    assert.equal(build(app, bundle).status, 0);
    const r = run(bundle);
    assert.equal(r.signal, 'SIGUSR1');
  });

  describe('each signal reaches the app once, as when it runs directly', () => {
    const app = path.join(base, 'app-signals');
    const bundle = path.join(base, 'signals.run');
    const shellBundle = path.join(base, 'signals-sh.run');
    before(() => {
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, 'app.js'), [
        'let n = 0;',
        "for (const s of ['SIGINT', 'SIGTERM', 'SIGWINCH']) process.on(s, () => n++);",
        "console.log('ready');",
        'setTimeout(() => { console.log(`signals ${n}`); process.exit(0); }, 1500);',
      ].join('\n'));
      // A shell counts a signal at each of its short sleeps: two deliveries are two counts.
      fs.writeFileSync(path.join(app, 'count.sh'), '#!/bin/bash\nn=0; trap "n=\\$((n+1))" INT TERM\necho ready\nfor i in $(seq 30); do sleep 0.05; done\necho "signals $n"\n', { mode: 0o755 });
      for (const [entrypoint, out] of [['app.js', bundle], ['count.sh', shellBundle]] as const) {
        fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'signals', version: '1.0.0', entrypoint }));
        const b = build(app, out);
        assert.equal(b.status, 0, b.stderr);
      }
    });
    /** Runs `argv`, waits for "ready", calls `poke`, returns what was printed and the exit code. */
    const session = (cmd: string, argv: string[], detached: boolean, poke: (p: ReturnType<typeof spawn>) => void) =>
      new Promise<string>((resolve) => {
        const p = spawn(cmd, argv, { env, cwd: base, stdio: ['pipe', 'pipe', 'inherit'], detached });
        let out = '';
        let poked = false;
        p.stdout!.on('data', (d) => {
          out += d;
          if (!poked && out.includes('ready')) {
            poked = true;
            setTimeout(() => poke(p), 300);
          }
        });
        p.on('exit', (code) => resolve(`${/signals \d+/.exec(out)?.[0] ?? out} exit ${code}`));
      });
    // Under a pseudo-terminal (script(1)): Ctrl-C and a window change go to the foreground group.
    // `exec` so that script's shell is not in that group too: dash (SHELL unset in CI) waits for
    // its child and then dies of the same Ctrl-C, exit 130, whatever the program did.
    const onTerminal = (cmd: string) =>
      session('script', ['-qfec', `exec ${cmd}`, '/dev/null'], false, (p) => {
        p.stdin!.write('\x03');
      });
    it('Ctrl-C on a terminal: one SIGINT', async () => {
      const direct = await onTerminal(`${process.execPath} ${path.join(app, 'app.js')}`);
      assert.equal(direct, 'signals 1 exit 0', 'the program run directly');
      assert.equal(await onTerminal(bundle), direct);
      const shell = await onTerminal(path.join(app, 'count.sh'));
      assert.equal(shell, 'signals 1 exit 0', 'the script run directly');
      assert.equal(await onTerminal(shellBundle), shell);
    });
    it('SIGTERM to the whole process group, without a terminal: one SIGTERM', async () => {
      const groupKill = (p: ReturnType<typeof spawn>) => process.kill(-p.pid!, 'SIGTERM');
      const direct = await session(process.execPath, [path.join(app, 'app.js')], true, groupKill);
      assert.equal(direct, 'signals 1 exit 0', 'the program run directly');
      assert.equal(await session(bundle, [], true, groupKill), direct);
    });
    it('SIGTERM to the bundle alone still reaches the app', async () => {
      assert.equal(await session(bundle, [], true, (p) => p.kill('SIGTERM')), 'signals 1 exit 0');
    });
  });

  it('an app killed by SIGPIPE makes the bundle die of SIGPIPE too (141 in a shell), as the program itself does', () => {
    const app = copyTemplate('shell');
    fs.writeFileSync(path.join(app, 'bin', 'hello.sh'), '#!/bin/sh\nseq 1 1000000\n');
    const bundle = path.join(base, 'pipe.run');
    assert.equal(build(app, bundle).status, 0);
    const pipeline = (cmd: string) => spawnSync('bash', ['-c', `${cmd} | head -2 >/dev/null; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8', env, cwd: base }).stdout.trim();
    assert.equal(pipeline(`seq 1 1000000`), '141', 'the program itself');
    assert.equal(pipeline(`"${bundle}"`), '141');
  });

  it('an app does not outlive its runtime killed with SIGKILL (shell and Node apps), and the next launch runs', async () => {
    const app = copyTemplate('shell');
    for (const [entrypoint, text] of [
      ['bin/hello.sh', '#!/bin/sh\necho "pid $$"\nwhile :; do sleep 0.1; done\n'],
      ['server.js', "console.log(`pid ${process.pid}`);\nsetInterval(() => {}, 1000);\n"],
    ] as const) {
      fs.writeFileSync(path.join(app, entrypoint), text, { mode: 0o755 });
      fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'orphan', version: '1.0.0', entrypoint, overlay: { onExit: 'discard' } }));
      const bundle = path.join(base, 'orphan.run');
      assert.equal(build(app, bundle).status, 0);
      const p = spawn(bundle, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const appPid = await new Promise<number>((resolve) => p.stdout!.on('data', (d) => /pid (\d+)/.test(String(d)) && resolve(Number(/pid (\d+)/.exec(String(d))![1]))));
      assert.notEqual(appPid, p.pid, 'the app is a process of its own');
      p.kill('SIGKILL');
      await new Promise((r) => p.on('exit', r));
      const alive = () => { try { process.kill(appPid, 0); return true; } catch { return false; } };
      for (let i = 0; i < 50 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(alive(), false, `${entrypoint}: the app died with its runtime`);
      for (const m of mountsUnder(home)) forceUnmount(m); // the killed runtime's stale mount (the next launch would clean it too)
    }
  });

  it('a cache on a noexec filesystem: the native files go to the data directory; with nowhere to load them, exit 3 saying why', () => {
    const nx = path.join(base, 'noexec');
    fs.mkdirSync(nx, { recursive: true });
    // In a private mount namespace: the tmpfs goes away with it, whatever happens.
    const inNoexec = (vars: string) =>
      spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o noexec tmpfs "${nx}" && mkdir -p "${nx}/c" "${nx}/d" "${nx}/t" && ${vars} "${shellApp}"`], { encoding: 'utf8', env: { ...env, HOME: nx }, timeout: 60000 });
    const cacheOnly = inNoexec(`XDG_CACHE_HOME="${nx}/c" XDG_DATA_HOME="${home}/.local/share"`);
    assert.equal(cacheOnly.status, 0, cacheOnly.stderr);
    assert.match(cacheOnly.stdout, /hello from the shell template/);
    assert.ok(fs.readdirSync(path.join(home, '.local/share/overpack/exec-cache/native')).length > 0, 'the addons went to the data directory');
    const nowhere = inNoexec(`XDG_CACHE_HOME="${nx}/c" XDG_DATA_HOME="${nx}/d" TMPDIR="${nx}/t"`);
    assert.equal(nowhere.status, 3, nowhere.stderr);
    assert.match(nowhere.stderr, /mounted noexec .*set XDG_CACHE_HOME to a directory on a filesystem that allows executables/);
  });

  it('a /dev/fuse that is no FUSE device: exit 3, the cause and the fallback', () => {
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount --bind /dev/null /dev/fuse && "${shellApp}"`], { encoding: 'utf8', env, timeout: 60000 });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /cannot mount the overlay .*--overpack-extract-and-run/s);
    assert.deepEqual(mountsUnder(home), []);
  });

  it('stack traces name the runtime script by a stable name, not a build directory', () => {
    const app = path.join(base, 'app-stack');
    fs.mkdirSync(app, { recursive: true });
    fs.writeFileSync(path.join(app, 'app.js'), 'console.log(new Error("where").stack);\n');
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'stack', version: '1.0.0', entrypoint: 'app.js', overlay: { onExit: 'discard' } }));
    const bundle = path.join(base, 'stack.run');
    assert.equal(build(app, bundle).status, 0);
    const r = run(bundle);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /at runAsNode \(overpack-runtime\.cjs:\d+:\d+\)/);
    assert.doesNotMatch(r.stdout, /work-[A-Za-z0-9]{6}/);
  });

  it('a missing interpreter is named: a warning at build time, exit 127 and its name at run time', () => {
    const app = copyTemplate('shell');
    for (const [line, name] of [['#!/usr/bin/python9 -u', '/usr/bin/python9'], ['#!/usr/bin/env -S python9 -u', 'python9']] as const) {
      fs.writeFileSync(path.join(app, 'bin', 'hello.sh'), `${line}\nprint(1)\n`);
      const bundle = path.join(base, 'interp.run');
      const b = build(app, bundle);
      assert.equal(b.status, 0, b.stderr);
      assert.match(b.stderr, new RegExp(`warning: bin/hello.sh starts with .*${name} is not installed on this machine`));
      const r = run(bundle);
      assert.equal(r.status, 127);
      assert.match(r.stderr, new RegExp(`cannot start .*hello\\.sh: its interpreter ${name} is not installed`));
    }
  });

  it('$APPDIR is the same at every launch of a preserved app; a discarded run gets one of its own', () => {
    const app = copyTemplate('shell');
    fs.writeFileSync(path.join(app, 'bin', 'hello.sh'), '#!/bin/sh\necho "$APPDIR"\n');
    const bundle = path.join(base, 'appdir.run');
    assert.equal(build(app, bundle).status, 0);
    const first = run(bundle).stdout;
    assert.match(first, /\/\.cache\/overpack\/mnt\/hello-shell-[0-9a-f]{8}\n$/);
    assert.equal(run(bundle).stdout, first);
    const discarded = run(bundle, ['--overpack-discard']).stdout;
    assert.notEqual(discarded, first);
    // A bundle elsewhere with its own data (portable mode) has its own APPDIR.
    const portable = path.join(base, 'appdir-portable.run');
    fs.copyFileSync(bundle, portable);
    fs.mkdirSync(`${portable}.data`);
    assert.notEqual(run(portable).stdout, first);
    assert.equal(run(portable).stdout, run(portable).stdout);
  });

  it('runs a Node app on the Node inside the bundle, with preserve', () => {
    const r = run(nodeApp);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`hello from node v${DEFAULT_LINE}\\.`), "the default Node line, not the builder's");
    assert.equal(run(nodeApp, ['set', 'color', 'blue']).status, 0);
    assert.equal(run(nodeApp, ['get', 'color']).stdout, 'blue\n');
    assert.equal(run(nodeApp, ['bogus']).status, 2);
    // even with no node on PATH
    const noNode = run(nodeApp, ['get', 'color'], { PATH: '/nonexistent' });
    assert.equal(noNode.stdout, 'blue\n', noNode.stderr);
  });

  it('a setting rewritten with a shorter value reads back whole in the next launches', () => {
    assert.equal(run(nodeApp, ['set', 'greeting', 'a very long greeting value that takes space']).status, 0);
    assert.equal(run(nodeApp, ['set', 'greeting', 'hi']).status, 0);
    const r = run(nodeApp, ['get', 'greeting']);
    assert.equal(r.stdout, 'hi\n', r.stderr);
    assert.equal(run(nodeApp, ['get', 'color']).stdout, 'blue\n');
  });

  it('--overpack-extract yields the exact tree; OVERPACK_EXTRACT_AND_RUN works without FUSE', () => {
    const dest = path.join(base, 'extracted');
    const r = run(shellApp, ['--overpack-extract', dest]);
    assert.equal(r.status, 0, r.stderr);
    const fields = ['type', 'mode', 'size', 'hash', 'target', 'mtimeMs'] as const;
    assert.deepEqual(comparable(snapshot(dest), [...fields]), comparable(snapshot(path.join(base, 'app-shell')), [...fields]));
    // A private mount namespace with an empty /dev: no FUSE at all.
    const noFuse = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev && exec ${shellApp} x`], { encoding: 'utf8', env: { ...env, OVERPACK_EXTRACT_AND_RUN: '1' } });
    assert.equal(noFuse.status, 0, noFuse.stderr);
    assert.match(noFuse.stdout, /args: x/);
    const fails = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev && exec ${shellApp}`], { encoding: 'utf8', env });
    assert.equal(fails.status, 3);
    assert.match(fails.stderr, /\/dev\/fuse does not exist.*--overpack-extract-and-run/s);
  });

  it('reports a flipped byte and never serves it', () => {
    const bad = path.join(base, 'flipped.run');
    fs.copyFileSync(shellApp, bad);
    const info = JSON.parse(spawnSync(process.execPath, [CLI, 'inspect', shellApp], { encoding: 'utf8' }).stdout);
    assert.ok(info.files >= 4);
    // find the frame that holds hello.sh's content (compressed) and flip one byte inside it
    const opened = readImage(bad);
    const ref = [...opened.tree.walk()].find((e) => e.path === '/bin/hello.sh')!.pieces![0]!;
    fs.closeSync(opened.fd);
    const data = fs.readFileSync(bad);
    const at = ref.position + Math.floor(ref.storedLength / 2);
    data[at] = data[at]! ^ 0xff;
    fs.writeFileSync(bad, data);
    const r = run(bad);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /\/bin\/hello\.sh in the bundle is corrupt/);
    assert.doesNotMatch(r.stdout, /hello from/);
    const v = spawnSync(process.execPath, [CLI, 'verify', bad], { encoding: 'utf8' });
    assert.equal(v.status, 1);
    assert.match(v.stderr, /\/bin\/hello\.sh/);
    assert.equal(spawnSync(process.execPath, [CLI, 'verify', shellApp], { encoding: 'utf8' }).status, 0);
  });

  it('refuses truncated bundles and bad footers with a clear message', () => {
    const cut = path.join(base, 'cut.run');
    const data = fs.readFileSync(shellApp);
    fs.writeFileSync(cut, data.subarray(0, data.length - 100), { mode: 0o755 });
    let r = run(cut);
    assert.equal(r.status, 65);
    assert.match(r.stderr, /truncated|no overpack image/);
    const footer = Buffer.from(data);
    footer.writeBigUInt64LE(BigInt(data.length * 2), footer.length - 72 + 24); // index offset past the end
    fs.writeFileSync(cut, footer, { mode: 0o755 });
    r = run(cut);
    assert.equal(r.status, 65);
    assert.match(r.stderr, /footer points outside the file/);
    const index = Buffer.from(data);
    index[index.length - 80] = index[index.length - 80]! ^ 1; // last byte of the index
    fs.writeFileSync(cut, index, { mode: 0o755 });
    r = run(cut);
    assert.equal(r.status, 65);
    assert.match(r.stderr, /does not match its hash/);
  });

  it('builds reproducibly and validates manifests', () => {
    const again = path.join(base, 'again.run');
    assert.equal(build(path.join(base, 'app-shell'), again).status, 0);
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(shellApp)), 'byte-identical');
    // From another working directory too (esbuild's module names are relative to the checkout).
    const elsewhere = path.join(base, 'elsewhere.run');
    const fromRoot = spawnSync(process.execPath, [CLI, 'build', path.join(base, 'app-shell'), '-o', elsewhere], { encoding: 'utf8', env: buildEnv, cwd: '/', timeout: 300000 });
    assert.equal(fromRoot.status, 0, fromRoot.stderr);
    assert.doesNotMatch(fromRoot.stderr, /building the runtime executable/, 'the cached runtime is reused');
    assert.ok(fs.readFileSync(elsewhere).equals(fs.readFileSync(shellApp)), 'byte-identical from another cwd');
    const bad = path.join(base, 'badapp');
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, 'overpack.json'), JSON.stringify({ name: 'x y', version: '1', entrypoint: '../out', colour: 'red', overlay: { onExit: 'keep' } }));
    const r = build(bad, path.join(base, 'bad.run'));
    assert.equal(r.status, 1);
    for (const m of [/name:/, /entrypoint: must be a relative path/, /colour: unknown field/, /overlay.onExit: must be "preserve" or "discard"/]) assert.match(r.stderr, m);
    assert.ok(!fs.existsSync(path.join(base, 'bad.run')));
    fs.writeFileSync(path.join(bad, 'overpack.json'), '{\n  "name": "x",\n  "version": "1" x\n}\n');
    const syntax = build(bad, path.join(base, 'bad.run'));
    assert.equal(syntax.status, 1);
    assert.match(syntax.stderr, /overpack\.json:3:18 is not valid JSON/);
  });

  it('8 launches of one preserved app at once share one mount: every append kept, all exit cleanly', async () => {
    const app = copyTemplate('shell');
    fs.writeFileSync(
      path.join(app, 'bin', 'hello.sh'),
      `#!/bin/sh
# each launch appends 50 whole lines to one shared file and writes a file of its own
if [ "$1" = show ]; then cat "$APPDIR/state/log"; ls "$APPDIR/state"; exit 0; fi
i=0
while [ $i -lt 50 ]; do echo "launch $1 line $i" >> "$APPDIR/state/log"; i=$((i+1)); done
echo "$1" > "$APPDIR/state/own-$1"
sleep 0.3
`,
    );
    const bundle = path.join(base, 'many.run');
    assert.equal(build(app, bundle).status, 0);
    const launches = Array.from({ length: 8 }, (_, n) =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const p = spawn(bundle, [String(n)], { env, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        p.stderr.on('data', (d) => (err += d));
        p.on('exit', (code) => resolve({ code, err }));
      }),
    );
    for (const r of await Promise.all(launches)) assert.equal(r.code, 0, r.err);
    assert.deepEqual(mountsUnder(home), [], 'the last one out unmounted');
    const shown = run(bundle, ['show']);
    assert.equal(shown.status, 0, shown.stderr);
    const lines = shown.stdout.split('\n').filter((l) => l.startsWith('launch '));
    assert.equal(lines.length, 400);
    for (let n = 0; n < 8; n++) {
      assert.equal(lines.filter((l) => l.startsWith(`launch ${n} line `)).length, 50, `launch ${n}`);
      assert.match(shown.stdout, new RegExp(`^own-${n}$`, 'm'));
    }
    assert.ok(lines.every((l) => /^launch \d line \d+$/.test(l)), 'no line torn or interleaved');
  });

  it('kill -9 of the runtime while the app writes: every fsync\'d write is there after relaunch', { timeout: 60000 }, async () => {
    const app = copyTemplate('shell');
    fs.writeFileSync(
      path.join(app, 'bin', 'hello.sh'),
      `#!/bin/sh
if [ "$1" = show ]; then cat "$APPDIR/state/journal"; exit 0; fi
i=0
while :; do
  { echo "record $i" >> "$APPDIR/state/journal" && sync "$APPDIR/state/journal" && echo "durable $i"; } || exit 1
  i=$((i+1))
done
`,
    );
    const bundle = path.join(base, 'journal.run');
    assert.equal(build(app, bundle).status, 0);
    const p = spawn(bundle, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    await new Promise<void>((resolve, reject) => {
      p.stdout.on('data', (d) => {
        out += d;
        if ((out.match(/durable/g) ?? []).length >= 30) resolve();
      });
      p.on('exit', (code) => reject(new Error(`the app stopped early (${code}): ${err}`)));
    });
    p.kill('SIGKILL');
    await new Promise((r) => p.on('exit', r));
    const reported = (out.match(/durable (\d+)/g) ?? []).map((l) => Number(l.split(' ')[1]));
    const last = Math.max(...reported);
    const shown = run(bundle, ['show']);
    assert.equal(shown.status, 0, shown.stderr);
    const records = shown.stdout.split('\n').filter((l) => l.startsWith('record '));
    assert.ok(records.length >= last + 1, `only ${records.length} records, ${last + 1} were reported durable`);
    records.forEach((l, i) => assert.equal(l, `record ${i}`));
    assert.deepEqual(mountsUnder(home), [], 'the stale mount was cleaned by the relaunch');
  });
});

after(() => fs.rmSync(base, { recursive: true, force: true }));

describe('more apps', () => {
  const dir = path.join(base, 'more');
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  /** WRITEs the runtime answered in JS plus those its addon answered itself (fuse3_direct.c), from OVERPACK_FUSE_STATS. */
  const writes = (stderr: string) => Number(/^\s+write\s+(\d+)/m.exec(stderr)?.[1] ?? 0) + Number(/answered by the addon itself: \d+ READ, (\d+) WRITE/.exec(stderr)?.[1] ?? 0);

  it('overlay.writeback in the manifest reaches the kernel: small writes are merged, SQLite state is kept across launches', () => {
    fs.mkdirSync(dir, { recursive: true });
    // 2,000 writes of 100 bytes and a few SQLite transactions; OVERPACK_FUSE_STATS=1 makes the
    // runtime print its request counts at unmount, which tell whether the kernel merged them.
    const script = [
      '#!/bin/sh',
      'exec python3 - "$APPDIR" <<"EOF"',
      'import os, sqlite3, sys',
      'd = sys.argv[1] + "/state"',
      'os.makedirs(d, exist_ok=True)',
      'fd = os.open(d + "/small.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)',
      'for i in range(2000): os.write(fd, bytes([65 + i % 26]) * 100)',
      'os.close(fd)',
      'db = sqlite3.connect(d + "/state.db")',
      'db.execute("create table if not exists kv (id integer primary key, v blob)")',
      'for t in range(5):',
      '    with db:',
      '        for i in range(50): db.execute("insert into kv (v) values (?)", (os.urandom(200),))',
      'print(db.execute("pragma integrity_check").fetchone()[0], db.execute("select count(*) from kv").fetchone()[0], os.stat(d + "/small.bin").st_size)',
      'EOF',
      '',
    ].join('\n');
    const counts: Record<string, number> = {};
    for (const writeback of [true, false]) {
      const app = path.join(dir, `wb-${writeback}`);
      fs.mkdirSync(app, { recursive: true });
      fs.writeFileSync(path.join(app, 'run.sh'), script, { mode: 0o755 });
      // The bundle without writeback asks for passthrough (which this root server may have).
      fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: `wb-${writeback}`, version: '1.0.0', entrypoint: 'run.sh', overlay: { writeback, linger: 0, ...(writeback ? {} : { passthrough: true }) } }));
      const out = path.join(dir, `wb-${writeback}.run`);
      const b = build(app, out);
      assert.equal(b.status, 0, b.stderr);
      // Without writeback the first run is without passthrough too (the environment overrides
      // the manifest), so that every write(2) reaches the server; the second has it.
      const first = run(out, [], { OVERPACK_FUSE_STATS: '1', OVERPACK_FUSE_PASSTHROUGH: '0' });
      assert.equal(first.status, 0, first.stderr);
      assert.equal(first.stdout, 'ok 250 200000\n');
      counts[String(writeback)] = writes(first.stderr);
      const second = run(out, [], { OVERPACK_FUSE_STATS: '1' });
      assert.equal(second.stdout, 'ok 500 200000\n', second.stderr);
      if (!writeback) {
        counts.passthrough = writes(second.stderr);
        assert.match(first.stderr, /passthrough: off/);
        assert.match(second.stderr, /passthrough: on/);
      }
    }
    assert.ok(counts.false! >= 2000, `without writeback every write(2) is a request: ${counts.false}`);
    assert.ok(counts.true! < 200, `with overlay.writeback the kernel merges them: ${counts.true} WRITE requests`);
    assert.equal(counts.passthrough, 0, 'with overlay.passthrough (and a root server) the kernel writes the upper file itself');
    assert.deepEqual(mountsUnder(home), []);
  });

  it('runs a native binary (the binary template) and passes its exit status', () => {
    fs.mkdirSync(dir, { recursive: true });
    const app = path.join(dir, 'binary');
    fs.cpSync(path.join(ROOT, 'templates', 'binary'), app, { recursive: true });
    const cc = spawnSync(path.join(app, 'build.sh'), [], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const bundle = path.join(dir, 'binary.run');
    assert.equal(build(app, bundle).status, 0);
    const r = run(bundle, ['a', '--exit', '5']);
    assert.equal(r.status, 5);
    assert.match(r.stdout, /hello from a native binary in .*\/overpack\/mnt\/hello-binary-/);
    assert.match(r.stdout, /arg: a/);
  });

  it('stores, serves and verifies a sparse file past 4 GiB (file offsets beyond 32 bits), holes left out of the bundle', { timeout: 240000 }, () => {
    const app = path.join(dir, 'huge');
    fs.mkdirSync(app, { recursive: true });
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'huge', version: '1.0.0', entrypoint: 'read.sh', overlay: { onExit: 'discard' } }));
    // Prints the 8 bytes at 4 GiB + 3 and the last 8 bytes of the file.
    fs.writeFileSync(path.join(app, 'read.sh'), '#!/bin/sh\ndd if="$APPDIR/big.bin" bs=1 skip=4294967299 count=8 2>/dev/null; echo; tail -c 8 "$APPDIR/big.bin"; echo\n', { mode: 0o755 });
    const size = 4 * 1024 ** 3 + 64 * 1024;
    const fd = fs.openSync(path.join(app, 'big.bin'), 'w');
    fs.writeSync(fd, 'PAST-4G!', 4294967299);
    fs.writeSync(fd, 'THE-END!', size - 8);
    fs.closeSync(fd);
    const bundle = path.join(dir, 'huge.run');
    try {
      const b = build(app, bundle);
      assert.equal(b.status, 0, b.stderr);
      assert.ok(fs.statSync(bundle).size < 200 * 1024 ** 2, `the holes are not stored (${fs.statSync(bundle).size} bytes)`);
      const r = run(bundle);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.split('\n').slice(0, 2), ['PAST-4G!', 'THE-END!']);
      const v = spawnSync(process.execPath, [CLI, 'verify', bundle], { encoding: 'utf8', env: buildEnv, timeout: 120000 });
      assert.equal(v.status, 0, v.stderr);
    } finally {
      fs.rmSync(bundle, { force: true });
      fs.rmSync(app, { recursive: true, force: true });
    }
  });

  it('runs a real npm package with many files: eslint linting a sample file, and fork() on the bundled node', () => {
    const app = path.join(dir, 'lint');
    fs.mkdirSync(app, { recursive: true });
    const npm = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', app, 'eslint@9'], { encoding: 'utf8', timeout: 300000 });
    assert.equal(npm.status, 0, npm.stderr);
    fs.writeFileSync(path.join(app, 'eslint.config.cjs'), 'module.exports = [{ rules: { "no-unused-vars": "error" } }];\n');
    fs.writeFileSync(
      path.join(app, 'main.cjs'),
      `const { ESLint } = require('eslint');
const { fork } = require('child_process');
if (process.argv[2] === 'child') { process.send('child on ' + process.version); return; }
(async () => {
  const eslint = new ESLint({ cwd: __dirname });
  const [result] = await eslint.lintText(require('fs').readFileSync(process.argv[2], 'utf8'), { filePath: __dirname + '/sample.js' });
  for (const m of result.messages) console.log(m.ruleId + ': ' + m.message);
  const child = fork(__filename, ['child']);
  child.on('message', (m) => { console.log(m); process.exitCode = result.errorCount; });
})();
`,
    );
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'lint', version: '1.0.0', entrypoint: 'main.cjs', overlay: { onExit: 'discard' } }));
    const files = Number(spawnSync('sh', ['-c', `find ${app} -type f | wc -l`], { encoding: 'utf8' }).stdout);
    assert.ok(files > 500, `eslint brings ${files} files`);
    const bundle = path.join(dir, 'lint.run');
    const b = build(app, bundle);
    assert.equal(b.status, 0, b.stderr);
    fs.writeFileSync(path.join(base, 'sample.js'), 'const unused = 1;\n');
    const r = run(bundle, [path.join(base, 'sample.js')], { PATH: '/usr/bin:/bin' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stdout, /no-unused-vars: 'unused' is assigned a value but never used/);
    assert.match(r.stdout, new RegExp(`child on v${DEFAULT_LINE}\\.`));
  });

  it('works for an unprivileged user (fusermount3, ~/.cache and data in their home)', () => {
    const user = 'overpack-test';
    spawnSync('useradd', ['--system', '--no-create-home', user], { stdio: 'ignore' });
    const uhome = path.join(dir, 'userhome');
    fs.mkdirSync(uhome, { recursive: true });
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(base, 0o755);
    spawnSync('chown', [user, uhome]);
    const bundle = path.join(dir, 'user-shell.run');
    fs.copyFileSync(shellAppPath(), bundle);
    fs.chmodSync(bundle, 0o755);
    const mode = fs.statSync('/dev/fuse').mode & 0o777;
    fs.chmodSync('/dev/fuse', 0o666); // as distributions ship it; restored below
    try {
      const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim();
      const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim();
      const as = (args: string[]) =>
        spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', bundle, ...args], {
          encoding: 'utf8',
          env: { PATH: '/usr/bin:/bin', HOME: uhome, OVERPACK_LINGER: '0' }, // the linger for a user: test/linger.test.ts
          cwd: uhome,
          timeout: 60000,
        });
      const one = as(['x']);
      assert.equal(one.status, 0, one.stderr);
      assert.match(one.stdout, /run 1/);
      assert.match(as([]).stdout, /run 2/);
      const state = path.join(uhome, '.local/share/overpack/hello-shell/upper/state/runs');
      assert.equal(fs.statSync(state).uid, Number(uid));
      assert.deepEqual(mountsUnder(uhome), []);
    } finally {
      fs.chmodSync('/dev/fuse', mode);
    }
  });
});

function shellAppPath(): string {
  return path.join(base, 'shell.run');
}
