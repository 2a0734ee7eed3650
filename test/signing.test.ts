/**
 * Signed bundles: `overpack keygen`, `overpack build --sign`, `overpack verify --key`, and the
 * runtime refusing unsigned, wrongly signed and modified bundles (exit 65) before it extracts,
 * mounts or runs anything, whether the user names a key or the manifest asks for a signature.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT, forceUnmount, mountsUnder, tempDir, isolatedEnv } from './helpers.js';
import { FOOTER_SIZE } from '../runtime/image/format.js';
import { TRAILER_SIZE } from '../runtime/image/signature.js';

const base = tempDir('signing');
const home = path.join(base, 'home');
const env = isolatedEnv(home);
delete env.OVERPACK_VERIFY_SIGNATURE;
const dataDir = path.join(home, '.local', 'share', 'overpack', 'hello-shell');

function cli(args: string[], extra: { umask?: string } = {}): SpawnSyncReturns<string> {
  if (extra.umask) return spawnSync('sh', ['-c', `umask ${extra.umask} && exec "$0" "$@"`, process.execPath, CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
}

function run(bundle: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extraEnv }, cwd: base, timeout: 60000 });
}

function info(bundle: string, args: string[] = []): { signature: { state: string; signer?: string; cached?: boolean; ms?: number } } {
  const r = run(bundle, [...args, '--overpack-info']);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { signature: { state: string; signer?: string; cached?: boolean; ms?: number } };
}

/** A copy of `src` with `edit` applied to its bytes. */
function variant(src: string, name: string, edit: (b: Buffer) => Buffer | void): string {
  const file = path.join(base, name);
  const data = fs.readFileSync(src);
  fs.writeFileSync(file, edit(data) ?? data, { mode: 0o755 });
  return file;
}

/** Refused with exit 65 and `why`, and nothing ran, was mounted or was created for the app. */
function refused(r: SpawnSyncReturns<string>, why: RegExp): void {
  assert.equal(r.status, 65, r.stderr);
  assert.match(r.stderr, why);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(r.stdout, '', 'the app did not run');
  assert.deepEqual(mountsUnder(home), []);
  assert.ok(!fs.existsSync(dataDir), 'no data dir was made');
  assert.ok(!fs.existsSync(path.join(home, '.cache', 'overpack', 'native')), 'no addon was extracted');
}

describe('signing', () => {
  const app = path.join(base, 'app');
  const key = path.join(base, 'keys', 'publisher');
  const other = path.join(base, 'keys', 'other');
  const signed = path.join(base, 'signed.run');
  const unsigned = path.join(base, 'unsigned.run');
  let publicB64 = '';

  before(() => {
    fs.mkdirSync(path.join(base, 'keys'), { recursive: true });
    fs.mkdirSync(home, { recursive: true });
    fs.cpSync(path.join(ROOT, 'templates', 'shell'), app, { recursive: true });
    const k = cli(['keygen', key], { umask: '000' });
    assert.equal(k.status, 0, k.stderr);
    publicB64 = k.stdout.trim();
    assert.equal(cli(['keygen', other]).status, 0);
    const s = cli(['build', app, '-o', signed, '--sign', `${key}.key`]);
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stderr, /signed by [0-9a-f:]{39}/);
    assert.equal(cli(['build', app, '-o', unsigned]).status, 0);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
    fs.rmSync(base, { recursive: true, force: true });
  });
  const clean = () => fs.rmSync(home, { recursive: true, force: true });

  it('keygen writes a private key only its owner can read and a public key, and never overwrites', () => {
    assert.equal(fs.statSync(`${key}.key`).mode & 0o777, 0o600, 'even with umask 000');
    assert.equal(fs.statSync(`${key}.pub`).mode & 0o777, 0o644);
    assert.match(fs.readFileSync(`${key}.key`, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.match(fs.readFileSync(`${key}.pub`, 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
    assert.match(publicB64, /^[A-Za-z0-9+/]{43}=$/);
    const again = cli(['keygen', key]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already exists.*--force/);
    // a symlink planted where the key goes is not written through
    const planted = path.join(base, 'keys', 'planted');
    fs.symlinkSync(path.join(base, 'victim'), `${planted}.key`);
    assert.equal(cli(['keygen', planted]).status, 1);
    assert.ok(!fs.existsSync(path.join(base, 'victim')));
    for (const c of ['keygen', 'build', 'verify']) assert.equal(cli([c, '--help']).status, 0, c);
    assert.match(cli(['keygen', '--help']).stdout, /--force/);
  });

  it('a signed bundle ends with the signature block, runs as before, and builds reproducibly', () => {
    const data = fs.readFileSync(signed);
    assert.equal(data.subarray(data.length - TRAILER_SIZE, data.length - TRAILER_SIZE + 8).toString('latin1'), 'OVPKSIG\0');
    assert.equal(data.length, fs.statSync(unsigned).size + TRAILER_SIZE);
    const again = path.join(base, 'again.run');
    assert.equal(cli(['build', app, '-o', again, '--sign', `${key}.key`]).status, 0);
    assert.ok(fs.readFileSync(again).equals(data), 'Ed25519 is deterministic: same key, same bytes');
    clean();
    const r = run(signed, ['x']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /run 1\), args: x/);
    assert.equal(info(signed).signature.state, 'signed-unchecked', 'without a requirement nothing is hashed');
    assert.equal(info(unsigned).signature.state, 'unsigned');
  });

  it('overpack verify reports the signature state and checks it against --key', () => {
    let r = cli(['verify', signed, '--key', `${key}.pub`]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /signature: valid, signed by .* \(the trusted key\)/);
    r = cli(['verify', signed]);
    assert.equal(r.status, 0);
    assert.match(r.stderr, /signature: valid.*pass --key/);
    r = cli(['verify', signed, '--key', `${other}.pub`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /valid, but by key .* not the trusted key/);
    r = cli(['verify', unsigned]);
    assert.equal(r.status, 0);
    assert.match(r.stderr, /signature: none/);
    r = cli(['verify', unsigned, '--key', `${key}.pub`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not signed/);
    const flipped = variant(signed, 'verify-flip.run', (b) => void (b[4_000_000] = b[4_000_000]! ^ 1));
    r = cli(['verify', flipped, '--key', `${key}.pub`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /signature: INVALID/);
    r = cli(['verify', signed, '--key', `${key}.key`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /this is a private key/);
    const inspect = JSON.parse(cli(['inspect', signed]).stdout) as { signature: { publicKey: string; checked: string } };
    assert.equal(inspect.signature.publicKey, publicB64);
    assert.match(inspect.signature.checked, /^no/, 'inspect does not claim to have checked it');
    assert.equal((JSON.parse(cli(['inspect', unsigned]).stdout) as { signature: null }).signature, null);
  });

  it('--overpack-verify-signature: runs a bundle signed by that key, refuses everything else with exit 65', () => {
    const pub = `${key}.pub`;
    clean();
    refused(run(unsigned, ['--overpack-verify-signature', pub, 'x']), /is not signed, and --overpack-verify-signature .* requires a signature/);
    refused(run(signed, [`--overpack-verify-signature=${other}.pub`, 'x']), /signed by key .*, not by the key you trust/);
    // one byte of the runtime executable, one of the padding after it, one in a file's data
    const exe = variant(signed, 'flip-exe.run', (b) => void (b[5_000_000] = b[5_000_000]! ^ 0x40));
    refused(run(exe, ['--overpack-verify-signature', pub]), /does not match its bytes: it was modified after it was signed/);
    const content = variant(signed, 'flip-data.run', (b) => {
      // The first bytes of the image are the first frame of file contents (compressed).
      const imageStart = Number(b.readBigUInt64LE(b.length - TRAILER_SIZE - FOOTER_SIZE + 16));
      b[imageStart + 20] = b[imageStart + 20]! ^ 0xff;
    });
    refused(run(content, ['--overpack-verify-signature', pub]), /does not match its bytes/);
    // the signature block cut off: refused as damaged even without any requirement
    const cut = variant(signed, 'cut.run', (b) => b.subarray(0, b.length - TRAILER_SIZE));
    refused(run(cut, ['x']), /signed but its signature block is missing/);
    // a signature block glued to an unsigned bundle
    const glued = variant(unsigned, 'glued.run', (b) => Buffer.concat([b, fs.readFileSync(signed).subarray(-TRAILER_SIZE)]));
    refused(run(glued, ['x']), /signature block does not sit at the end|does not announce one/);
    // the environment variable does the same for every launch
    refused(run(unsigned, ['x'], { OVERPACK_VERIFY_SIGNATURE: pub }), /OVERPACK_VERIFY_SIGNATURE=.* requires a signature/);
    const bad = run(signed, ['--overpack-verify-signature']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /needs the public key file/);
    const missing = run(signed, ['--overpack-verify-signature', path.join(base, 'nope.pub')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read the public key/);
    assert.match(run(signed, ['--overpack-help']).stdout, /--overpack-verify-signature PUB\.pem/);
    const ok = run(signed, ['--overpack-verify-signature', pub, 'y']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /args: y$/m, 'the flag is not passed to the app');
  });

  it('a verified bundle is not hashed again until its file changes; the check costs tens of ms once', () => {
    const pub = `${key}.pub`;
    const copy = variant(signed, 'cached.run', () => undefined);
    clean();
    const first = info(copy, ['--overpack-verify-signature', pub]).signature;
    const second = info(copy, ['--overpack-verify-signature', pub]).signature;
    assert.equal(first.state, 'verified');
    assert.equal(first.cached, false);
    assert.equal(second.cached, true);
    const verified = path.join(home, '.cache', 'overpack', 'verified');
    assert.equal(fs.statSync(verified).mode & 0o777, 0o700);
    for (const f of fs.readdirSync(verified)) assert.equal(fs.statSync(path.join(verified, f)).mode & 0o777, 0o600);
    // rewritten in place with the same bytes: new ctime, so checked again
    fs.writeFileSync(copy, fs.readFileSync(copy));
    assert.equal(info(copy, ['--overpack-verify-signature', pub]).signature.cached, false);
    // modified in place after a successful check: caught, the cache does not vouch for it
    const fd = fs.openSync(copy, 'r+');
    fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 6_000_000);
    fs.closeSync(fd);
    const r = run(copy, ['--overpack-verify-signature', pub, '--overpack-info']);
    assert.equal(r.status, 65, r.stderr);
    // the figures, for the record
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      fs.rmSync(verified, { recursive: true, force: true });
      times.push(info(signed, ['--overpack-verify-signature', pub]).signature.ms!);
    }
    const cachedMs = info(signed, ['--overpack-verify-signature', pub]).signature.ms!;
    const launch = (args: string[]) => {
      const t = process.hrtime.bigint();
      assert.equal(run(signed, [...args, '--overpack-version']).status, 0);
      return Number(process.hrtime.bigint() - t) / 1e6;
    };
    const plain = Math.min(launch([]), launch([]), launch([]));
    const withCache = Math.min(launch(['--overpack-verify-signature', pub]), launch(['--overpack-verify-signature', pub]), launch(['--overpack-verify-signature', pub]));
    process.stderr.write(
      `signature check of a ${(fs.statSync(signed).size / 1048576).toFixed(0)} MiB bundle: ${times.map((t) => t.toFixed(0)).join(', ')} ms uncached, ${cachedMs.toFixed(2)} ms cached; --overpack-version ${plain.toFixed(0)} ms without, ${withCache.toFixed(0)} ms with a cached check\n`,
    );
    assert.ok(cachedMs < 5, `a cached check took ${cachedMs} ms`);
  });

  it('a manifest that requires a signature: enforced at build and at every launch', () => {
    const strict = path.join(base, 'strict-app');
    fs.cpSync(app, strict, { recursive: true });
    const manifestFile = path.join(strict, 'overpack.json');
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as Record<string, unknown>;
    const write = (security: unknown) => fs.writeFileSync(manifestFile, JSON.stringify({ ...manifest, security }));
    const out = path.join(base, 'strict.run');
    write({ requireSignature: true });
    let b = cli(['build', strict, '-o', out]);
    assert.equal(b.status, 1);
    assert.match(b.stderr, /security requires a signed bundle; build with --sign/);
    write({ publicKey: publicB64 });
    b = cli(['build', strict, '-o', out, '--sign', `${other}.key`]);
    assert.equal(b.status, 1);
    assert.match(b.stderr, /is not the key the manifest's security.publicKey names/);
    b = cli(['build', strict, '-o', out, '--sign', `${key}.pub`]);
    assert.equal(b.status, 1);
    assert.match(b.stderr, /is not a PEM private key \(it is a public key/);
    assert.ok(!fs.existsSync(out));
    b = cli(['build', strict, '-o', out, '--sign', `${key}.key`]);
    assert.equal(b.status, 0, b.stderr);
    clean();
    const r = run(out, ['z']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /args: z/);
    // signature block cut off and the footer's flag cleared: a well-formed unsigned bundle
    const stripped = variant(out, 'strict-stripped.run', (buf) => {
      const b2 = Buffer.from(buf.subarray(0, buf.length - TRAILER_SIZE));
      b2.writeUInt32LE(0, b2.length - FOOTER_SIZE + 12);
      return b2;
    });
    clean();
    refused(run(stripped, ['z']), /is not signed, and the app's manifest \(security\) requires a signature/);
    const flipped = variant(out, 'strict-flipped.run', (buf) => void (buf[5_000_000] = buf[5_000_000]! ^ 1));
    refused(run(flipped, ['z']), /does not match its bytes/);
    // bad policies are build errors naming the field
    for (const [security, why] of [
      [{ requireSignature: 'yes' }, /security.requireSignature: must be true or false/],
      [{ publicKey: 'not a key' }, /security.publicKey: neither a PEM public key nor the base64/],
      [{ publicKey: publicB64, requireSignature: false }, /security.publicKey: a required signer contradicts requireSignature: false/],
      [{ requireSignature: true, keys: [] }, /security.keys: unknown field/],
      ['strict', /security: must be an object/],
    ] as const) {
      write(security);
      b = cli(['build', strict, '-o', out, '--sign', `${key}.key`]);
      assert.equal(b.status, 1, JSON.stringify(security));
      assert.match(b.stderr, why);
    }
  });
});
