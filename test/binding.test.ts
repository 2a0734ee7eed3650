/**
 * Which FUSE binding serves a mount, and what only the libfuse 3 binding does: the default is
 * our libfuse 3 addon (built by `npm install` where libfuse3-dev is present, as in CI),
 * OVERPACK_FUSE_BINDING picks fuse-native, and a bad name is a clear error.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, forceUnmount, sh, startMount, tempDir } from './helpers.js';
import type { FsOps } from '../runtime/vfs/index.js';

describe('FUSE bindings', () => {
  const base = tempDir('binding');
  const lower = path.join(base, 'lower');
  fs.mkdirSync(lower);
  fs.writeFileSync(path.join(lower, 'f'), 'lower');
  after(() => {
    for (const d of fs.readdirSync(base)) if (d.startsWith('mnt')) forceUnmount(path.join(base, d));
    fs.rmSync(base, { recursive: true, force: true });
  });

  for (const [env, expected] of [[undefined, 'fuse3'], ['fuse3', 'fuse3'], ['fuse-native', 'fuse-native']] as const) {
    it(`OVERPACK_FUSE_BINDING=${env ?? '(unset)'} mounts with ${expected}`, async () => {
      const e = { ...process.env };
      delete e.OVERPACK_FUSE_BINDING;
      if (env) e.OVERPACK_FUSE_BINDING = env;
      const m = await startMount(lower, ['--upper', path.join(base, `u-${expected}`), '--mountpoint', path.join(base, `mnt-${expected}`), '--on-exit', 'discard'], e);
      try {
        // The message follows the mountpoint on stdout; give it a moment to arrive.
        for (let i = 0; i < 100 && !/ with /.test(m.stderr()); i++) await new Promise((r) => setTimeout(r, 20));
        assert.match(m.stderr(), new RegExp(`with ${expected};`));
        assert.equal(fs.readFileSync(path.join(m.mountPoint, 'f'), 'utf8'), 'lower');
      } finally {
        assert.equal(await m.stop(), 0);
      }
    });
  }

  it('an unknown binding is refused with the names of the known ones', () => {
    const r = spawnSync(process.execPath, [CLI, 'mount', lower, '--mountpoint', path.join(base, 'mnt-bad')], {
      encoding: 'utf8',
      env: { ...process.env, OVERPACK_FUSE_BINDING: 'nope' },
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown FUSE binding "nope".*fuse3, fuse-native/);
  });

  it('fuse3: an unlinked open file leaves no .fuse_hidden name behind and stays readable', async () => {
    const m = await startMount(lower, ['--upper', path.join(base, 'u-hidden'), '--mountpoint', path.join(base, 'mnt-hidden'), '--on-exit', 'discard'], { ...process.env, OVERPACK_FUSE_BINDING: 'fuse3' });
    try {
      // One shell keeps the file open on fd 3 across the unlink, lists, then reads through fd 3.
      const out = sh(`cd ${m.mountPoint} && echo data > gone && exec 3<gone && rm gone && ls -a && cat <&3`);
      assert.deepEqual(out.trim().split('\n'), ['.', '..', 'f', 'data']);
    } finally {
      assert.equal(await m.stop(), 0);
    }
  });

  it('fuse3: a write through one name of a hard link shows at once through the other, caches on', async () => {
    const m = await startMount(lower, ['--upper', path.join(base, 'u-link'), '--mountpoint', path.join(base, 'mnt-link'), '--on-exit', 'discard'], { ...process.env, OVERPACK_FUSE_BINDING: 'fuse3' });
    try {
      // The default 30 s cache timeout: neither the size nor the pages of "a" may be stale.
      const out = sh(`cd ${m.mountPoint} && echo one > a && ln a b && cat a && stat -c %s a && echo two >> b && stat -c %s a && cat a`);
      assert.deepEqual(out.trim().split('\n'), ['one', '4', '8', 'one', 'two']);
    } finally {
      assert.equal(await m.stop(), 0);
    }
  });

  it('fuse3: timestamps keep sub-millisecond precision', async () => {
    const m = await startMount(lower, ['--upper', path.join(base, 'u-time'), '--mountpoint', path.join(base, 'mnt-time'), '--on-exit', 'discard'], { ...process.env, OVERPACK_FUSE_BINDING: 'fuse3' });
    try {
      const out = sh(`cd ${m.mountPoint} && touch -m -d '2020-01-02 03:04:05.123456789' f && stat -c %y f`);
      assert.match(out, /05\.123456/);
    } finally {
      assert.equal(await m.stop(), 0);
    }
  });
});

describe('fuse3 binding on its own', () => {
  it('an operation that throws a bug answers EIO, is reported once, and the mount keeps serving', async () => {
    const { fuse3Binding } = await import('../runtime/fuse/fuse3.js');
    const { FsError } = await import('../runtime/vfs/index.js');
    const base = tempDir('throw');
    const mp = path.join(base, 'mnt');
    fs.mkdirSync(mp);
    const now = Date.now();
    const attr = (ino: number, mode: number) => ({ ino, mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, blksize: 4096, blocks: 0, atimeMs: now, mtimeMs: now, ctimeMs: now, dev: 0 });
    const known: Partial<FsOps> = {
      async getattr(p: string) {
        if (p === '/') return attr(1, 0o40755);
        if (p === '/ok') return attr(2, 0o100644);
        if (p === '/boom') throw new TypeError('a bug in the filesystem');
        throw new FsError('ENOENT', 'getattr', p);
      },
    };
    // Everything else answers ENOSYS, like a filesystem that implements nothing more.
    const ops = new Proxy(known, {
      // The optional descriptor methods are left out, as such a filesystem would.
      get: (target, name: string) =>
        name === 'directDescriptor' || name === 'watchDescriptors' ? undefined : target[name as keyof FsOps] ?? (async () => { throw new FsError('ENOSYS', name, ''); }),
    }) as FsOps;
    const reported: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => (reported.push(String(chunk)), true)) as typeof process.stderr.write;
    const mounted = await fuse3Binding.mount(mp, ops, { fsName: 'throw-test', attrTimeout: 0, entryTimeout: 0, negativeTimeout: 0 });
    try {
      // This process serves the mount: drive it from a child, asynchronously.
      const out = await new Promise<string>((resolve) => {
        const p = spawn('sh', ['-c', `stat -c %s ${mp}/boom 2>&1; stat -c %s ${mp}/ok; stat ${mp}/missing 2>&1 | grep -c 'No such file'`]);
        let o = '';
        p.stdout.on('data', (d) => (o += d));
        p.on('exit', () => resolve(o));
      });
      assert.deepEqual(out.trim().split('\n'), [`stat: cannot statx '${mp}/boom': Input/output error`, '0', '1']);
      assert.equal(reported.filter((l) => /(lookup|getattr) failed: TypeError: a bug in the filesystem/.test(l)).length, 1, reported.join(""));
      assert.ok(!reported.some((l) => /ENOENT/.test(l)), 'POSIX answers are not reported');
    } finally {
      process.stderr.write = write;
      await mounted.unmount();
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});
