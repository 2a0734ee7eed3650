/**
 * The overlay's live semantics, through a real FUSE mount served by `overpack mount` in a
 * child process and driven from this process.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { comparable, makeLower, sh, snapshot, startMount, tempDir, type MountProcess } from './helpers.js';

const ALL_FIELDS = ['type', 'mode', 'uid', 'gid', 'size', 'mtimeMs', 'hash', 'target', 'xattrs', 'ino', 'nlink'] as const;

function fixture(tag: string) {
  const base = tempDir(tag);
  const lower = path.join(base, 'lower');
  fs.mkdirSync(lower);
  makeLower(lower);
  const upper = path.join(base, 'upper');
  const mnt = path.join(base, 'mnt');
  return { base, lower, upper, mnt };
}

describe('copy-on-write', () => {
  const f = fixture('cow');
  let m: MountProcess;
  let lowerBefore: ReturnType<typeof comparable>;
  before(async () => {
    lowerBefore = comparable(snapshot(f.lower), [...ALL_FIELDS]);
    m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt]);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(f.base, { recursive: true, force: true });
  });

  it('reads the lower through the mount', () => {
    assert.equal(fs.readFileSync(path.join(f.mnt, 'hello.txt'), 'utf8'), 'hello from lower\n');
    assert.equal(fs.readFileSync(path.join(f.mnt, 'docs/deep/er/c.md'), 'utf8'), 'c'.repeat(100000));
    assert.equal(fs.statSync(path.join(f.mnt, 'docs/a.md')).uid, 1234);
  });

  it('copies a file up on write, keeping mode, owner, times and xattrs', () => {
    const p = path.join(f.mnt, 'docs/a.md');
    fs.appendFileSync(p, 'more\n');
    assert.equal(fs.readFileSync(p, 'utf8'), '# a\nmore\n');
    const up = fs.statSync(path.join(f.upper, 'docs/a.md'));
    assert.equal(up.mode & 0o7777, 0o640);
    assert.equal(up.uid, 1234);
    assert.equal(up.gid, 5678);
    // the parent directory was created in the upper with the lower's metadata
    assert.equal(xattr.getAttributeSync(path.join(f.upper, 'docs'), 'user.kind').toString(), 'folder');
  });

  it('copies up on truncate, chmod, chown, utimens and setxattr', () => {
    const p = path.join(f.mnt, 'hello.txt');
    fs.chmodSync(p, 0o600);
    const up = path.join(f.upper, 'hello.txt');
    assert.equal(fs.statSync(up).mode & 0o777, 0o600);
    assert.equal(xattr.getAttributeSync(up, 'user.origin').toString(), 'lower', 'xattrs copied up');
    assert.equal(fs.statSync(up).mtime.toISOString(), '2021-02-03T04:05:06.000Z', 'mtime preserved by copy-up');
    fs.chownSync(path.join(f.mnt, 'script.sh'), 42, 43);
    assert.equal(fs.statSync(path.join(f.upper, 'script.sh')).uid, 42);
    fs.utimesSync(path.join(f.mnt, 'docs/deep/b.md'), new Date('2001-01-01T00:00:00Z'), new Date('2002-02-02T00:00:00Z'));
    assert.equal(fs.statSync(path.join(f.mnt, 'docs/deep/b.md')).mtime.toISOString(), '2002-02-02T00:00:00.000Z');
    fs.truncateSync(path.join(f.mnt, 'docs/deep/er/c.md'), 10);
    assert.equal(fs.readFileSync(path.join(f.mnt, 'docs/deep/er/c.md'), 'utf8'), 'cccccccccc');
    xattr.setAttributeSync(path.join(f.mnt, 'empty'), 'user.new', 'x');
    assert.equal(xattr.getAttributeSync(path.join(f.upper, 'empty'), 'user.new').toString(), 'x');
    assert.deepEqual(xattr.listAttributesSync(path.join(f.mnt, 'empty')), ['user.new']);
    xattr.removeAttributeSync(path.join(f.mnt, 'empty'), 'user.new');
    assert.deepEqual(xattr.listAttributesSync(path.join(f.mnt, 'empty')), []);
  });

  it('copies symlinks as symlinks, never following them', () => {
    fs.lchownSync(path.join(f.mnt, 'link'), 7, 8);
    assert.equal(fs.readlinkSync(path.join(f.upper, 'link')), 'hello.txt');
    assert.ok(fs.lstatSync(path.join(f.upper, 'link')).isSymbolicLink());
    assert.equal(fs.lstatSync(path.join(f.mnt, 'link')).uid, 7);
    assert.equal(fs.readlinkSync(path.join(f.mnt, 'dangling')), 'does/not/exist');
    assert.ok(fs.readdirSync(f.mnt).includes('dangling'));
  });

  it('leaves the lower byte-for-byte and metadata-for-metadata unchanged', () => {
    sh(`cd ${f.mnt} && rm -rf docs/deep && mv script.sh s2 && echo x > new && mkdir nd && ln new nd/hard && mv empty e2`);
    assert.deepEqual(comparable(snapshot(f.lower), [...ALL_FIELDS]), lowerBefore);
  });

  it('never leaves a partial copy-up: the scratch dir is the only place copies are built', () => {
    // Anything under the work dir is invisible and dropped at the next mount.
    assert.ok(!fs.readdirSync(f.mnt).some((n) => n.startsWith('.wh.')));
    assert.ok(fs.existsSync(path.join(f.upper, '.wh..wh..work')));
  });
});

describe('reads of large files', () => {
  // Reads of more than a couple of pages are answered by splicing the backing file in C
  // (replyFd); these check the bytes, short reads at the end and reads after copy-up.
  const f = fixture('bigread');
  const lowerData = Buffer.alloc(3 * 1024 * 1024 + 12345);
  for (let i = 0; i + 4 <= lowerData.length; i += 4) lowerData.writeUInt32LE((i * 2654435761) >>> 0, i);
  let m: MountProcess;
  before(async () => {
    fs.writeFileSync(path.join(f.lower, 'big.bin'), lowerData);
    m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt]);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(f.base, { recursive: true, force: true });
  });

  function preadAt(p: string, length: number, position: number): Buffer {
    const fd = fs.openSync(p, 'r');
    try {
      const buf = Buffer.alloc(length);
      return buf.subarray(0, fs.readSync(fd, buf, 0, length, position));
    } finally {
      fs.closeSync(fd);
    }
  }

  it('reads a lower file whole, at odd offsets and short at the end', () => {
    const p = path.join(f.mnt, 'big.bin');
    assert.ok(fs.readFileSync(p).equals(lowerData));
    for (const [len, pos] of [[100000, 4095], [1 << 20, (1 << 20) - 1], [1000, lowerData.length - 100], [10, lowerData.length + 5]] as const) {
      assert.ok(preadAt(p, len, pos).equals(lowerData.subarray(pos, pos + len)), `${len} at ${pos}`);
    }
  });

  it('reads an upper file written through the mount, and a copied-up one', () => {
    const p = path.join(f.mnt, 'written.bin');
    const data = Buffer.from(lowerData.subarray(0, 2 * 1024 * 1024 + 7)).reverse();
    fs.writeFileSync(p, data);
    assert.ok(fs.readFileSync(p).equals(data));
    const patch = Buffer.alloc(70000, 0x5a);
    const fd = fs.openSync(p, 'r+');
    fs.writeSync(fd, patch, 0, patch.length, 1000000);
    fs.closeSync(fd);
    patch.copy(data, 1000000);
    assert.ok(fs.readFileSync(p).equals(data));
    const big = path.join(f.mnt, 'big.bin');
    fs.appendFileSync(big, 'tail');
    assert.ok(fs.readFileSync(big).equals(Buffer.concat([lowerData, Buffer.from('tail')])));
    assert.ok(fs.readFileSync(path.join(f.lower, 'big.bin')).equals(lowerData), 'lower unchanged');
  });
});

describe('whiteouts and opaque directories', () => {
  const f = fixture('wh');
  let m: MountProcess;
  before(async () => {
    m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt]);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(f.base, { recursive: true, force: true });
  });

  it('hides a deleted lower file with .wh.<name>', () => {
    fs.unlinkSync(path.join(f.mnt, 'hello.txt'));
    assert.ok(!fs.existsSync(path.join(f.mnt, 'hello.txt')));
    assert.ok(!fs.readdirSync(f.mnt).includes('hello.txt'));
    assert.ok(fs.statSync(path.join(f.upper, '.wh.hello.txt')).isFile());
    assert.ok(fs.existsSync(path.join(f.lower, 'hello.txt')));
  });

  it('rm -rf dir && mkdir dir shows an empty dir (opaque)', () => {
    sh(`rm -rf ${f.mnt}/docs && mkdir ${f.mnt}/docs`);
    assert.deepEqual(fs.readdirSync(path.join(f.mnt, 'docs')), []);
    assert.ok(fs.existsSync(path.join(f.upper, 'docs/.wh..wh..opq')));
    assert.ok(!fs.existsSync(path.join(f.upper, '.wh.docs')));
    assert.ok(!fs.existsSync(path.join(f.mnt, 'docs/a.md')));
    fs.writeFileSync(path.join(f.mnt, 'docs/new.md'), 'n');
    assert.deepEqual(fs.readdirSync(path.join(f.mnt, 'docs')), ['new.md']);
  });

  it('recreating a deleted file shows the new content', () => {
    fs.writeFileSync(path.join(f.mnt, 'hello.txt'), 'again');
    assert.equal(fs.readFileSync(path.join(f.mnt, 'hello.txt'), 'utf8'), 'again');
    assert.ok(!fs.existsSync(path.join(f.upper, '.wh.hello.txt')));
  });

  it('never shows or creates .wh.* names', () => {
    assert.ok(!fs.readdirSync(f.mnt).some((n) => n.startsWith('.wh.')));
    assert.throws(() => fs.writeFileSync(path.join(f.mnt, '.wh.evil'), 'x'), /EPERM/);
    assert.throws(() => fs.mkdirSync(path.join(f.mnt, '.wh.dir')), /EPERM/);
    assert.throws(() => fs.statSync(path.join(f.mnt, '.wh.hello.txt')), /ENOENT/);
    assert.throws(() => fs.renameSync(path.join(f.mnt, 'script.sh'), path.join(f.mnt, '.wh.x')), /EPERM/);
  });

  it('rmdir of a merged directory checks the merged view', () => {
    assert.throws(() => fs.rmdirSync(path.join(f.mnt, 'docs')), /ENOTEMPTY/);
    fs.unlinkSync(path.join(f.mnt, 'docs/new.md'));
    fs.rmdirSync(path.join(f.mnt, 'docs'));
    assert.ok(!fs.existsSync(path.join(f.mnt, 'docs')));
    fs.rmdirSync(path.join(f.mnt, 'empty'));
    assert.ok(fs.existsSync(path.join(f.upper, '.wh.empty')));
  });
});

describe('rename behaves like rename(2)', () => {
  const f = fixture('mv');
  let m: MountProcess;
  before(async () => {
    fs.mkdirSync(path.join(f.lower, 'target-dir'));
    fs.writeFileSync(path.join(f.lower, 'victim.txt'), 'victim');
    m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt]);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(f.base, { recursive: true, force: true });
  });
  const p = (r: string) => path.join(f.mnt, r);

  it('lower file to a new name', () => {
    fs.renameSync(p('hello.txt'), p('renamed.txt'));
    assert.equal(fs.readFileSync(p('renamed.txt'), 'utf8'), 'hello from lower\n');
    assert.ok(!fs.existsSync(p('hello.txt')));
    assert.equal(xattr.getAttributeSync(p('renamed.txt'), 'user.origin').toString(), 'lower');
  });

  it('upper file onto a lower name (replacing it)', () => {
    fs.writeFileSync(p('fresh.txt'), 'fresh');
    fs.renameSync(p('fresh.txt'), p('victim.txt'));
    assert.equal(fs.readFileSync(p('victim.txt'), 'utf8'), 'fresh');
    assert.ok(!fs.existsSync(p('fresh.txt')));
  });

  it('over an existing upper file', () => {
    fs.writeFileSync(p('one'), '1');
    fs.writeFileSync(p('two'), '2');
    fs.renameSync(p('one'), p('two'));
    assert.equal(fs.readFileSync(p('two'), 'utf8'), '1');
    assert.ok(!fs.existsSync(p('one')));
  });

  it('a lower directory with contents (mv)', () => {
    sh(`mv ${p('docs')} ${p('moved')}`);
    assert.equal(fs.readFileSync(p('moved/deep/er/c.md'), 'utf8'), 'c'.repeat(100000));
    assert.deepEqual(fs.readdirSync(p('moved')).sort(), ['a.md', 'deep']);
    assert.ok(!fs.existsSync(p('docs')));
    assert.equal(fs.statSync(p('moved/a.md')).uid, 1234);
    // moving it back restores the name with the same contents
    sh(`mv ${p('moved')} ${p('docs')}`);
    assert.deepEqual(fs.readdirSync(p('docs')).sort(), ['a.md', 'deep']);
  });

  it('a directory over an empty lower directory', () => {
    fs.mkdirSync(p('src-dir'));
    fs.writeFileSync(p('src-dir/x'), 'x');
    fs.renameSync(p('src-dir'), p('target-dir'));
    assert.deepEqual(fs.readdirSync(p('target-dir')), ['x']);
  });

  it('a lower directory over a lower empty directory hides nothing it should show', () => {
    fs.mkdirSync(p('empty2'));
    fs.renameSync(p('docs'), p('empty'));
    assert.deepEqual(fs.readdirSync(p('empty')).sort(), ['a.md', 'deep']);
  });

  it('refuses what rename(2) refuses', () => {
    fs.mkdirSync(p('full'));
    fs.writeFileSync(p('full/f'), '');
    fs.mkdirSync(p('d1'));
    assert.throws(() => fs.renameSync(p('d1'), p('full')), /ENOTEMPTY|EEXIST/);
    assert.throws(() => fs.renameSync(p('d1'), p('renamed.txt')), /ENOTDIR/);
    assert.throws(() => fs.renameSync(p('renamed.txt'), p('d1')), /EISDIR/);
    assert.throws(() => fs.renameSync(p('d1'), p('d1/inside')), /EINVAL/);
    assert.throws(() => fs.renameSync(p('nope'), p('x')), /ENOENT/);
  });

  it('keeps open files working across rename and unlink', () => {
    fs.writeFileSync(p('open.txt'), 'abc');
    const fd = fs.openSync(p('open.txt'), 'r+');
    try {
      fs.renameSync(p('open.txt'), p('open2.txt'));
      fs.writeSync(fd, 'XY', 0);
      assert.equal(fs.readFileSync(p('open2.txt'), 'utf8'), 'XYc');
      fs.unlinkSync(p('open2.txt'));
      const buf = Buffer.alloc(3);
      fs.readSync(fd, buf, 0, 3, 0);
      assert.equal(buf.toString(), 'XYc');
      assert.equal(fs.fstatSync(fd).size, 3);
      fs.ftruncateSync(fd, 1);
      assert.equal(fs.fstatSync(fd).size, 1);
    } finally {
      fs.closeSync(fd);
    }
    const lowerFd = fs.openSync(p('victim.txt'), 'r');
    try {
      fs.unlinkSync(p('victim.txt'));
      const b = Buffer.alloc(5);
      assert.equal(fs.readSync(lowerFd, b, 0, 5, 0), 5);
    } finally {
      fs.closeSync(lowerFd);
    }
  });
});

describe('directories, links and inodes', () => {
  const f = fixture('dir');
  let m: MountProcess;
  before(async () => {
    fs.mkdirSync(path.join(f.lower, 'big'));
    for (let i = 0; i < 6000; i++) fs.writeFileSync(path.join(f.lower, 'big', `l${i}`), '');
    m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt]);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(f.base, { recursive: true, force: true });
  });

  it('merges a 10,000+ entry directory without duplicates, with . and ..', () => {
    sh(`cd ${f.mnt}/big && i=0; while [ $i -lt 5000 ]; do : > u$i; i=$((i+1)); done; : > l1`);
    fs.unlinkSync(path.join(f.mnt, 'big/l2'));
    const names = fs.readdirSync(path.join(f.mnt, 'big'));
    assert.equal(names.length, 10999);
    assert.equal(new Set(names).size, names.length);
    assert.ok(!names.includes('l2'));
    const ls = sh(`ls -a ${f.mnt}/big | head -2`).split('\n');
    assert.deepEqual(ls.slice(0, 2), ['.', '..']);
  });

  it('stat and readdir agree on inode numbers, unique within the mount', () => {
    const out = sh(`cd ${f.mnt} && ls -ia1 docs docs/deep . | grep -v ':$' | grep -v '^$'`);
    const fromLs = new Map<string, number>();
    for (const line of sh(`cd ${f.mnt} && ls -i1 docs`).trim().split('\n')) {
      const [ino, name] = line.trim().split(/\s+/);
      fromLs.set(name!, Number(ino));
    }
    for (const [name, ino] of fromLs) assert.equal(fs.lstatSync(path.join(f.mnt, 'docs', name)).ino, ino, name);
    const all = sh(`find ${f.mnt} -printf '%i\\n' | sort | uniq -d`).trim();
    assert.equal(all, '', 'no duplicate inode numbers');
    assert.ok(out.length > 0);
  });

  it('statfs, access, fsync, O_APPEND, sparse and >4 GiB offsets', () => {
    const st = fs.statfsSync(f.mnt);
    assert.ok(st.blocks > 0 && st.bsize > 0);
    fs.accessSync(path.join(f.mnt, 'script.sh'), fs.constants.X_OK);
    assert.throws(() => fs.accessSync(path.join(f.mnt, 'missing')), /ENOENT/);
    const p = path.join(f.mnt, 'append.log');
    fs.writeFileSync(p, 'a');
    const fd = fs.openSync(p, 'a');
    fs.writeSync(fd, 'b');
    fs.writeSync(fd, 'c', 0); // O_APPEND ignores the position
    fs.fsyncSync(fd);
    fs.fdatasyncSync(fd);
    fs.closeSync(fd);
    assert.equal(fs.readFileSync(p, 'utf8'), 'abc');
    const big = path.join(f.mnt, 'sparse.bin');
    const bfd = fs.openSync(big, 'w+');
    const off = 5 * 1024 * 1024 * 1024 + 7;
    fs.writeSync(bfd, 'tail', off);
    const buf = Buffer.alloc(4);
    fs.readSync(bfd, buf, 0, 4, off);
    fs.closeSync(bfd);
    assert.equal(buf.toString(), 'tail');
    assert.equal(fs.statSync(big).size, off + 4);
    assert.ok(fs.statSync(path.join(f.upper, 'sparse.bin')).blocks < 1000, 'sparse in the upper');
    const hole = Buffer.alloc(8, 1);
    const rfd = fs.openSync(big, 'r');
    fs.readSync(rfd, hole, 0, 8, 1024);
    fs.closeSync(rfd);
    assert.deepEqual([...hole], [0, 0, 0, 0, 0, 0, 0, 0]);
    // fallocate is not offered by this binding: a clear EOPNOTSUPP, not a hang or corruption
    const r = sh(`fallocate -l 4096 ${f.mnt}/fa 2>&1 || true`);
    assert.match(r, /not supported|^$/i);
  });
});

describe('inode modes', () => {
  it('persistent numbers are stable across remounts; virtual ones are unique', async () => {
    const f = fixture('ino');
    const inos = async (mode: string) => {
      const m = await startMount(f.lower, ['--upper', f.upper, '--mountpoint', f.mnt, '--inode-mode', mode]);
      try {
        return sh(`cd ${f.mnt} && find . -printf '%i %p\\n' | sort -k2`);
      } finally {
        await m.stop();
      }
    };
    try {
      const p1 = await inos('persistent');
      const p2 = await inos('persistent');
      assert.equal(p1, p2);
      const v = await inos('virtual');
      const nums = v.trim().split('\n').map((l) => l.split(' ')[0]);
      assert.equal(new Set(nums).size, nums.length);
    } finally {
      fs.rmSync(f.base, { recursive: true, force: true });
    }
  });
});

describe('hard links', () => {
  // libfuse 2 gives each name of a hard-linked file its own kernel node, so with attribute
  // caching a write through one name shows through the other only after the cache timeout.
  // With --cache-timeout 0 the shared content is visible at once.
  const h = fixture('hardlink');
  let m: MountProcess;
  before(async () => {
    m = await startMount(h.lower, ['--upper', h.upper, '--mountpoint', h.mnt, '--cache-timeout', '0']);
  });
  after(async () => {
    await m?.stop();
    fs.rmSync(h.base, { recursive: true, force: true });
  });

  it('hard links in the upper keep nlink, content and inode number', () => {
    fs.writeFileSync(path.join(h.mnt, 'orig'), 'shared');
    fs.linkSync(path.join(h.mnt, 'orig'), path.join(h.mnt, 'alias'));
    const a = fs.statSync(path.join(h.mnt, 'orig'));
    const b = fs.statSync(path.join(h.mnt, 'alias'));
    assert.equal(b.nlink, 2);
    assert.equal(a.ino, b.ino);
    fs.appendFileSync(path.join(h.mnt, 'alias'), '!');
    assert.equal(fs.readFileSync(path.join(h.mnt, 'orig'), 'utf8'), 'shared!');
    // a hard link to a lower file copies it up first
    fs.linkSync(path.join(h.mnt, 'script.sh'), path.join(h.mnt, 'script2.sh'));
    assert.equal(fs.statSync(path.join(h.mnt, 'script2.sh')).nlink, 2);
    assert.equal(fs.statSync(path.join(h.lower, 'script.sh')).nlink, 1);
  });

});
