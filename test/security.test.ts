/**
 * The runtime's own safety: the manifest's env cannot override what the runtime sets, the
 * runtime runs without the user's NODE_OPTIONS (the app still gets them), data and cache dirs
 * are 0700 whatever the umask, nothing predictable is created in shared temporary dirs, and the
 * mount is visible to the user who runs the app only (no allow_other), also for an unprivileged
 * user on a machine with only fuse3's fusermount3.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT, forceUnmount, isolatedEnv, mountsUnder, tempDir } from './helpers.js';
import { encodeFooter, FOOTER_SIZE, IMAGE_VERSION, sha256, type ImageIndex } from '../runtime/image/format.js';

const base = tempDir('security');
const home = path.join(base, 'home');
const env = isolatedEnv(home);
delete env.NODE_OPTIONS;
const buildEnv = { ...process.env, NO_COLOR: '1' };

function build(appDir: string, out: string): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, 'build', appDir, '-o', out], { encoding: 'utf8', env: buildEnv, timeout: 300000 });
}

function run(bundle: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}, umask?: string): SpawnSyncReturns<string> {
  const e = { ...env, ...extraEnv };
  for (const [k, v] of Object.entries(extraEnv)) if (v === undefined) delete e[k];
  if (umask) return spawnSync('sh', ['-c', `umask ${umask} && exec "$0" "$@"`, bundle, ...args], { encoding: 'utf8', env: e, cwd: base, timeout: 60000 });
  return spawnSync(bundle, args, { encoding: 'utf8', env: e, cwd: base, timeout: 60000 });
}

const mode = (p: string) => fs.statSync(p).mode & 0o777;

/** A JS app that reports the environment it got and who its parent (the serving runtime) is. */
const ENV_APP = `const fs = require('fs');
const parentEnv = fs.readFileSync('/proc/' + process.ppid + '/environ', 'utf8').split('\\0');
const pick = ['APPDIR', 'OVERPACK_BUNDLE', 'OVERPACK_NODE_DISPATCH', 'OVERPACK_NATIVE_DIR', 'OVERPACK_APP_NODE_OPTIONS', 'PATH', 'NODE_OPTIONS', 'GREETING', 'OWD'];
const first = (process.env.PATH || '').split(':')[0];
const out = { ppid: process.ppid, nodeLink: fs.readlinkSync(first + '/node'), preloaded: globalThis.__preloaded === true, parentNodeOptions: parentEnv.filter((l) => /^(NODE_OPTIONS|OVERPACK_APP_NODE_OPTIONS)=/.test(l)) };
for (const k of pick) out[k] = process.env[k];
console.log(JSON.stringify(out));
process.exitCode = Number(process.argv[2] ?? 0);
`;

describe('runtime safety', () => {
  const envApp = path.join(base, 'envapp');
  const envBundle = path.join(base, 'env.run');
  const probeApp = path.join(base, 'probe');
  const probeBundle = path.join(base, 'probe.run');

  before(() => {
    fs.mkdirSync(home, { recursive: true });
    fs.chmodSync(base, 0o755);
    fs.mkdirSync(envApp);
    fs.writeFileSync(path.join(envApp, 'app.js'), ENV_APP);
    fs.writeFileSync(path.join(envApp, 'overpack.json'), JSON.stringify({ name: 'envapp', version: '1', entrypoint: 'app.js', env: { GREETING: 'hello' } }));
    let r = build(envApp, envBundle);
    assert.equal(r.status, 0, r.stderr);
    fs.cpSync(path.join(ROOT, 'templates', 'shell'), probeApp, { recursive: true });
    fs.writeFileSync(
      path.join(probeApp, 'bin', 'hello.sh'),
      `#!/bin/sh
# rundir: the mode of the runtime's private run dir (the parent of the app's private bin dir)
case "$1" in
  rundir) stat -c %a "\${PATH%%:*}/.."; ls -A "\${TMPDIR:-/tmp}";;
  *) echo "probe ok $*"; echo x >> "$APPDIR/state/runs";;
esac
`,
    );
    r = build(probeApp, probeBundle);
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
  });

  it('the manifest cannot set the names the runtime owns: a build error naming each', () => {
    const bad = path.join(base, 'badenv');
    fs.cpSync(envApp, bad, { recursive: true });
    const names = ['APPDIR', 'PATH', 'ARGV0', 'OWD', 'NODE_OPTIONS', 'OVERPACK_NODE_DISPATCH', 'OVERPACK_BUNDLE', 'OVERPACK_NATIVE_DIR'];
    fs.writeFileSync(path.join(bad, 'overpack.json'), JSON.stringify({ name: 'badenv', version: '1', entrypoint: 'app.js', env: { ...Object.fromEntries(names.map((n) => [n, '/evil'])), 'A=B': 'x', OK: 'fine' } }));
    const r = build(bad, path.join(base, 'badenv.run'));
    assert.equal(r.status, 1);
    for (const n of names) assert.match(r.stderr, new RegExp(`env\\.${n}: reserved, the runtime sets it`), n);
    assert.match(r.stderr, /env\."A=B": not a valid variable name/);
    assert.doesNotMatch(r.stderr, /env\.OK/);
    const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'dist', 'overpack.schema.json'), 'utf8')) as { properties: { env: { propertyNames: unknown }; security: unknown } };
    assert.ok(schema.properties.env.propertyNames && schema.properties.security, 'the schema says so too');
  });

  it('a bundle whose index was written by hand with such a manifest is refused (exit 65) before it runs', () => {
    const data = fs.readFileSync(envBundle);
    const footer = data.subarray(data.length - FOOTER_SIZE);
    const imageStart = Number(footer.readBigUInt64LE(16));
    const indexOffset = Number(footer.readBigUInt64LE(24));
    const indexLength = Number(footer.readBigUInt64LE(32));
    const index = JSON.parse(data.subarray(indexOffset, indexOffset + indexLength).toString('utf8')) as ImageIndex;
    (index.manifest as { env: Record<string, string> }).env = { APPDIR: '/etc', OVERPACK_NODE_DISPATCH: '1', PATH: '/evil' };
    const bytes = Buffer.from(JSON.stringify(index));
    const forged = path.join(base, 'forged.run');
    fs.writeFileSync(forged, Buffer.concat([data.subarray(0, indexOffset), bytes, encodeFooter({ version: IMAGE_VERSION, imageStart, indexOffset, indexLength: bytes.length, indexHash: sha256(bytes) })]), { mode: 0o755 });
    const r = run(forged);
    assert.equal(r.status, 65, r.stderr);
    assert.match(r.stderr, /manifest inside this bundle is invalid:\n\s+env\.APPDIR: reserved/);
    assert.equal(r.stdout, '');
  });

  it('the app gets the runtime\'s APPDIR, dispatch variable and PATH whatever the user\'s environment holds', () => {
    const r = run(envBundle, [], { APPDIR: '/evil', OVERPACK_NATIVE_DIR: '/evil', OVERPACK_NODE_DISPATCH: '1', OVERPACK_BUNDLE: '/evil', PATH: '/usr/bin:/bin' });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, string | undefined>;
    assert.match(got.APPDIR!, new RegExp(`^${home}/\\.cache/overpack/mnt/envapp-[0-9a-f]{8}$`));
    assert.equal(got.OVERPACK_BUNDLE, envBundle);
    // Names the runtime file the app's node runs on (the loader's decompressed runtime); another
    // bundle launched by the app is not turned into node, even one sharing that runtime (below).
    assert.match(got.OVERPACK_NODE_DISPATCH!, new RegExp(`^${home}/\\.cache/overpack/runtime/[0-9a-f]{32}/overpack-runtime$`));
    assert.equal(got.OVERPACK_NATIVE_DIR, undefined);
    assert.equal(got.GREETING, 'hello');
    assert.equal(got.OWD, base);
    const first = got.PATH!.split(':')[0]!;
    assert.match(got.nodeLink!, new RegExp(`^${home}/\\.cache/overpack/node/[0-9a-f]{32}/node$`), 'the private node dir comes first, with the plain node');
    assert.equal(got.PATH, `${first}:/usr/bin:/bin`);
    // A bundle started from inside a JS app (so with the dispatch variable set) runs its app, not node.
    const nested = run(probeBundle, ['nested'], { OVERPACK_NODE_DISPATCH: got.OVERPACK_NODE_DISPATCH });
    assert.equal(nested.status, 0, nested.stderr);
    assert.match(nested.stdout, /probe ok nested/);
  });

  it('the runtime runs without the user\'s NODE_OPTIONS; the app gets them; the exit status passes through', () => {
    const marker = path.join(base, 'preload.log');
    const preload = path.join(base, 'preload.cjs');
    fs.writeFileSync(preload, `require('fs').appendFileSync(${JSON.stringify(marker)}, process.pid + ' ' + (process.env.OVERPACK_NODE_DISPATCH ? 'app' : 'runtime') + '\\n'); globalThis.__preloaded = true;\n`);
    const value = `--require ${preload} --max-old-space-size=64`;
    const r = run(envBundle, ['7'], { NODE_OPTIONS: value });
    assert.equal(r.status, 7, r.stderr);
    const got = JSON.parse(r.stdout) as { ppid: number; preloaded: boolean; parentNodeOptions: string[]; NODE_OPTIONS?: string; OVERPACK_APP_NODE_OPTIONS?: string };
    assert.equal(got.NODE_OPTIONS, value, 'the app\'s Node gets the options');
    assert.equal(got.OVERPACK_APP_NODE_OPTIONS, undefined);
    assert.ok(got.preloaded, 'and honours them');
    assert.deepEqual(got.parentNodeOptions.filter((l) => l.startsWith('NODE_OPTIONS=')), [], 'the serving runtime has no NODE_OPTIONS');
    const lines = fs.readFileSync(marker, 'utf8').trim().split('\n');
    const runtimes = lines.filter((l) => l.endsWith(' runtime')).map((l) => Number(l.split(' ')[0]));
    assert.equal(lines.filter((l) => l.endsWith(' app')).length, 1);
    assert.equal(runtimes.length, 1, 'only the first process, which just restarts the runtime, saw them');
    assert.notEqual(runtimes[0], got.ppid, 'the process serving the mount never ran the preload');
    assert.deepEqual(mountsUnder(home), []);
  });

  it('data, upper and cache dirs are 0700 even with umask 000; wider ones from earlier runs are tightened', () => {
    const data = path.join(home, '.local', 'share', 'overpack', 'hello-shell');
    fs.mkdirSync(path.join(data, 'upper'), { recursive: true, mode: 0o755 });
    fs.chmodSync(data, 0o755);
    fs.chmodSync(path.join(data, 'upper'), 0o777);
    const r = run(probeBundle, ['a'], {}, '000');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /probe ok a/);
    const cache = path.join(home, '.cache', 'overpack');
    for (const d of [path.join(home, '.local', 'share', 'overpack'), data, path.join(data, 'upper'), cache, path.join(cache, 'mnt'), path.join(cache, 'native')]) {
      assert.equal(mode(d).toString(8), '700', d);
    }
    for (const d of fs.readdirSync(path.join(cache, 'native'))) assert.equal(mode(path.join(cache, 'native', d)).toString(8), '700');
    // a discarded run's private dir (its upper and the app's bin dir live there) is 0700, and is
    // the only thing the runtime puts in the temporary directory
    const tmp = path.join(base, 'sharedtmp');
    fs.mkdirSync(tmp, { mode: 0o1777 });
    fs.chmodSync(tmp, 0o1777);
    const d = run(probeBundle, ['rundir', '--overpack-discard'], { TMPDIR: tmp }, '000');
    assert.equal(d.status, 0, d.stderr);
    const [runMode, ...entries] = d.stdout.trim().split('\n');
    assert.equal(runMode, '700');
    assert.equal(entries.length, 1);
    assert.match(entries[0]!, /^overpack-hello-shell-[A-Za-z0-9]{6}$/, 'an unguessable mkdtemp name');
    assert.deepEqual(fs.readdirSync(tmp), [], 'removed after the run');
  });
});

describe('an unprivileged user on a machine with fusermount3 only', () => {
  const user = 'overpack-test';
  const dir = path.join(base, 'unpriv');
  let fuseMode = 0o600;
  before(() => {
    spawnSync('useradd', ['--system', '--no-create-home', user], { stdio: 'ignore' });
    fuseMode = mode('/dev/fuse');
  });
  after(() => {
    fs.chmodSync('/dev/fuse', fuseMode);
  });

  it('mounts through a private fusermount link, never a planted one in the shared temp dir; others cannot see the mount', () => {
    const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim();
    const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim();
    const uhome = path.join(dir, 'home');
    const utmp = path.join(dir, 'tmp');
    const out = path.join(dir, 'out');
    fs.mkdirSync(uhome, { recursive: true });
    fs.mkdirSync(utmp);
    fs.mkdirSync(out);
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(utmp, 0o1777);
    fs.chmodSync(out, 0o777);
    spawnSync('chown', [user, uhome]);
    const bundle = path.join(dir, 'probe.run');
    fs.copyFileSync(path.join(base, 'probe.run'), bundle);
    fs.chmodSync(bundle, 0o755);
    // Someone else got to the shared temp dir first, with the name an older runtime would use.
    const planted = path.join(utmp, `overpack-fusermount-${uid}`);
    fs.mkdirSync(planted, { mode: 0o755 });
    const evil = path.join(dir, 'evil.sh');
    fs.writeFileSync(evil, `#!/bin/sh\ntouch ${out}/EVIL-RAN\nexec /usr/bin/fusermount3 "$@"\n`, { mode: 0o755 });
    fs.symlinkSync(evil, path.join(planted, 'fusermount'));
    // /usr/bin without fusermount (a whiteout in a kernel overlay), in a private mount namespace:
    // the user's FUSE mounts live and die with it.
    const ov = path.join(dir, 'ov');
    fs.mkdirSync(path.join(ov, 'u'), { recursive: true });
    fs.mkdirSync(path.join(ov, 'w'));
    assert.equal(spawnSync('mknod', [path.join(ov, 'u', 'fusermount'), 'c', '0', '0']).status, 0);
    const script = `
mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=${ov}/u,workdir=${ov}/w /usr/bin || exit 90
[ -e /usr/bin/fusermount ] && exit 91
cd ${uhome} || exit 92 # the user's cwd must be theirs to enter (a checkout may be 0700)
as() { setpriv --reuid=${uid} --regid=${gid} --clear-groups env -i PATH=/usr/bin:/bin HOME=${uhome} TMPDIR=${utmp} NO_COLOR=1 OVERPACK_LINGER=0 "$@"; }
as ${bundle} one > ${out}/run1 2>&1; echo $? > ${out}/run1.rc
setpriv --reuid=${uid} --regid=${gid} --clear-groups env -i PATH=/usr/bin:/bin HOME=${uhome} TMPDIR=${utmp} NO_COLOR=1 OVERPACK_LINGER=0 ${bundle} --overpack-mount > ${out}/mp 2> ${out}/mount.err &
pid=$!
echo $pid > ${out}/pid
i=0; while [ ! -s ${out}/mp ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
mp=$(cat ${out}/mp)
grep -F " $mp " /proc/self/mountinfo > ${out}/mountinfo
stat "$mp" > ${out}/root-stat 2>&1; echo $? > ${out}/root-stat.rc
setpriv --reuid=${uid} --regid=${gid} --clear-groups ls "$mp" > ${out}/user-ls 2>&1
ls -A ${utmp} > ${out}/tmp-during
kill -TERM $pid; wait $pid; echo $? > ${out}/mount.rc
grep -cF " $mp " /proc/self/mountinfo > ${out}/left; true
`;
    fs.chmodSync('/dev/fuse', 0o666); // as distributions ship it; restored in after()
    let r: SpawnSyncReturns<string>;
    try {
      r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', timeout: 120000 });
    } finally {
      // If the script was cut short, its --overpack-mount server would keep the namespace (and
      // its mount) alive: stop it by its pid. Its mount dies with the namespace.
      const pidFile = path.join(out, 'pid');
      const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0;
      let cmdline = '';
      try {
        cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        /* already gone: the normal case */
      }
      if (pid > 0 && cmdline.startsWith(`${bundle}\0`)) process.kill(pid, 'SIGKILL'); // still ours, not a reused pid
    }
    const read = (f: string) => fs.readFileSync(path.join(out, f), 'utf8').trim();
    assert.equal(r.status, 0, `${r.stderr}${r.stdout}`);
    assert.equal(read('run1.rc'), '0', read('run1'));
    assert.match(read('run1'), /probe ok one/);
    assert.ok(!fs.existsSync(path.join(out, 'EVIL-RAN')), 'the planted fusermount never ran');
    assert.deepEqual(fs.readdirSync(planted), ['fusermount'], 'and was left alone');
    const mp = read('mp');
    assert.match(mp, new RegExp(`^${uhome}/\\.cache/overpack/mnt/hello-shell-`));
    const opts = read('mountinfo');
    assert.match(opts, /fuse/);
    assert.match(opts, new RegExp(`user_id=${uid}`));
    assert.doesNotMatch(opts, /allow_other|allow_root/);
    assert.notEqual(read('root-stat.rc'), '0', 'even root is turned away without allow_other');
    assert.match(read('root-stat'), /Permission denied/);
    assert.match(read('user-ls'), /bin/, 'the user sees the app');
    assert.deepEqual(read('tmp-during').split('\n').filter((n) => n !== path.basename(planted)).map((n) => /^overpack-hello-shell-[A-Za-z0-9]{6}$/.test(n)), [true]);
    assert.equal(read('mount.rc'), '0', read('mount.err'));
    assert.equal(read('left'), '0');
    assert.deepEqual(fs.readdirSync(utmp), [path.basename(planted)], 'nothing left in the temp dir');
    for (const d of ['.local/share/overpack', '.local/share/overpack/hello-shell', '.local/share/overpack/hello-shell/upper', '.cache/overpack', '.cache/overpack/mnt']) {
      const st = fs.statSync(path.join(uhome, d));
      assert.equal((st.mode & 0o777).toString(8), '700', d);
      assert.equal(st.uid, Number(uid), d);
    }
  });
});

after(() => fs.rmSync(base, { recursive: true, force: true }));
