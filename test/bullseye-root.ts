/**
 * A real Debian 11 (bullseye, glibc 2.31) root for running bundles in: `debootstrap
 * --variant=minbase` with fuse3, both stages, cached under
 * `$XDG_CACHE_HOME/overpack/debian/bullseye-amd64-root/` (made once, reused). Its packages come
 * from the same download cache as the build sysroots.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { debootstrap, DEBIAN_SUITE } from '../builder/native/debian.js';
import { overpackCache } from '../runtime/paths/xdg.js';
import { mountsUnder } from './helpers.js';

const RECIPE = `${DEBIAN_SUITE} minbase fuse3\n`;
const COMPLETE = '.overpack-root';

export function bullseyeRootDir(): string {
  return path.join(overpackCache(), 'debian', `${DEBIAN_SUITE}-amd64-root`);
}

/** The root, made first when it is not cached; returns it and whether it was made now. */
export function ensureBullseyeRoot(): { dir: string; made: boolean } {
  const dir = bullseyeRootDir();
  try {
    if (fs.readFileSync(path.join(dir, COMPLETE), 'utf8') === RECIPE) return { dir, made: false };
  } catch {
    /* not made yet */
  }
  const work = `${dir}.tmp-${process.pid}`;
  try {
    removeRoot(work);
    debootstrap('amd64', work, ['--variant=minbase', '--include=fuse3']);
    fs.writeFileSync(path.join(work, COMPLETE), RECIPE);
    removeRoot(dir);
    fs.renameSync(work, dir);
    return { dir, made: true };
  } finally {
    removeRoot(work);
  }
}

/**
 * A failed second stage can leave /proc or /sys mounted inside the root: those are detached
 * first, and nothing is removed while anything is still mounted there (rm would reach the host).
 */
function removeRoot(dir: string): void {
  for (const m of mountsUnder(dir).sort().reverse()) spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`not removing ${dir}: still mounted there: ${left.join(', ')}`);
  fs.rmSync(dir, { recursive: true, force: true });
}
