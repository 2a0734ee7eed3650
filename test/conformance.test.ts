/**
 * POSIX conformance of the mount: the same calls on the mount and on a plain directory must
 * give the same results (sizes, contents, errors). Each case prepares identical trees in both
 * places, runs the same calls on each, and compares what came out.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CLI, forceUnmount, startMount, tempDir, type MountProcess } from './helpers.js';

const C = fs.constants;

/** Every combination of the access mode with O_TRUNC, O_CREAT, O_APPEND and O_EXCL. */
function openFlagMatrix(): Array<{ label: string; flags: number }> {
  const out: Array<{ label: string; flags: number }> = [];
  for (const [acc, accName] of [[C.O_RDONLY, 'r'], [C.O_WRONLY, 'w'], [C.O_RDWR, 'rw']] as const) {
    for (let bits = 0; bits < 16; bits++) {
      let flags = acc;
      let label = accName;
      if (bits & 1) (flags |= C.O_TRUNC), (label += '+trunc');
      if (bits & 2) (flags |= C.O_CREAT), (label += '+creat');
      if (bits & 4) (flags |= C.O_APPEND), (label += '+append');
      if (bits & 8) (flags |= C.O_EXCL), (label += '+excl');
      out.push({ label, flags });
    }
  }
  return out;
}

/** Open with `flags`, write short contents where the open allows writing, and report what happened. */
function openAndWrite(file: string, flags: number): string {
  let fd: number;
  try {
    fd = fs.openSync(file, flags, 0o644);
  } catch (err) {
    return `open ${(err as NodeJS.ErrnoException).code}`;
  }
  let wrote = 'no write';
  try {
    if ((flags & (C.O_WRONLY | C.O_RDWR)) !== 0) {
      fs.writeSync(fd, 'xy');
      wrote = 'wrote';
    }
    const st = fs.fstatSync(fd);
    wrote += ` fstat size ${st.size}`;
  } catch (err) {
    wrote = `write ${(err as NodeJS.ErrnoException).code}`;
  } finally {
    fs.closeSync(fd);
  }
  return `open ok, ${wrote}`;
}

/** What a path holds afterwards: its type, size and contents (or the error of lstat). */
function describePath(file: string): string {
  try {
    const st = fs.lstatSync(file);
    if (st.isSymbolicLink()) return `symlink -> ${fs.readlinkSync(file)}`;
    return `${st.isFile() ? 'file' : 'other'} size ${st.size} ${JSON.stringify(fs.readFileSync(file, 'utf8'))}`;
  } catch (err) {
    return `lstat ${(err as NodeJS.ErrnoException).code}`;
  }
}

interface Pair {
  base: string;
  lower: string;
  plain: string;
  mnt: string;
  mount: MountProcess | undefined;
}

/** A lower directory (mounted with an upper) and a plain directory, both filled by `fill`. */
function pair(tag: string): Pair {
  const base = tempDir(tag);
  const p: Pair = { base, lower: path.join(base, 'lower'), plain: path.join(base, 'plain'), mnt: path.join(base, 'mnt'), mount: undefined };
  fs.mkdirSync(p.lower);
  fs.mkdirSync(p.plain);
  return p;
}

async function mountPair(p: Pair): Promise<void> {
  p.mount = await startMount(p.lower, ['--upper', path.join(p.base, 'upper'), '--mountpoint', p.mnt]);
}

async function teardown(p: Pair): Promise<void> {
  await p.mount?.stop();
  fs.rmSync(p.base, { recursive: true, force: true });
}

describe('open flags: every combination on lower, upper, copied-up and symlinked files', () => {
  const p = pair('conf-open');
  const matrix = openFlagMatrix();
  // Where a file starts in the overlay; the plain directory gets the same file by ordinary means.
  const kinds = ['lower', 'upper', 'copied', 'symlink', 'missing'] as const;
  const OLD = 'old contents, longer than what is written\n';
  const name = (kind: string, label: string) => `${kind}-${label}`;

  before(async () => {
    for (const { label } of matrix) {
      fs.writeFileSync(path.join(p.lower, name('lower', label)), OLD);
      fs.writeFileSync(path.join(p.lower, name('copied', label)), OLD);
      fs.writeFileSync(path.join(p.lower, name('target', label)), OLD);
      fs.symlinkSync(name('target', label), path.join(p.lower, name('symlink', label)));
    }
    fs.cpSync(p.lower, p.plain, { recursive: true, verbatimSymlinks: true });
    await mountPair(p);
    for (const root of [p.mnt, p.plain]) {
      for (const { label } of matrix) {
        fs.writeFileSync(path.join(root, name('upper', label)), OLD); // created through the mount: lives in the upper
        fs.chmodSync(path.join(root, name('copied', label)), 0o640); // copied up by the chmod, contents unchanged
      }
    }
  });
  after(() => teardown(p));

  for (const kind of kinds) {
    it(`${kind} file: results, sizes and contents equal a plain directory's`, () => {
      const diffs: string[] = [];
      for (const { label, flags } of matrix) {
        const file = name(kind, label);
        const results = [p.plain, p.mnt].map((root) => {
          const r = openAndWrite(path.join(root, file), flags);
          const seen = [describePath(path.join(root, file))];
          if (kind === 'symlink') seen.push(describePath(path.join(root, name('target', label))));
          return `${r}; ${seen.join('; ')}`;
        });
        if (results[0] !== results[1]) diffs.push(`${label}: plain ${results[0]} | mount ${results[1]}`);
      }
      assert.deepEqual(diffs, []);
    });
  }

  it('the lower is never written', () => {
    for (const { label } of matrix) {
      for (const kind of ['lower', 'copied', 'target']) {
        assert.equal(fs.readFileSync(path.join(p.lower, name(kind, label)), 'utf8'), OLD, name(kind, label));
      }
    }
  });

  it('a truncating rewrite through a fresh open shows the new contents only, also after a remount', async () => {
    for (const root of [p.plain, p.mnt]) {
      fs.writeFileSync(path.join(root, 'settings.json'), JSON.stringify({ greeting: 'a very long greeting value that takes space' }));
      fs.writeFileSync(path.join(root, 'settings.json'), JSON.stringify({ greeting: 'hi' }));
    }
    const expected = fs.readFileSync(path.join(p.plain, 'settings.json'), 'utf8');
    assert.equal(fs.readFileSync(path.join(p.mnt, 'settings.json'), 'utf8'), expected);
    await p.mount!.stop();
    await mountPair(p);
    assert.equal(fs.readFileSync(path.join(p.mnt, 'settings.json'), 'utf8'), expected);
  });
});

const FUSE_NATIVE = process.env.OVERPACK_FUSE_BINDING === 'fuse-native';

/** The same shell script run in a plain directory and in the mount; the outputs must match. */
function sameInBoth(p: Pair, script: string): { plain: string; mount: string } {
  const run = (dir: string) => {
    const r = spawnSync('sh', ['-c', `cd "$0" && ${script}`, dir], { encoding: 'utf8' });
    return `${r.stdout}${r.stderr.replaceAll(dir, 'DIR')}status ${r.status}`;
  };
  return { plain: run(p.plain), mount: run(p.mnt) };
}

describe('link counts and attributes through every name', () => {
  const p = pair('conf-link');
  before(async () => {
    fs.writeFileSync(path.join(p.lower, 'lowerfile'), 'lower\n');
    fs.writeFileSync(path.join(p.plain, 'lowerfile'), 'lower\n');
    // fuse-native (libfuse 2) cannot tell the kernel to drop a name's cached attributes: its
    // names of one file agree only without attribute caching.
    p.mount = await startMount(p.lower, ['--upper', path.join(p.base, 'upper'), '--mountpoint', p.mnt, ...(FUSE_NATIVE ? ['--cache-timeout', '0'] : [])]);
  });
  after(() => teardown(p));

  it(`link, chmod through one name, rename and unlink: every name shows the same count and mode${FUSE_NATIVE ? ' (fuse-native: with --cache-timeout 0)' : ''}`, () => {
    const script = [
      'touch a', 'stat -c "%h %a" a', 'ln a b', 'stat -c "%h %a" a b', 'chmod 600 b', 'stat -c "%h %a" a b',
      'ln a c', 'stat -c "%h" a b c', 'mv c d', 'stat -c "%h" a b d', 'rm b', 'stat -c "%h %a" a d',
      'stat -c "%h" lowerfile', 'ln lowerfile lf2', 'stat -c "%h" lowerfile lf2', 'chmod 700 lf2', 'stat -c "%a" lowerfile lf2',
      'rm lowerfile', 'stat -c "%h" lf2',
    ].join(' && ');
    const { plain, mount } = sameInBoth(p, script);
    assert.equal(mount, plain);
  });
});

describe('timestamps keep nanoseconds', () => {
  const p = pair('conf-time');
  before(async () => {
    for (const root of [p.lower, p.plain]) {
      fs.writeFileSync(path.join(root, 'old'), 'x');
      execFileSync('touch', ['-d', '@1700000000.987654321', path.join(root, 'old')]);
    }
    await mountPair(p);
  });
  after(() => teardown(p));

  const script = 'touch -d @1900000000.1 x && touch -m -d @1900000000.123456789 y && touch -a -d @1800000000.000000001 y && stat -c "%n %x %y" x y old && chmod 600 old && stat -c "%n %y" old';
  if (!FUSE_NATIVE) {
    it('set through the mount, read back, and carried by copy-up, to the nanosecond', () => {
      const { plain, mount } = sameInBoth(p, script);
      assert.equal(mount, plain);
      assert.match(plain, /\.123456789/);
    });
  } else {
    it('fuse-native keeps milliseconds only (libfuse 2 through fuse-native passes times in ms)', () => {
      const { plain, mount } = sameInBoth(p, script);
      assert.equal(mount, plain.replace(/\.(\d{3})\d{6}/g, '.$1000000'));
    });
  }
});

describe('file capabilities and writes', () => {
  const p = pair('conf-caps');
  before(async () => {
    for (const root of [p.lower, p.plain]) {
      fs.writeFileSync(path.join(root, 'tool'), 'binary');
      execFileSync('setcap', ['cap_net_raw+ep', path.join(root, 'tool')]);
    }
    await mountPair(p);
  });
  after(() => teardown(p));

  it('a write drops security.capability as on a plain directory, also after many writes without one', () => {
    const script = [
      'getcap tool', 'echo more >> tool', 'getcap tool; echo "after write: $(getcap tool | wc -l)"',
      'touch f', 'for i in 1 2 3 4 5; do echo $i >> f; done', 'getcap f | wc -l',
      'setcap cap_net_raw+ep f', 'getcap f', 'echo 6 >> f', 'echo "after write: $(getcap f | wc -l)"',
      'setcap cap_net_raw+ep f', 'setcap -r f', 'getcap f | wc -l', 'cat f | wc -l',
    ].join(' && ');
    const { plain, mount } = sameInBoth(p, script);
    assert.equal(mount, plain);
    assert.match(plain, /tool cap_net_raw=ep/);
  });
});

describe('fifos, sockets and device nodes', () => {
  const p = pair('conf-special');
  before(async () => {
    for (const root of [p.lower, p.plain]) execFileSync('mkfifo', [path.join(root, 'lowerfifo')]);
    await mountPair(p);
  });
  after(() => teardown(p));

  it('mkfifo, mknod of devices (root), copy-up, rename and unlink act as on a plain directory', () => {
    const script = [
      'mkfifo -m 640 ff', 'stat -c "%n %F %a" ff', 'mknod cdev c 1 3', 'mknod bdev b 7 200', 'stat -c "%n %F %t:%T" cdev bdev',
      'chmod 600 lowerfifo', 'stat -c "%n %F %a" lowerfifo', 'mv ff gg', 'ls -1', 'rm gg lowerfifo', 'ls -1',
      'mknod .wh.x p || echo refused',
    ].join(' && ');
    const { plain, mount } = sameInBoth(p, script.replace('mknod .wh.x p || echo refused', 'echo refused'));
    assert.equal(mount, plain);
    // Names of whiteouts stay reserved.
    assert.match(sameInBoth(p, 'mknod .wh.y p 2>/dev/null || echo refused').mount, /refused/);
    // A device node is made and listed, but a FUSE mount is nodev: opening one is refused there.
    const dev = spawnSync('sh', ['-c', 'mknod "$0/zero" c 1 5 && head -c 1 "$0/zero"', p.mnt], { encoding: 'utf8' });
    assert.match(dev.stderr, /Permission denied/);
  });

  it('a fifo in the mount carries data between two processes', () => {
    const r = spawnSync('sh', ['-c', 'mkfifo "$0/pipe" && (echo through-the-fifo > "$0/pipe" &) && cat "$0/pipe"', p.mnt], { encoding: 'utf8', timeout: 20000 });
    assert.equal(r.stdout, 'through-the-fifo\n', r.stderr);
  });

  it('a Unix socket bound in the mount accepts connections', async () => {
    const sock = path.join(p.mnt, 'app.sock');
    const server = net.createServer((c) => c.end('hello over the socket'));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(sock, resolve));
    try {
      assert.ok(fs.lstatSync(sock).isSocket());
      const got = await new Promise<string>((resolve, reject) => {
        let data = '';
        net.connect(sock).on('data', (d) => (data += d)).on('end', () => resolve(data)).on('error', reject);
      });
      assert.equal(got, 'hello over the socket');
      const listed = spawnSync('ls', ['-l', p.mnt], { encoding: 'utf8' }).stdout;
      assert.match(listed, /^s.* app\.sock$/m);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('fallocate and SEEK_DATA / SEEK_HOLE', () => {
  const p = pair('conf-falloc');
  before(async () => {
    for (const root of [p.lower, p.plain]) fs.writeFileSync(path.join(root, 'lowerfile'), Buffer.alloc(64 * 1024, 7));
    await mountPair(p);
  });
  after(() => teardown(p));

  const script = [
    'fallocate -l 1048576 f', 'stat -c "%s %b" f', 'fallocate -n -o 1048576 -l 1048576 f', 'stat -c "%s %b" f',
    'head -c 65536 /dev/urandom > d; cat d d d d > g; fallocate -p -o 65536 -l 65536 g', 'stat -c "%s %b" g', 'fallocate -z -o 131072 -l 4096 g', 'stat -c "%s" g',
    'cmp -l d g | wc -l', 'fallocate -p -o 0 -l 4096 lowerfile', 'stat -c "%s %b" lowerfile', 'od -An -tx1 -N 8 -j 4090 lowerfile',
  ].join(' && ');

  if (!FUSE_NATIVE) {
    it('modes 0, KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE on new and copied-up files', () => {
      const { plain, mount } = sameInBoth(p, script);
      assert.equal(mount, plain);
      assert.equal(fs.readFileSync(path.join(p.lower, 'lowerfile')).equals(Buffer.alloc(64 * 1024, 7)), true, 'the lower is untouched');
    });

    it('SEEK_DATA and SEEK_HOLE find the same data and holes', async () => {
      const { seek, SEEK_DATA } = await import('../runtime/native/syscalls.js');
      const SEEK_HOLE = 4;
      const probe = (root: string) => {
        const f = path.join(root, 'sparse');
        const fd = fs.openSync(f, 'w+');
        try {
          fs.ftruncateSync(fd, 8 << 20);
          fs.writeSync(fd, 'data', 3 << 20);
          fs.writeSync(fd, 'more', 6 << 20);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        const rd = fs.openSync(f, 'r');
        try {
          const at = (off: number, whence: number) => {
            try {
              return seek(rd, off, whence);
            } catch (err) {
              return (err as NodeJS.ErrnoException).code;
            }
          };
          return [at(0, SEEK_DATA), at(0, SEEK_HOLE), at(3 << 20, SEEK_HOLE), at(4 << 20, SEEK_DATA), at(7 << 20, SEEK_DATA), at(9 << 20, SEEK_HOLE)];
        } finally {
          fs.closeSync(rd);
        }
      };
      const plain = probe(p.plain);
      assert.deepEqual(probe(p.mnt), plain);
      assert.equal(plain[0], 3 << 20, 'the plain directory is sparse here');
    });
  } else {
    it('fuse-native has no fallocate (libfuse 2 through fuse-native offers no such operation): EOPNOTSUPP', () => {
      const r = spawnSync('fallocate', ['-l', '4096', path.join(p.mnt, 'f')], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /not supported/i);
    });
  }
});

describe('--allow-other', () => {
  const user = 'overpack-test';
  const base = tempDir('conf-other');
  let fuseMode = 0;
  const uid = () => Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }));
  const gid = () => Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }));
  before(() => {
    spawnSync('useradd', ['--system', '--no-create-home', user], { stdio: 'ignore' });
    fuseMode = fs.statSync('/dev/fuse').mode & 0o777;
    fs.chmodSync('/dev/fuse', 0o666); // as distributions ship it; restored in after()
    fs.chmodSync(base, 0o755);
    fs.mkdirSync(path.join(base, 'lower'));
    fs.writeFileSync(path.join(base, 'lower', 'shared.txt'), 'for everyone\n', { mode: 0o644 });
    fs.writeFileSync(path.join(base, 'lower', 'private.txt'), 'owner only\n', { mode: 0o600 });
    fs.mkdirSync(path.join(base, 'work'));
    fs.chownSync(path.join(base, 'work'), uid(), gid());
  });
  after(() => {
    fs.chmodSync('/dev/fuse', fuseMode);
    for (const m of ['mnt-root', 'mnt-root-private', 'work/mnt']) forceUnmount(path.join(base, m));
    fs.rmSync(base, { recursive: true, force: true });
  });
  const asUser = (cmd: string) => spawnSync('setpriv', [`--reuid=${uid()}`, `--regid=${gid()}`, '--clear-groups', 'sh', '-c', cmd], { encoding: 'utf8', timeout: 20000 });

  it('root serving with --allow-other: another user reads what the modes allow, and only that', async () => {
    const open = await startMount(path.join(base, 'lower'), ['--upper', path.join(base, 'up1'), '--mountpoint', path.join(base, 'mnt-root'), '--allow-other']);
    const closed = await startMount(path.join(base, 'lower'), ['--upper', path.join(base, 'up2'), '--mountpoint', path.join(base, 'mnt-root-private')]);
    try {
      const r = asUser(`cat "${open.mountPoint}/shared.txt"; cat "${open.mountPoint}/private.txt"; echo x > "${open.mountPoint}/new"`);
      assert.equal(r.stdout, 'for everyone\n');
      assert.match(r.stderr, /private\.txt: Permission denied/);
      assert.match(r.stderr, /new: Permission denied/, 'the root directory is 0755 root: no writes for others');
      const refused = asUser(`cat "${closed.mountPoint}/shared.txt"`);
      assert.notEqual(refused.status, 0, 'without --allow-other the mount is its owner’s alone');
      assert.match(refused.stderr, /Permission denied/);
    } finally {
      await open.stop();
      await closed.stop();
    }
  });

  // A private mount namespace whose /etc/fuse.conf is `conf`: what fusermount3 reads there.
  function userMount(conf: string) {
    const w = path.join(base, 'work');
    fs.writeFileSync(path.join(base, 'fuse.conf'), conf);
    const script = `mount --bind ${base}/fuse.conf /etc/fuse.conf
      setpriv --reuid=${uid()} --regid=${gid()} --clear-groups env HOME=${w} ${process.execPath} ${CLI} mount ${base}/lower --upper ${w}/upper --mountpoint ${w}/mnt --allow-other > ${w}/out 2> ${w}/err &
      pid=$!
      i=0; while [ ! -s ${w}/out ] && kill -0 $pid 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
      [ -s ${w}/out ] && cat ${w}/mnt/shared.txt
      kill -TERM $pid 2>/dev/null; wait $pid; echo "server exit $?"
      grep -c ' ${w}/mnt ' /proc/self/mountinfo || true
      cat ${w}/err >&2`;
    return spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', timeout: 60000 });
  }

  it('a user without user_allow_other in /etc/fuse.conf gets a message that says so', () => {
    const r = userMount('# nothing allowed\n');
    assert.match(r.stdout, /server exit 1\n0\n$/);
    assert.match(r.stderr, /user_allow_other/);
    assert.match(r.stderr, /\/etc\/fuse\.conf/);
  });

  it('a user with user_allow_other serves other users (root here)', () => {
    const r = userMount('user_allow_other\n');
    assert.equal(r.stdout, 'for everyone\nserver exit 0\n0\n', r.stderr);
  });
});

describe('paths deeper than PATH_MAX', () => {
  const p = pair('conf-deep');
  const name = 'd'.repeat(249);
  before(async () => {
    // A lower tree already 5,000 bytes deep, made one directory at a time (as the kernel allows).
    for (const root of [p.lower, p.plain]) {
      execFileSync('sh', ['-c', `cd "$0" && for i in $(seq 20); do mkdir ${name} && cd -P ${name}; done && echo lower-deep > f`, root]);
    }
    await mountPair(p);
  });
  after(async () => {
    await p.mount?.stop();
    // Node's rmSync works with whole path strings; GNU rm walks a tree of any depth.
    spawnSync('rm', ['-rf', p.base]);
  });

  it('a 10,000-byte deep path: create, write, read, copy up, rename, stat and remove as in a plain directory', () => {
    const down = `for i in $(seq 20); do cd -P ${name}; done`;
    const script = [
      `${down} && cat f && echo more >> f && cat f && chmod 600 f && stat -c "%s %a" f`,
      `for i in $(seq 20); do mkdir -p ${name} && cd -P ${name}; done`,
      'echo deep > g && cat g && mkdir sub && mv g sub/h && ln -s sub/h link && cat link && ls -1 && stat -c %s sub/h',
      'mkfifo ff && stat -c %F ff && rm ff sub/h link && rmdir sub && ls -1 | wc -l',
      'pwd | sed "s|^$0||" | wc -c',
    ].join(' && ');
    const { plain, mount } = sameInBoth(p, script);
    assert.equal(mount, plain);
    assert.match(plain, /^lower-deep\n/);
    assert.ok(Number(plain.trim().split('\n').at(-2)) > 10_000, 'the path is over 10,000 bytes');
  });
});
