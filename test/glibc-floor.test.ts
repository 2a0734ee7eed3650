/**
 * The glibc floor: no native file a bundle ships, for any target, needs a glibc symbol version
 * above 2.28 (what official Node 18-26 builds need), so a bundle starts wherever its Node does.
 * The files are the builder's own list (`addonFiles`), and the checker is proven on a file
 * known to need more.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addonFiles } from '../builder/build.js';
import { GLIBC_FLOOR, glibcFloorViolations, glibcNeeds, glibcRelease } from '../builder/native/glibc-needs.js';
import { TARGETS, type Target } from '../runtime/native/targets.js';

/** readelf's name for each target's machine. */
const MACHINE: Record<Target, string> = { 'linux-x64': 'Advanced Micro Devices X86-64', 'linux-arm64': 'AArch64' };

function machineOf(file: string): string {
  const out = spawnSync('readelf', ['-h', file], { encoding: 'utf8' }).stdout;
  return /Machine:\s+(.+)/.exec(out)?.[1]?.trim() ?? '(not ELF)';
}

describe(`glibc floor ${GLIBC_FLOOR}`, () => {
  for (const target of TARGETS) {
    it(`every native a ${target} bundle ships needs at most GLIBC_${GLIBC_FLOOR}, and is built for ${target}`, () => {
      // Throws (fails) when the natives of the target were not prepared: see npm run build's warnings.
      const files = addonFiles(target);
      assert.deepEqual(files.map((f) => f.name).sort(), ['blake.node', 'libfuse3.so.3', 'libzstd.so.1', 'overpack-exec', 'overpack-fuse3.node', 'xattr.node']);
      const report = files.map((f) => `${f.name}: ${glibcNeeds(f.file).join(' ')}`).join('\n  ');
      const above = files.flatMap((f) => glibcFloorViolations(f.file));
      assert.deepEqual(above.map((v) => `${path.basename(v.file)} needs ${v.version}`), [], `${target} natives above GLIBC_${GLIBC_FLOOR}:\n  ${report}`);
      for (const f of files) assert.equal(machineOf(f.file), MACHINE[target], `${f.file} is not for ${target}`);
      // Every file declares what it needs (an ELF with no version needs would read as "none").
      for (const f of files) assert.ok(glibcNeeds(f.file).length > 0, `${f.file}: readelf found no GLIBC needs`);
    });
  }

  it('the checker reports a file that needs more: the host libfuse3 of Debian 12 needs GLIBC_2.34', () => {
    const host = '/usr/lib/x86_64-linux-gnu/libfuse3.so.3';
    assert.ok(fs.existsSync(host), `${host} is the known offender (Debian 12's libfuse3-3); install libfuse3-3 to run this check`);
    const above = glibcFloorViolations(host).map((v) => v.version);
    assert.ok(above.includes('GLIBC_2.34'), `expected GLIBC_2.34 among ${above.join(', ')}`);
    assert.deepEqual(glibcFloorViolations(host, '2.34'), [], 'nothing above 2.34 there');
  });

  it('the checker compares releases as numbers and refuses names that are no release', () => {
    assert.deepEqual(glibcRelease('GLIBC_2.3.4'), [2, 3, 4]);
    assert.equal(glibcRelease('GLIBC_PRIVATE'), null);
    const blake = addonFiles('linux-x64').find((f) => f.name === 'blake.node')!;
    // Compared as numbers: as text, 2.9 would be above 2.14.
    assert.ok(glibcNeeds(blake.file).includes('GLIBC_2.14'));
    assert.deepEqual(glibcFloorViolations(blake.file, '2.14'), []);
    assert.deepEqual(glibcFloorViolations(blake.file, '2.9').map((v) => v.version).includes('GLIBC_2.14'), true, '2.14 is above 2.9');
  });
});
