/**
 * Bundles built here, run in a real Debian 11 root (glibc 2.31, older than this machine's):
 * they must start, serve their app through FUSE with the addon they carry (not the
 * extract-and-run fallback), keep state between runs, pass exit codes through and leave no
 * mount behind.
 *
 * Each run is its own `unshare --mount --pid` namespace with private propagation: /dev, /proc
 * and /sys are mounted into the root only there, the bundle's FUSE mount too, and all of them
 * end with the namespace (its init is the shell below; when it exits the kernel kills what is
 * left and drops the mounts). The scripts still check, inside, that the runtime unmounted its
 * own FUSE mount, and the suite checks that nothing is mounted under the root out here.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { CLI, ROOT, mountsUnder, tempDir } from './helpers.js';
import { ensureBullseyeRoot } from './bullseye-root.js';
import { DEFAULT_LINE } from '../builder/node-release.js';

const base = tempDir('debian11');
const tag = randomBytes(4).toString('hex');
/** Inside the root: the bundles, and a HOME of this run's own (the root is reused). */
const optDir = `/opt/overpack-test-${tag}`;
const homeDir = `/tmp/overpack-home-${tag}`;
let root = '';

function build(template: string, out: string): void {
  const app = path.join(base, template);
  fs.cpSync(path.join(ROOT, 'templates', template), app, { recursive: true });
  const r = spawnSync(process.execPath, [CLI, 'build', app, '-o', out], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' }, timeout: 300000 });
  assert.equal(r.status, 0, r.stderr);
}

/** Runs `script` (sh) chrooted into the Debian 11 root, in a namespace of its own. */
function inDebian11(script: string): SpawnSyncReturns<string> {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const R = q(root);
  const setup = [
    'set -e',
    `mount --rbind /dev ${R}/dev`,
    `mount -t proc proc ${R}/proc`,
    `mount --rbind /sys ${R}/sys`,
    `exec chroot ${R} /usr/bin/env -i HOME=${homeDir} PATH=/usr/sbin:/usr/bin:/sbin:/bin NO_COLOR=1 /bin/sh -c ${q(script)}`,
  ].join('\n');
  return spawnSync('unshare', ['--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', 'sh', '-c', setup], { encoding: 'utf8', timeout: 120000 });
}

/**
 * Serves the bundle with --overpack-mount (or shows the mount of its lingering mount server),
 * reports how its mountpoint is mounted, stops it, waits for the mount server to exit on its
 * own (the runs before it had the linger on, as users get it).
 */
const MOUNT_PROBE = (bundle: string, app: string) => `
${bundle} --overpack-mount > /tmp/mp-${tag} 2>/tmp/mp-err-${tag} &
pid=$!
i=0; while [ ! -s /tmp/mp-${tag} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mp=$(head -n 1 /tmp/mp-${tag})
awk -v d="$mp" '$2 == d { print "mounted-as", $3 }' /proc/self/mounts
kill -TERM $pid; wait $pid || true
cat /tmp/mp-err-${tag} >&2
i=0; while [ -e "$HOME/.local/share/overpack/${app}/lock" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
awk '$3 ~ /^fuse/ { print "left-mounted", $2 }' /proc/self/mounts
rm -f /tmp/mp-${tag} /tmp/mp-err-${tag}
`;

describe('bundles on Debian 11 (glibc 2.31)', () => {
  before(() => {
    const started = Date.now();
    try {
      const made = ensureBullseyeRoot();
      root = made.dir;
      if (made.made) console.error(`# debian11: made the Debian 11 root in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (err) {
      // No root, no test: a failure that says why (no network, no debootstrap), never a skip.
      throw new Error(`cannot make the Debian 11 root with debootstrap: ${(err as Error).message}`);
    }
    const glibc = fs.readdirSync(path.join(root, 'lib', 'x86_64-linux-gnu')).find((f) => /^libc-2\.\d+\.so$/.test(f));
    assert.equal(glibc, 'libc-2.31.so', 'the root is Debian 11 with glibc 2.31');
    build('shell', path.join(base, 'shell.run'));
    build('node', path.join(base, 'node.run'));
    fs.mkdirSync(path.join(root, optDir), { recursive: true });
    fs.mkdirSync(path.join(root, homeDir), { recursive: true, mode: 0o700 });
    for (const b of ['shell.run', 'node.run']) fs.copyFileSync(path.join(base, b), path.join(root, optDir, b));
    fs.chmodSync(path.join(root, optDir, 'shell.run'), 0o755);
    fs.chmodSync(path.join(root, optDir, 'node.run'), 0o755);
  });

  after(() => {
    const left = root ? mountsUnder(root) : [];
    if (root) {
      for (const p of [optDir, homeDir]) fs.rmSync(path.join(root, p), { recursive: true, force: true });
    }
    fs.rmSync(base, { recursive: true, force: true });
    assert.deepEqual(left, [], 'nothing is left mounted under the Debian 11 root');
  });

  it('a shell bundle serves its app through FUSE with its own addon, keeps state, passes exit codes', () => {
    const r = inDebian11(`
      ${optDir}/shell.run one; echo "status $?"
      ${optDir}/shell.run two; echo "status $?"
      ${optDir}/shell.run --fail 3; echo "status $?"
      ${MOUNT_PROBE(`${optDir}/shell.run`, 'hello-shell')}
    `);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /without FUSE|GLIBC_|not found/, r.stderr);
    assert.match(r.stdout, /hello from the shell template \(run 1\), args: one\nstatus 0\n/);
    assert.match(r.stdout, /\(run 2\), args: two\nstatus 0\n/, 'the second run sees the first run\'s state');
    assert.match(r.stdout, /\(run 3\), args: --fail 3\nstatus 3\n/, 'exit code 3 passes through');
    assert.match(r.stdout, /^mounted-as fuse\.overpack$/m, `the app's directory is our FUSE mount:\n${r.stdout}\n${r.stderr}`);
    assert.doesNotMatch(r.stdout, /left-mounted/, 'the runtime unmounted what it mounted (its mount server exited on its own)');
  });

  it('the fallback without FUSE runs there too (extract and run)', () => {
    const r = inDebian11(`${optDir}/shell.run --overpack-extract-and-run x; echo "status $?"`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /running without FUSE/);
    assert.match(r.stdout, /hello from the shell template \(run \d+\), args: x\nstatus 0\n/);
  });

  it('a Node bundle (.js entrypoint) runs on its own Node there and keeps its settings', () => {
    const r = inDebian11(`
      ${optDir}/node.run set colour blue; echo "status $?"
      ${optDir}/node.run get colour; echo "status $?"
      ${optDir}/node.run get nothing; echo "status $?"
      ${optDir}/node.run; echo "status $?"
      ${MOUNT_PROBE(`${optDir}/node.run`, 'hello-node')}
    `);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /without FUSE|GLIBC_|not found/, r.stderr);
    assert.match(r.stdout, /^colour=blue\nstatus 0\nblue\nstatus 0\nstatus 1\n/, r.stdout);
    assert.match(r.stdout, new RegExp(`hello from node v${DEFAULT_LINE}\\.\\d+\\.\\d+; settings: \\{"colour":"blue"\\}\\nstatus 0`), "on the default Node line");
    assert.match(r.stdout, /^mounted-as fuse\.overpack$/m, `${r.stdout}\n${r.stderr}`);
    assert.doesNotMatch(r.stdout, /left-mounted/);
  });
});
