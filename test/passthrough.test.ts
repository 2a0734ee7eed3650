/**
 * FUSE passthrough (fuse3_passthrough.c): with CAP_SYS_ADMIN the server lets the kernel read
 * and write upper files itself. What could go wrong: opens of one file that disagree (one
 * passed through, one cached: the kernel fails the second with EIO), pages the kernel cached
 * before a passthrough write served afterwards, a write open of a lower file that is not copied
 * up first, and data lost when the server dies. Each case is run from child processes against a
 * mount and compared with the same calls on a plain directory; the mount's request counts show
 * which way the I/O went. A server without CAP_SYS_ADMIN (an unprivileged user) and
 * `OVERPACK_FUSE_PASSTHROUGH=0` keep zero-message opens.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { lowerWithFile, startMount, tempDir, unprivilegedUser, type MountProcess } from './helpers.js';
import { appendImage } from '../runtime/image/writer.js';

function py(code: string, dir: string, user?: { uid: string; gid: string }): string {
  if (!user) return execFileSync('python3', ['-c', code, dir], { encoding: 'utf8', timeout: 120_000 });
  // The system's Python: a user's own (pyenv, say) may not be theirs to run.
  return execFileSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '/usr/bin/python3', '-c', code, dir], { encoding: 'utf8', timeout: 120_000 });
}

const SHOW = `
import hashlib, os, sys
d = sys.argv[1]
def show(*names):
    for n in names:
        p = os.path.join(d, n)
        data = open(p, 'rb').read()
        print(n, len(data), hashlib.sha256(data).hexdigest()[:16])
`;

const CASES: Record<string, string> = {
  'a new file and a copied-up lower file, written and read back': `
with open(d + '/new.bin', 'wb') as f:
    for i in range(64):
        f.write(bytes([i]) * 65536)
fd = os.open(d + '/lower.txt', os.O_RDWR)
os.pwrite(fd, b'OVERWRITTEN', 100)
os.close(fd)
with open(d + '/lower.txt', 'ab') as f:
    f.write(b'appended\\n')
show('new.bin', 'lower.txt')
`,
  'a file held open for reading while another process writes it': `
import subprocess
r = open(d + '/lower.txt', 'rb')
before = r.read(20)
subprocess.run([sys.executable, '-c', 'import sys; f = open(sys.argv[1], "r+b"); f.seek(0); f.write(b"WRITER WAS HERE"); f.close()', d + '/lower.txt'], check=True)
r.seek(0)
print('reader sees', r.read(20), 'before', before)
r.close()
show('lower.txt')
`,
  'a writer holding the file while others open it to read and to write': `
w = open(d + '/held.txt', 'w+b', buffering=0)
w.write(b'first line\\n' * 1000)
for i in range(5):
    with open(d + '/held.txt', 'rb') as r:
        r.seek(i * 11)
        print(i, r.read(11))
    with open(d + '/held.txt', 'r+b', buffering=0) as o:
        o.seek(i * 11)
        o.write(b'line %04d\\n' % i)
w.seek(0)
print(w.read(55))
w.close()
show('held.txt')
`,
  'pages read before a write of the same size are not served after it': `
with open(d + '/same.bin', 'wb') as f:
    f.write(b'a' * 100000)
for _ in range(3):
    open(d + '/same.bin', 'rb').read()
with open(d + '/same.bin', 'r+b') as f:
    f.write(b'b' * 100000)
print(open(d + '/same.bin', 'rb').read(8), open(d + '/same.bin', 'rb').read()[-8:])
for _ in range(3):
    open(d + '/lower.txt', 'rb').read()
fd = os.open(d + '/lower.txt', os.O_WRONLY)
os.pwrite(fd, b'Z' * 15, 0)
os.close(fd)
print(open(d + '/lower.txt', 'rb').read(16))
show('same.bin', 'lower.txt')
`,
  'a shared mapping written, read through another descriptor; truncation and O_APPEND': `
import mmap
with open(d + '/mapped.bin', 'wb') as f:
    f.write(b'.' * 8192)
with open(d + '/mapped.bin', 'r+b') as f:
    m = mmap.mmap(f.fileno(), 8192)
    m[0:6] = b'MAPPED'
    m.flush()
    with open(d + '/mapped.bin', 'rb') as r:
        print(r.read(6))
    m.close()
os.truncate(d + '/mapped.bin', 100)
fd = os.open(d + '/mapped.bin', os.O_WRONLY | os.O_APPEND)
os.write(fd, b'at the end')
os.close(fd)
show('mapped.bin')
`,
  'a setuid file with a capability, written by root: the bit kept, the capability dropped': `
import struct
p = d + '/capped'
with open(p, 'wb') as f:
    f.write(b'#!/bin/sh\\n')
os.chmod(p, 0o4755)
os.setxattr(p, 'security.capability', struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0))
print(oct(os.stat(p).st_mode), 'security.capability' in os.listxattr(p))
with open(p, 'ab') as f:
    f.write(b'echo hi\\n')
print(oct(os.stat(p).st_mode), 'security.capability' in os.listxattr(p))
for i in range(3):
    with open(p, 'r+b') as f:
        f.write(b'#')
os.setxattr(p, 'security.capability', struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0))
with open(p, 'ab') as f:
    f.write(b'# again\\n')
print(oct(os.stat(p).st_mode), 'security.capability' in os.listxattr(p))
show('capped')
`,
  'overwritten with shorter contents (echo x > file, open with O_TRUNC), a lower file and an upper one': `
import subprocess
with open(d + '/long.txt', 'wb') as f:
    f.write(b'a long first version\\n' * 100)
for name in ('lower.txt', 'long.txt'):
    subprocess.run(['sh', '-c', 'echo x > "$1"', 'sh', d + '/' + name], check=True)
    print(name, os.stat(d + '/' + name).st_size, open(d + '/' + name, 'rb').read())
with open(d + '/long.txt', 'w') as f:
    f.write('y')
fd = os.open(d + '/lower.txt', os.O_WRONLY | os.O_TRUNC)
os.write(fd, b'z')
os.close(fd)
show('lower.txt', 'long.txt')
`,
  'SQLite changes in transactions, then an integrity check': `
import sqlite3
db = sqlite3.connect(d + '/state.db')
db.execute('create table if not exists kv (k integer primary key, v blob)')
for t in range(10):
    with db:
        for i in range(200):
            db.execute('insert or replace into kv values (?, ?)', (t * 50 + i, bytes([t, i % 256]) * 50))
print(db.execute('pragma integrity_check').fetchone()[0], db.execute('select count(*), sum(length(v)) from kv').fetchone())
db.close()
show('state.db')
`,
};

/** The cases whose writer opens while a reader holds the file cached: the kernel forbids passing it through. */
const CACHED_ONLY = new Set(['a file held open for reading while another process writes it']);

type Counts = { mode: string; passed: number; writes: number };

describe('FUSE passthrough', () => {
  let base: string;
  before(() => {
    base = tempDir('passthrough');
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  const fresh = (name: string): string => lowerWithFile(base, name);

  function counts(stderr: string): Counts {
    const pt = /passthrough: (.+), (\d+) opens passed through/.exec(stderr);
    const js = /^ {2}write +(\d+)/m.exec(stderr);
    const direct = /answered by the addon itself: \d+ READ, (\d+) WRITE/.exec(stderr);
    assert.ok(pt && direct, `no request counts in: ${stderr}`);
    return { mode: pt[1]!, passed: Number(pt[2]), writes: Number(js?.[1] ?? 0) + Number(direct[1]) };
  }

  async function throughMount(name: string, code: string, env: NodeJS.ProcessEnv = {}): Promise<{ out: string; counts: Counts; upper: string }> {
    const lower = fresh(name);
    const upper = path.join(base, name, 'upper');
    let m: MountProcess | null = null;
    try {
      m = await startMount(lower, ['--upper', upper, '--mountpoint', path.join(base, name, 'mnt')], { ...process.env, OVERPACK_FUSE_STATS: '1', ...env });
      const out = py(SHOW + code, m.mountPoint);
      assert.equal(await m.stop(), 0);
      return { out, counts: counts(m.stderr()), upper };
    } finally {
      await m?.stop();
    }
  }

  let n = 0;
  for (const [title, code] of Object.entries(CASES)) {
    it(title, async () => {
      const id = `c${n++}`;
      const expected = py(SHOW + code, fresh(`${id}-plain`));
      const on = await throughMount(`${id}-on`, code);
      assert.equal(on.out, expected, 'through the mount: not what a plain directory shows');
      assert.equal(on.counts.mode, 'on');
      if (CACHED_ONLY.has(title)) assert.equal(on.counts.passed, 0, 'a write open passed through while a cached open was held');
      else assert.ok(on.counts.passed > 0, `no open was passed through (${JSON.stringify(on.counts)})`);
      // What the mount showed is what its upper holds.
      const written = fs.readdirSync(on.upper).filter((f) => !f.startsWith('.wh.')).sort();
      const list = `show(*${JSON.stringify(written)})`;
      assert.equal(py(SHOW + list, on.upper), py(SHOW + list, path.join(base, `${id}-plain`, 'lower')), 'the upper holds what the plain directory holds');
    });
  }

  it('a file of an image, looked up from a lent listing, written through passthrough: its new size after the caches are dropped', async () => {
    const app = path.join(base, 'image-app');
    fs.mkdirSync(path.join(app, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(app, 'sub/f.txt'), 'f'.repeat(1100));
    fs.writeFileSync(path.join(app, 'sub/g.txt'), 'g');
    const image = path.join(base, 'app.img');
    fs.writeFileSync(image, Buffer.alloc(100));
    await appendImage(image, { appDir: app, manifest: {}, addons: [] });
    let m: MountProcess | null = null;
    try {
      m = await startMount(image, ['--upper', path.join(base, 'image-upper'), '--mountpoint', path.join(base, 'image-mnt')], { ...process.env, OVERPACK_FUSE_STATS: '1' });
      // g.txt's lookup lends sub/ to the addon, which then answers f.txt's.
      const out = py(`
import os, sys
d = sys.argv[1]
os.stat(d + '/sub/g.txt'); os.stat(d + '/sub/f.txt')
with open(d + '/sub/f.txt', 'ab') as f:
    f.write(b'x' * 8000)
open('/proc/sys/vm/drop_caches', 'w').write('2')
print(os.stat(d + '/sub/f.txt').st_size, len(open(d + '/sub/f.txt', 'rb').read()))
`, m.mountPoint);
      assert.equal(out, '9100 9100\n');
      assert.equal(await m.stop(), 0);
      assert.equal(counts(m.stderr()).mode, 'on');
    } finally {
      await m?.stop();
    }
  });

  it('a write open of a file that lost its name (through /proc/self/fd, or renamed over meanwhile) works as on a plain directory', async () => {
    const code = `
import threading
for name in ('up.txt', 'lower.txt'):
    if name == 'up.txt':
        with open(d + '/up.txt', 'wb') as f:
            f.write(b'upper file\\n')
    p = os.open(d + '/' + name, os.O_PATH)
    os.unlink(d + '/' + name)
    fd = os.open('/proc/self/fd/%d' % p, os.O_RDWR)
    os.pwrite(fd, b'WRITTEN', 0)
    print(name, os.pread(fd, 12, 0))
    os.close(fd); os.close(p)
stop = False
def replace():
    i = 0
    while not stop:
        with open(d + '/tmp%d' % (i % 2), 'wb') as f:
            f.write(b'version %d\\n' % i)
        os.rename(d + '/tmp%d' % (i % 2), d + '/target')
        i += 1
with open(d + '/target', 'wb') as f:
    f.write(b'first\\n')
t = threading.Thread(target=replace)
t.start()
errors = {}
for _ in range(1500):
    try:
        os.close(os.open(d + '/target', os.O_WRONLY))
    except OSError as e:
        errors[e.strerror] = errors.get(e.strerror, 0) + 1
stop = True
t.join()
print('errors', errors)
`;
    const expected = py(SHOW + code, fresh('lost-plain'));
    const on = await throughMount('lost-on', code);
    assert.equal(on.out, expected);
    assert.equal(on.counts.mode, 'on');
  });

  it('sends no WRITE to the server for a passed-through file, and every one without it', async () => {
    const code = `
with open(d + '/big.bin', 'wb') as f:
    for i in range(256):
        f.write(bytes([i % 251]) * 16384)
show('big.bin')
`;
    const on = await throughMount('writes-on', code);
    const off = await throughMount('writes-off', code, { OVERPACK_FUSE_PASSTHROUGH: '0' });
    assert.equal(on.out, off.out);
    assert.equal(on.counts.writes, 0, `WRITEs reached the server: ${JSON.stringify(on.counts)}`);
    assert.equal(off.counts.mode, 'off (zero-message opens)');
    assert.equal(off.counts.passed, 0);
    assert.ok(off.counts.writes >= 64, `4 MiB in fewer than 64 WRITEs without passthrough (${off.counts.writes})`);
  });

  it('keeps what was written when the server is killed', async () => {
    const lower = fresh('killed');
    const upper = path.join(base, 'killed', 'upper');
    const m = await startMount(lower, ['--upper', upper, '--mountpoint', path.join(base, 'killed', 'mnt')]);
    try {
      // The writer keeps its descriptor open (no close, no fsync) while the server dies.
      const writer = spawn('python3', ['-c', 'import sys, time; f = open(sys.argv[1], "wb", buffering=0); f.write(b"kept " * 20000); print("written", flush=True); time.sleep(30)', path.join(m.mountPoint, 'kept.txt')], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => writer.stdout.on('data', () => resolve()));
      await m.stop('SIGKILL');
      writer.kill('SIGKILL');
      await new Promise((r) => writer.on('exit', r));
      assert.equal(fs.readFileSync(path.join(upper, 'kept.txt'), 'utf8'), 'kept '.repeat(20000));
    } finally {
      await m.stop();
    }
  });

  it('is not asked for by a server without CAP_SYS_ADMIN: zero-message opens, every WRITE served', async () => {
    const user = unprivilegedUser(base);
    const dir = path.join(base, 'user');
    const lower = path.join(dir, 'lower');
    fs.mkdirSync(lower, { recursive: true });
    fs.writeFileSync(path.join(lower, 'lower.txt'), 'the lower file\n'.repeat(400));
    fs.mkdirSync(path.join(dir, 'mnt'));
    execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
    let m: MountProcess | null = null;
    try {
      m = await startMount(lower, ['--upper', path.join(dir, 'upper'), '--mountpoint', path.join(dir, 'mnt')], { PATH: process.env.PATH, HOME: user.home, OVERPACK_FUSE_STATS: '1' }, user);
      const code = CASES['a new file and a copied-up lower file, written and read back']!;
      const out = py(SHOW + code, m.mountPoint, user);
      assert.equal(await m.stop(), 0, m.stderr());
      assert.equal(out, py(SHOW + code, fresh('user-plain')));
      const c = counts(m.stderr());
      assert.equal(c.mode, 'off (zero-message opens)');
      assert.ok(c.writes > 0);
    } finally {
      await m?.stop();
      user.restore();
    }
  });
});
