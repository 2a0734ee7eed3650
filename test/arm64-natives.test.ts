/**
 * The linux-arm64 natives load and work on an arm64 Node with Debian 11's glibc (2.31): the
 * glibc floor test reads their needs, this one runs them (under qemu-aarch64-static). BLAKE3
 * must give the same digest as the host's addon (the arm64 package is an older release).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addonFiles } from '../builder/build.js';
import { blake3 } from '../runtime/hash/blake3.js';
import { runArm64Node } from './arm64-guest.js';

describe('linux-arm64 natives on arm64 Debian 11 (qemu)', () => {
  it('load with process.dlopen, libfuse 3.10 beside the addon, BLAKE3 equal to the host\'s', () => {
    const files = Object.fromEntries(addonFiles('linux-arm64').map((f) => [f.name, f.file]));
    const code = `
      const load = (f) => { const m = { exports: {} }; process.dlopen(m, f); return m.exports; };
      const fuse3 = load(${JSON.stringify(files['overpack-fuse3.node'])});
      const xattr = load(${JSON.stringify(files['xattr.node'])});
      const blake = load(${JSON.stringify(files['blake.node'])});
      const h = new blake.Blake3Hasher(); h.update(Buffer.from('overpack'));
      console.log(JSON.stringify({ arch: process.arch, libfuse: fuse3.libfuseVersion(), xattr: typeof xattr.listSync,
        one: blake.blake3(Buffer.from('overpack')).toString('hex'), streamed: h.digestBuffer().toString('hex') }));`;
    const r = runArm64Node(code);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { arch: string; libfuse: number; xattr: string; one: string; streamed: string };
    const expected = blake3(Buffer.from('overpack')).toString('hex');
    assert.deepEqual(out, { arch: 'arm64', libfuse: 310, xattr: 'function', one: expected, streamed: expected });
  });
});
