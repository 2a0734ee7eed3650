/**
 * The controller's lifecycle: default paths, setters while mounted, preserve/discard from the
 * library and the CLI, clean errors, unprivileged mounts and crash-safe copy-up.
 *
 * Library tests mount in this process, so every access to the mount goes through async child
 * processes: a sync call from the serving process into its own mount would deadlock.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { OverlayFS, OverlayError } from '../runtime/index.js';
import { CLI, forceUnmount, isMountpoint, makeLower, sh, startMount, tempDir } from './helpers.js';

const run = promisify(execFile);
const shAsync = async (cmd: string) => (await run('sh', ['-c', cmd])).stdout;

function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; user?: string } = {}) {
  const argv = opts.user ? ['-u', opts.user, '--', process.execPath, CLI, ...args] : [CLI, ...args];
  const r = spawnSync(opts.user ? 'runuser' : process.execPath, argv, { encoding: 'utf8', env: opts.env ?? process.env, timeout: 30000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('OverlayFS library', () => {
  const base = tempDir('lib');
  const lower = path.join(base, 'app');
  before(() => {
    fs.mkdirSync(lower);
    makeLower(lower);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('uses the crate\'s default paths and never collides', async () => {
    const a = new OverlayFS(lower);
    const b = new OverlayFS(lower);
    await a.mount();
    try {
      await b.mount();
      try {
        const ha = a.handle();
        const hb = b.handle();
        assert.equal(ha.upper, `${lower}_upper`);
        assert.match(ha.mountPoint, new RegExp(`^${os.tmpdir()}/mount_app_[0-9a-f]{8}_\\d+$`));
        assert.notEqual(ha.mountPoint, hb.mountPoint);
        assert.ok(isMountpoint(ha.mountPoint) && isMountpoint(hb.mountPoint));
        assert.equal(await shAsync(`cat ${ha.mountPoint}/hello.txt`), 'hello from lower\n');
      } finally {
        await b.umount();
      }
    } finally {
      await a.umount();
    }
    assert.ok(!fs.existsSync(a.handle().mountPoint), 'mountpoint removed on umount');
    fs.rmSync(`${lower}_upper`, { recursive: true, force: true });
  });

  it('mountpointAsHome() mounts under ~/.cache', async () => {
    const fsys = new OverlayFS(lower).mountpointAsHome().setUpper(path.join(base, 'u-home'));
    await fsys.mount();
    try {
      assert.ok(fsys.handle().mountPoint.startsWith(path.join(os.homedir(), '.cache', 'mount_app_')));
    } finally {
      await fsys.umount();
    }
    assert.ok(!fs.existsSync(fsys.handle().mountPoint));
  });

  it('setters throw a typed error while mounted and change nothing', async () => {
    const upper = path.join(base, 'u-setters');
    const fsys = new OverlayFS(lower).setUpper(upper);
    await fsys.mount();
    try {
      const before = fsys.handle();
      for (const call of [() => fsys.setUpper('/elsewhere'), () => fsys.setInodeMode('persistent'), () => fsys.mountpointAsHome(), () => fsys.setMountpoint('/x')]) {
        assert.throws(call, (err: unknown) => err instanceof OverlayError && err.code === 'ALREADY_MOUNTED');
      }
      assert.deepEqual(fsys.handle(), before);
      assert.ok(fsys.isMounted());
    } finally {
      await fsys.umount();
    }
    assert.equal(fsys.isMounted(), false);
  });

  it('preserve keeps the upper and remounts with everything in it; discard removes it', async () => {
    const upper = path.join(base, 'u-keep');
    const one = new OverlayFS(lower).setUpper(upper);
    await one.mount();
    await shAsync(`echo kept > ${one.handle().mountPoint}/new.txt && rm ${one.handle().mountPoint}/hello.txt`);
    await one.umount();
    const kept = await one.overlayAction('preserve');
    assert.match(kept!.summary, /kept/);
    assert.ok(fs.existsSync(path.join(upper, 'new.txt')));
    assert.ok(!fs.existsSync(path.join(upper, '.wh..wh..work')), 'scratch dir dropped on preserve');

    const two = new OverlayFS(lower).setUpper(upper);
    await two.mount();
    assert.equal(await shAsync(`cat ${two.handle().mountPoint}/new.txt`), 'kept\n');
    assert.equal(await shAsync(`ls ${two.handle().mountPoint} | grep -c hello.txt || true`), '0\n');
    await two.overlayAction('discard'); // while mounted: applied at umount
    await two.umount();
    assert.ok(!fs.existsSync(upper), 'discard removed the upper');
    assert.ok(fs.existsSync(path.join(lower, 'hello.txt')), 'lower untouched');
  });

  it('rm -rf of a lower directory frees its name at once and leaves only its whiteout', async () => {
    const lowerMany = path.join(base, 'many-lower');
    for (let d = 0; d < 3; d++) {
      fs.mkdirSync(path.join(lowerMany, 'many', `d${d}`), { recursive: true });
      for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(lowerMany, 'many', `d${d}`, `f${i}`), 'x');
    }
    const upper = path.join(base, 'u-many');
    const one = new OverlayFS(lowerMany).setUpper(upper);
    await one.mount();
    const mnt = one.handle().mountPoint;
    try {
      // The upper's d0..d2 (full of whiteouts) are emptied in the background: the new
      // directory must start empty all the same.
      await shAsync(`rm -rf ${mnt}/many && mkdir ${mnt}/many && touch ${mnt}/many/new`);
      assert.equal(await shAsync(`ls -A ${mnt}/many`), 'new\n');
    } finally {
      await one.umount();
    }
    await one.overlayAction('preserve');
    assert.deepEqual(fs.readdirSync(upper).sort(), ['many']);
    assert.deepEqual(fs.readdirSync(path.join(upper, 'many')).sort(), ['.wh..wh..opq', 'new']);
    const two = new OverlayFS(lowerMany).setUpper(upper);
    await two.mount();
    try {
      assert.equal(await shAsync(`ls -A ${two.handle().mountPoint}/many`), 'new\n');
    } finally {
      await two.umount();
    }
  });

  it('unmounts and removes the mountpoint when the process exits normally', async () => {
    const upper = path.join(base, 'u-exit');
    const script = `
      import { OverlayFS } from ${JSON.stringify(path.resolve(CLI, '../../runtime/index.js'))};
      const fsys = new OverlayFS(${JSON.stringify(lower)}).setUpper(${JSON.stringify(upper)});
      await fsys.mount();
      console.log(fsys.handle().mountPoint);
      process.exit(0);`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script]);
    const mp = stdout.trim();
    assert.ok(mp.length > 0);
    assert.ok(!isMountpoint(mp), 'no mount left');
    assert.ok(!fs.existsSync(mp), 'mountpoint removed');
  });
});

describe('overpack mount / umount (CLI)', () => {
  const base = tempDir('cli');
  const lower = path.join(base, 'lower');
  before(() => {
    fs.mkdirSync(lower);
    makeLower(lower);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('serves until `overpack umount`, then applies --on-exit discard', async () => {
    const upper = path.join(base, 'u1');
    const m = await startMount(lower, ['--upper', upper, '--on-exit', 'discard']);
    try {
      fs.writeFileSync(path.join(m.mountPoint, 'x'), 'y');
      assert.ok(fs.existsSync(path.join(upper, 'x')));
      const r = cli(['umount', m.mountPoint]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await m.stop(), 0);
      assert.ok(!fs.existsSync(upper), 'upper discarded');
      assert.ok(!fs.existsSync(m.mountPoint), 'generated mountpoint removed');
      assert.match(m.stderr(), /discarded/);
    } finally {
      await m.stop();
    }
  });

  it('SIGINT unmounts and preserves by default', async () => {
    const upper = path.join(base, 'u2');
    const m = await startMount(lower, ['--upper', upper, '--mountpoint', path.join(base, 'mnt2')]);
    fs.writeFileSync(path.join(m.mountPoint, 'keep'), 'k');
    assert.equal(await m.stop('SIGINT'), 0);
    assert.ok(!isMountpoint(m.mountPoint));
    assert.equal(fs.readFileSync(path.join(upper, 'keep'), 'utf8'), 'k');
  });

  it('documents every option in --help', () => {
    const r = cli(['mount', '--help']);
    assert.equal(r.code, 0);
    for (const opt of ['--upper', '--mountpoint', '--home', '--inode-mode', '--on-exit']) assert.ok(r.stdout.includes(opt), opt);
    assert.equal(cli(['--help']).code, 0);
    const bad = cli(['mount']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Not enough non-option arguments/);
    assert.match(bad.stderr, /--help/);
  });

  it('refuses bad input with a clear message and changes nothing on disk', () => {
    const listing = () => fs.readdirSync(base).sort().join(',');
    const before = listing();
    const missing = cli(['mount', path.join(base, 'nope')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /does not exist/);
    fs.writeFileSync(path.join(base, 'afile'), '');
    const notDir = cli(['mount', path.join(base, 'afile')]);
    assert.match(notDir.stderr, /not a directory, and not a bundle/);
    assert.equal(notDir.code, 2);
    const inside = cli(['mount', lower, '--upper', path.join(lower, 'up')]);
    assert.match(inside.stderr, /must not contain each other/);
    assert.ok(!fs.existsSync(path.join(lower, 'up')));
    fs.mkdirSync(path.join(base, 'full'));
    fs.writeFileSync(path.join(base, 'full', 'x'), '');
    const busy = cli(['mount', lower, '--mountpoint', path.join(base, 'full')]);
    assert.equal(busy.code, 4);
    assert.match(busy.stderr, /not empty/);
    fs.rmSync(path.join(base, 'afile'));
    fs.rmSync(path.join(base, 'full'), { recursive: true });
    assert.equal(listing(), before, 'nothing created or removed');
  });

  it('refuses a mountpoint that is already mounted', async () => {
    const mnt = path.join(base, 'twice');
    const m = await startMount(lower, ['--upper', path.join(base, 'u3'), '--mountpoint', mnt]);
    try {
      const again = cli(['mount', lower, '--upper', path.join(base, 'u4'), '--mountpoint', mnt]);
      assert.equal(again.code, 4);
      assert.match(again.stderr, /already a mountpoint/);
      assert.ok(!fs.existsSync(path.join(base, 'u4')));
    } finally {
      await m.stop();
    }
  });

  it('says so clearly when /dev/fuse is missing', () => {
    // A private mount namespace with an empty /dev: this process's view only.
    const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev && exec ${process.execPath} ${CLI} mount ${lower} --upper ${base}/u5`], { encoding: 'utf8' });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /\/dev\/fuse does not exist/);
    assert.match(r.stderr, /extract-and-run/);
    assert.ok(!fs.existsSync(path.join(base, 'u5')));
  });
});

describe('unprivileged user', () => {
  const user = 'overpack-test';
  const base = tempDir('user');
  let fuseMode = 0;
  before(() => {
    spawnSync('useradd', ['--system', '--no-create-home', user], { stdio: 'ignore' });
    fuseMode = fs.statSync('/dev/fuse').mode & 0o777;
    // Distributions ship /dev/fuse as 0666; these machines have 0600. Restored in after().
    fs.chmodSync('/dev/fuse', 0o666);
    fs.chmodSync(base, 0o755);
    const lower = path.join(base, 'lower');
    fs.mkdirSync(lower);
    fs.writeFileSync(path.join(lower, 'f'), 'lower data');
    fs.mkdirSync(path.join(base, 'work'));
    sh(`chown ${user} ${base}/work`);
  });
  after(() => {
    fs.chmodSync('/dev/fuse', fuseMode);
    forceUnmount(path.join(base, 'work', 'mnt'));
    fs.rmSync(base, { recursive: true, force: true });
  });

  // Debian's fuse3 also installs `fusermount -> fusermount3`; other systems have only
  // fusermount3. Each case runs in a private mount namespace (nothing leaks to this one) where
  // a kernel overlay over /usr/bin whites out the tools to hide.
  function inNamespace(hide: string[], script: string) {
    const ns = fs.mkdtempSync(path.join(base, 'ns-'));
    const whiteouts = hide.map((t) => `mknod ${ns}/up/${t} c 0 0`).join(' && ');
    const setup = hide.length
      ? `mkdir ${ns}/up ${ns}/wk && ${whiteouts} && mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=${ns}/up,workdir=${ns}/wk /usr/bin`
      : 'true';
    return spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `${setup} && ${script}`], { encoding: 'utf8', timeout: 60000 });
  }
  const asUser = () => `setpriv --reuid=${sh(`id -u ${user}`).trim()} --regid=${sh(`id -g ${user}`).trim()} --clear-groups`;

  for (const hide of [[], ['fusermount']]) {
    it(`mounts, writes and unmounts cleanly${hide.length ? ' with only fusermount3' : ''}`, () => {
      const w = path.join(base, 'work');
      const as = asUser();
      const r = inNamespace(
        hide,
        `export HOME=${w} TMPDIR=${w}
         rm -f ${w}/out ${w}/err
         ${as} ${process.execPath} ${CLI} mount ${base}/lower --upper ${w}/upper --mountpoint ${w}/mnt > ${w}/out 2> ${w}/err &
         pid=$!
         i=0; while [ ! -s ${w}/out ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
         ${as} sh -c 'cat ${w}/mnt/f && echo mine > ${w}/mnt/g && cat ${w}/mnt/g'
         kill -TERM $pid; wait $pid; echo "server exit $?"
         grep -c ' ${w}/mnt ' /proc/self/mountinfo || true
         cat ${w}/err >&2`,
      );
      assert.equal(r.stdout, 'lower datamine\nserver exit 0\n0\n', r.stderr);
      assert.equal(fs.statSync(path.join(w, 'upper', 'g')).uid, Number(sh(`id -u ${user}`)));
      fs.rmSync(path.join(w, 'upper'), { recursive: true });
    });
  }

  it('reports a missing fusermount clearly', () => {
    const r = inNamespace(
      ['fusermount', 'fusermount3'],
      `exec ${asUser()} ${process.execPath} ${CLI} mount ${base}/lower --upper ${base}/work/u2 --mountpoint ${base}/work/m2`,
    );
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /neither fusermount nor fusermount3/);
    assert.match(r.stderr, /apt-get install fuse3/);
    assert.ok(!fs.existsSync(path.join(base, 'work', 'u2')));
  });
});

describe('crash safety of copy-up', () => {
  const base = tempDir('crash');
  const lower = path.join(base, 'lower');
  const upper = path.join(base, 'upper');
  const mnt = path.join(base, 'mnt');
  after(() => {
    forceUnmount(mnt);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('a server killed mid copy-up never leaves a partial file shadowing the lower', async () => {
    fs.mkdirSync(lower);
    const big = Buffer.alloc(64 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(lower, `big${i}`), big);
    const m = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    // Appending copies each file up first; kill the server while that is under way.
    const writer = execFile('sh', ['-c', `for i in 0 1 2 3 4 5; do echo tail >> ${mnt}/big$i; done`]);
    writer.on('error', () => undefined);
    const work = path.join(upper, '.wh..wh..work');
    for (let i = 0; i < 2000; i++) {
      if (fs.existsSync(work) && fs.readdirSync(work).length > 0) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    m.proc.kill('SIGKILL');
    await m.stop();
    writer.kill();
    // Whatever reached the upper is either absent or a complete copy.
    for (let i = 0; i < 6; i++) {
      const up = path.join(upper, `big${i}`);
      if (!fs.existsSync(up)) continue;
      const data = fs.readFileSync(up);
      assert.ok(data.subarray(0, big.length).equals(big), `big${i} in the upper is complete`);
    }
    const again = await startMount(lower, ['--upper', upper, '--mountpoint', mnt]);
    try {
      assert.deepEqual(fs.readdirSync(work), [], 'scratch dir emptied at mount');
      for (let i = 0; i < 6; i++) {
        const data = fs.readFileSync(path.join(mnt, `big${i}`));
        assert.ok(data.subarray(0, big.length).equals(big), `big${i} intact through the mount`);
      }
    } finally {
      await again.stop();
    }
  });
});

describe('stale mounts', () => {
  const base = tempDir('stale');
  const lower = path.join(base, 'lower');
  const mnt = path.join(base, 'mnt');
  after(() => {
    forceUnmount(mnt);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('a killed server leaves a stale mount that the next mount cleans up', async () => {
    fs.mkdirSync(lower);
    fs.writeFileSync(path.join(lower, 'f'), 'x');
    const m = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt]);
    fs.writeFileSync(path.join(mnt, 'written'), 'before the crash');
    m.proc.kill('SIGKILL');
    await new Promise((r) => m.proc.once('exit', r));
    assert.ok(isMountpoint(mnt), 'the kill left the mount behind');
    assert.throws(() => fs.statSync(mnt), /ENOTCONN/);
    const again = await startMount(lower, ['--upper', path.join(base, 'upper'), '--mountpoint', mnt]);
    try {
      assert.equal(fs.readFileSync(path.join(mnt, 'written'), 'utf8'), 'before the crash');
    } finally {
      await again.stop();
    }
    assert.ok(!isMountpoint(mnt));
  });
});
