/**
 * The kernel's writeback cache (`overpack mount --writeback`, fuse3 binding): with it the kernel
 * keeps written pages dirty and sends them later, merged and in parallel, reads pages of files
 * opened write-only, positions O_APPEND writes itself, and owns a file's size and mtime while
 * its pages are dirty. Each case runs the same calls through a writeback mount and on a plain
 * directory, from child processes (this process never serves the mount), and must see the same.
 * The same cases run through a mount without writeback, as the control. Names the README
 * cites: "SQLite through the mount", "O_WRONLY then a partial-page write", "O_APPEND from two
 * processes", "mmap write + msync", "truncate while pages are dirty", "shorter overwrite",
 * "size and mtime right after close", "copy-up under writeback".
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { forceUnmount, startMount, tempDir, type MountProcess } from './helpers.js';

const FUSE_NATIVE = process.env.OVERPACK_FUSE_BINDING === 'fuse-native';

/** Python in a child process: the mount is driven from outside the serving process. */
function py(code: string, ...args: string[]): string {
  return execFileSync('python3', ['-c', code, ...args], { encoding: 'utf8', timeout: 120_000 });
}

/** A few hundred updates, inserts and deletes in transactions, then the integrity check and every row. */
const SQLITE = `
import sqlite3, sys, random, hashlib
db = sqlite3.connect(sys.argv[1] + '/state.db')
random.seed(7)
rows = db.execute('select max(id) from kv').fetchone()[0]
for t in range(12):
    with db:
        for _ in range(40):
            op = random.random()
            if op < 0.6:
                db.execute('update kv set v = ? where id = ?', (random.randbytes(100 + random.randrange(300)), random.randrange(rows)))
            elif op < 0.85:
                db.execute('insert or replace into kv (k, v) values (?, ?)', ('new-%d-%f' % (t, random.random()), random.randbytes(120)))
            else:
                db.execute('delete from kv where id = ?', (random.randrange(rows),))
print(db.execute('pragma integrity_check').fetchone()[0])
h = hashlib.sha256()
n = 0
for row in db.execute('select id, k, v from kv order by id'):
    h.update(repr(row).encode())
    n += 1
print(n, h.hexdigest())
db.close()
`;

const MAKE_DB = `
import sqlite3, sys, random
random.seed(1)
db = sqlite3.connect(sys.argv[1] + '/state.db')
db.execute('create table kv (id integer primary key, k text unique, v blob)')
db.executemany('insert into kv values (?, ?, ?)', ((i, 'key-%06d' % i, random.randbytes(100)) for i in range(3000)))
db.commit()
db.close()
`;

/** Each case: a script run with the directory (mount or plain) as argv[1]; prints what it saw. */
const CASES: Record<string, string> = {
  'O_WRONLY then a partial-page write': `
import os, sys
p = sys.argv[1] + '/big.bin'
fd = os.open(p, os.O_WRONLY)
os.pwrite(fd, b'XYZ', 5000)
os.pwrite(fd, b'tail', 12290)
os.close(fd)
fd = os.open(sys.argv[1] + '/new.bin', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b'a' * 10000)
os.pwrite(fd, b'B', 4095)
os.close(fd)
import hashlib
for n in ('big.bin', 'new.bin'):
    d = open(sys.argv[1] + '/' + n, 'rb').read()
    print(n, len(d), hashlib.sha256(d).hexdigest())
`,
  'O_APPEND from two processes': `
import os, sys, subprocess
p = sys.argv[1] + '/log.txt'
child = '''
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for i in range(300):
    os.write(fd, ('%s %04d ' % (sys.argv[2], i)).encode() + b'.' * (i % 50) + b'\\\\n')
os.close(fd)
'''
procs = [subprocess.Popen([sys.executable, '-c', child, p, w]) for w in ('A', 'B')]
assert all(q.wait() == 0 for q in procs)
lines = open(p, 'rb').read().split(b'\\n')
assert lines[-1] == b'', 'no partial last line'
lines = lines[:-1]
print(len(lines), os.stat(p).st_size)
for w in (b'A', b'B'):
    mine = [l for l in lines if l.startswith(w + b' ')]
    assert [int(l.split()[1]) for l in mine] == list(range(300)), w
    assert all(l == (w + b' %04d ' % i) + b'.' * (i % 50) for i, l in enumerate(mine)), w
print('lines intact')
os.remove(p)  # its order of lines is the scheduler's, not the filesystem's
fd = os.open(sys.argv[1] + '/small.txt', os.O_WRONLY | os.O_APPEND)
os.pwrite(fd, b'+appended', 0)
os.close(fd)
print(open(sys.argv[1] + '/small.txt', 'rb').read())
`,
  'mmap write + msync then read from another process': `
import mmap, os, sys, subprocess
p = sys.argv[1] + '/big.bin'
fd = os.open(p, os.O_RDWR)
m = mmap.mmap(fd, 16384)
m[100:105] = b'MMAP!'
m[8190:8194] = b'edge'
m.flush()
other = subprocess.run([sys.executable, '-c', 'import sys; d = open(sys.argv[1], "rb").read(); print(d[100:105], d[8190:8194], len(d))', p], capture_output=True, text=True, check=True).stdout.strip()
m.close()
os.close(fd)
print(other)
`,
  'truncate/ftruncate while pages are dirty': `
import os, sys, hashlib
p = sys.argv[1] + '/t.bin'
fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b'q' * 20000)
os.ftruncate(fd, 5000)
os.pwrite(fd, b'after', 7000)
print(os.fstat(fd).st_size)
os.close(fd)
fd = os.open(sys.argv[1] + '/big.bin', os.O_RDWR)
os.pwrite(fd, b'D' * 9000, 1000)
os.truncate(sys.argv[1] + '/big.bin', 3000)
os.pwrite(fd, b'E', 6000)
os.close(fd)
for n in ('t.bin', 'big.bin'):
    d = open(sys.argv[1] + '/' + n, 'rb').read()
    print(n, len(d), hashlib.sha256(d).hexdigest())
`,
  'shorter overwrite (echo x > file)': `
import os, sys, subprocess
p = sys.argv[1] + '/small.txt'
subprocess.run(['sh', '-c', 'echo longer-contents-here > "$1" && echo x > "$1"', 'sh', p], check=True)
print(open(p, 'rb').read(), os.stat(p).st_size)
subprocess.run(['sh', '-c', 'echo x > "$1"', 'sh', sys.argv[1] + '/big.bin'], check=True)
print(open(sys.argv[1] + '/big.bin', 'rb').read(), os.stat(sys.argv[1] + '/big.bin').st_size)
`,
  'size and mtime seen by another process right after write+close': `
import os, sys, subprocess
p = sys.argv[1] + '/stamp.txt'
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b'x' * 12345)
os.close(fd)
os.utime(p, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
before = os.stat(p).st_mtime_ns
fd = os.open(p, os.O_WRONLY)
os.pwrite(fd, b'y' * 100, 20000)
os.close(fd)
seen = subprocess.run([sys.executable, '-c', 'import os, sys; s = os.stat(sys.argv[1]); print(s.st_size, s.st_mtime_ns)', p], capture_output=True, text=True, check=True).stdout.split()
print(seen[0], int(seen[1]) > before, open(p, 'rb').read()[19990:20010])
`,
  'copy-up under writeback (a lower file first written through the mount)': `
import os, sys, hashlib
p = sys.argv[1] + '/big.bin'
st = os.stat(p)
fd = os.open(p, os.O_RDWR)
for off in range(0, 300000, 7000):
    os.pwrite(fd, b'%d' % off, off)
os.fsync(fd)
os.fdatasync(fd)
os.close(fd)
d = open(p, 'rb').read()
print(len(d), hashlib.sha256(d).hexdigest(), oct(os.stat(p).st_mode))
`,
};

function fillLower(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const big = Buffer.alloc(300_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 12)) & 0xff;
  fs.writeFileSync(path.join(dir, 'big.bin'), big);
  fs.writeFileSync(path.join(dir, 'small.txt'), 'small\n');
  py(MAKE_DB, dir);
}

for (const writeback of [true, false]) {
  describe(`${writeback ? 'writeback cache on' : 'writeback cache off (control)'}: the mount behaves as a plain directory`, { skip: FUSE_NATIVE ? 'fuse3 only' : false }, () => {
    const base = tempDir(writeback ? 'wb' : 'wb-off');
    let m: MountProcess | undefined;
    /** A fresh lower and plain copy per case, under the one mount. */
    let n = 0;
    before(async () => {
      fs.mkdirSync(path.join(base, 'lower'));
      m = await startMount(path.join(base, 'lower'), ['--upper', path.join(base, 'upper'), ...(writeback ? ['--writeback'] : ['--no-writeback'])]);
    });
    after(async () => {
      if (m) {
        const mp = m.mountPoint;
        await m.stop();
        forceUnmount(mp);
      }
      fs.rmSync(base, { recursive: true, force: true });
    });

    /** A lower directory made behind the mount before the case first looks at it, and its plain twin. */
    function pair(): { mounted: string; plain: string } {
      const name = `case${n++}`;
      fillLower(path.join(base, 'lower', name));
      const plain = path.join(base, 'plain', name);
      fs.cpSync(path.join(base, 'lower', name), plain, { recursive: true });
      return { mounted: path.join(m!.mountPoint, name), plain };
    }

    it('SQLite through the mount: transactions, integrity_check ok, the same rows as on a plain directory', () => {
      const p = pair();
      const plain = py(SQLITE, p.plain);
      const mounted = py(SQLITE, p.mounted);
      assert.match(plain, /^ok\n/);
      assert.equal(mounted, plain);
      // A second process over the same database afterwards (the pages the first left dirty or
      // cached) sees the same, and so does a reader of the upper file itself once it is closed.
      const check = 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1] + "/state.db"); print(db.execute("pragma integrity_check").fetchone()[0], db.execute("select count(*), sum(length(v)) from kv").fetchone())';
      assert.equal(py(check, p.mounted), py(check, p.plain));
    });

    for (const [name, code] of Object.entries(CASES)) {
      it(name, () => {
        const p = pair();
        const expected = py(code, p.plain);
        assert.equal(py(code, p.mounted), expected);
        // What the mount shows matches what it stored: a second look from a new process after
        // every descriptor is closed (dirty pages must have reached the upper by then or still
        // be served from the page cache consistently).
        const sums = 'import os, sys, hashlib\nfor n in sorted(os.listdir(sys.argv[1])):\n  d = open(sys.argv[1] + "/" + n, "rb").read(); print(n, len(d), os.stat(sys.argv[1] + "/" + n).st_size, hashlib.sha256(d).hexdigest())';
        assert.equal(py(sums, p.mounted), py(sums, p.plain));
      });
    }

    it('after unmount, the upper holds what the mount showed (no page left unwritten)', async () => {
      const p = pair();
      const write = 'import os, sys\nfd = os.open(sys.argv[1] + "/late.bin", os.O_WRONLY | os.O_CREAT, 0o644)\nfor i in range(64): os.pwrite(fd, bytes([65 + i % 26]) * 3000, i * 3000)\nos.close(fd)\nfd = os.open(sys.argv[1] + "/big.bin", os.O_WRONLY)\nos.pwrite(fd, b"Z" * 5000, 250000)\nos.close(fd)';
      py(write, p.mounted);
      py(write, p.plain);
      const mp = m!.mountPoint;
      await m!.stop();
      forceUnmount(mp);
      const caseName = path.basename(p.plain);
      for (const f of ['late.bin', 'big.bin']) {
        assert.deepEqual(fs.readFileSync(path.join(base, 'upper', caseName, f)), fs.readFileSync(path.join(p.plain, f)), f);
      }
      m = undefined;
    });
  });
}
