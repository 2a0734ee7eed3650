/**
 * Bundles whose runtime is stored compressed behind the static loader
 * (runtime/loader/overpack_loader.c), against the same app built with the runtime stored raw:
 * the same output, environment and `node` for the app; the runtime decompressed once into the
 * cache and shared; from memory where the cache is noexec or cannot be written; damage refused
 * with exit 65 before anything runs.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { CLI, forceUnmount, isolatedEnv, mountsUnder, tempDir } from './helpers.js';
import { readImage, sha256 } from '../runtime/image/format.js';

const base = tempDir('loader');
const home = path.join(base, 'home');
const env = isolatedEnv(home);

function build(app: string, out: string, args: string[] = []): void {
  const r = spawnSync(process.execPath, [CLI, 'build', app, '-o', out, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  assert.equal(r.status, 0, r.stderr);
}

function run(bundle: string, args: string[] = [], extra: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extra }, cwd: base, timeout: 60000 });
}

/** What the app reports, with the bundle's own path made neutral. */
function report(r: SpawnSyncReturns<string>, bundle: string): Record<string, string> {
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, string>;
  assert.equal(out.bundle, bundle, 'OVERPACK_BUNDLE names the bundle, not the runtime file');
  return { ...out, bundle: '<bundle>', argv0: path.basename(out.argv0!) === path.basename(bundle) ? '<bundle>' : out.argv0! };
}

describe('the runtime stored compressed', () => {
  const app = path.join(base, 'app');
  const compressed = path.join(base, 'app.run');
  const raw = path.join(base, 'app-raw.run');
  const cacheDir = () => path.join(env.XDG_CACHE_HOME!, 'overpack', 'runtime');
  let record: { size: number; sha256: string };
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'loader-app', version: '1.0.0', entrypoint: 'app.js', overlay: { onExit: 'discard' } }));
    fs.writeFileSync(path.join(app, 'app.js'), [
      "const { execFileSync } = require('child_process');",
      "const fs = require('fs');",
      'console.log(JSON.stringify({',
      '  args: process.argv.slice(2).join(" "), version: process.version,',
      '  bundle: process.env.OVERPACK_BUNDLE, argv0: process.env.ARGV0, appdir: fs.existsSync(process.env.APPDIR + "/app.js") ? "ok" : "missing",',
      "  node: execFileSync('node', ['-p', 'process.version'], { encoding: 'utf8' }).trim(),",
      "  leaked: Object.keys(process.env).filter((k) => k === 'OVERPACK_LOADED_FROM').join(','),",
      '}));',
    ].join('\n'));
    build(app, compressed);
    build(app, raw, ['--runtime-compression', 'none']);
    const img = readImage(compressed);
    fs.closeSync(img.fd);
    record = img.index.executable!;
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
    spawnSync('umount', [path.join(base, 'noexec')], { stdio: 'ignore' });
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('is a third of the size, starts with a static loader, and inspect says what is stored how', () => {
    const [c, r] = [compressed, raw].map((f) => fs.statSync(f).size);
    assert.ok(c! < r! * 0.45, `compressed ${c} vs raw ${r}`);
    assert.doesNotMatch(spawnSync('readelf', ['-d', compressed], { encoding: 'utf8' }).stdout, /NEEDED/);
    const info = JSON.parse(spawnSync(process.execPath, [CLI, 'inspect', compressed], { encoding: 'utf8' }).stdout) as { runtime: { bytes: number; storedBytes: number; compression: string } };
    assert.equal(info.runtime.bytes, record.size);
    assert.ok(info.runtime.storedBytes < record.size / 2);
    assert.equal(info.runtime.compression, 'zstd:12');
    const rawInfo = JSON.parse(spawnSync(process.execPath, [CLI, 'inspect', raw], { encoding: 'utf8' }).stdout) as { runtime: { compression: string } };
    assert.equal(rawInfo.runtime.compression, 'none');
  });

  it('runs the app as the raw bundle does: output, arguments, environment, the node on its PATH', () => {
    fs.rmSync(cacheDir(), { recursive: true, force: true });
    const first = report(run(compressed, ['a', 'b c']), compressed);
    assert.deepEqual(first, report(run(raw, ['a', 'b c']), raw));
    assert.equal(first.appdir, 'ok');
    assert.equal(first.leaked, '', 'the app does not inherit the loader\'s variable');
    assert.equal(first.node, first.version, 'node -p on the app\'s PATH is a plain node of the same version');
    // The runtime was decompressed once, into the cache, exactly.
    const file = path.join(cacheDir(), record.sha256.slice(0, 32), 'overpack-runtime');
    const bytes = fs.readFileSync(file);
    assert.equal(sha256(bytes).toString('hex'), record.sha256);
    const made = fs.statSync(file).mtimeMs;
    assert.deepEqual(report(run(compressed, ['again']), compressed).args, 'again');
    assert.equal(fs.statSync(file).mtimeMs, made, 'a second launch uses the cached runtime');
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['overpack-runtime'], 'no temporary file left');
  });

  it('runs from memory where the cache is noexec or cannot be made', () => {
    const noexec = path.join(base, 'noexec');
    fs.mkdirSync(noexec);
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'noexec,size=512m', 'tmpfs', noexec]).status, 0, 'mount a noexec tmpfs (the tests run as root)');
    try {
      const r = run(compressed, ['x'], { XDG_CACHE_HOME: noexec });
      assert.equal(report(r, compressed).args, 'x', r.stderr);
      assert.match(report(r, compressed).node!, /^v\d+/);
    } finally {
      spawnSync('umount', [noexec]);
    }
    const nowhere = run(compressed, ['y'], { HOME: '/nonexistent', XDG_CACHE_HOME: '', XDG_DATA_HOME: path.join(base, 'data') });
    assert.equal(report(nowhere, compressed).args, 'y', nowhere.stderr);
  });

  it('refuses a damaged runtime frame or an unfilled loader with exit 65, before anything runs', () => {
    const img = readImage(compressed);
    fs.closeSync(img.fd);
    const loader = img.index.loader!;
    const data = fs.readFileSync(compressed);
    const flipped = path.join(base, 'flipped.run');
    const d = Buffer.from(data);
    d[loader.size + Math.floor(loader.frameLength / 2)]! ^= 0x10;
    fs.writeFileSync(flipped, d, { mode: 0o755 });
    const fresh = { XDG_CACHE_HOME: path.join(base, 'fresh-cache') };
    const r = run(flipped, [], fresh);
    assert.equal(r.status, 65, r.stderr);
    assert.match(r.stderr, /overpack: error: .*flipped\.run: its runtime (does not decompress|is cut short|decompresses to more).*\(damaged\); download or build it again/);
    assert.equal(r.stdout, '');
    assert.deepEqual(fs.readdirSync(path.join(fresh.XDG_CACHE_HOME, 'overpack', 'runtime', record.sha256.slice(0, 32))), [], 'no runtime or temporary file kept');
    const cut = path.join(base, 'cut.run');
    fs.writeFileSync(cut, data.subarray(0, loader.size + 1000), { mode: 0o755 });
    const c = run(cut, [], { XDG_CACHE_HOME: path.join(base, 'cut-cache') });
    assert.equal(c.status, 65, c.stderr);
    assert.match(c.stderr, /ends inside its runtime/);
    const blank = path.join(base, 'blank.run');
    const b = Buffer.from(data);
    const at = b.indexOf('OVERPACK-LOADER1');
    b.fill(0, at + 16, at + 16 + 24);
    fs.writeFileSync(blank, b, { mode: 0o755 });
    const u = run(blank);
    assert.equal(u.status, 65, u.stderr);
    assert.match(u.stderr, /loader was not filled in by overpack build/);
  });

  it('builds reproducibly, and a second build reuses the compressed runtime', () => {
    const again = path.join(base, 'again.run');
    const t = Date.now();
    build(app, again);
    assert.ok(Date.now() - t < 20000, 'the compressed runtime came from the cache');
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(compressed)));
  });
});
