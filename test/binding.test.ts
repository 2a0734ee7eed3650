/**
 * Which FUSE binding serves a mount, and what only the libfuse 3 binding does: the default is
 * our libfuse 3 addon (built by `npm install` where libfuse3-dev is present, as in CI),
 * OVERPACK_FUSE_BINDING picks fuse-native, and a bad name is a clear error.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, forceUnmount, sh, startMount, tempDir } from './helpers.js';

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
