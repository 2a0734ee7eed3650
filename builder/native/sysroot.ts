/**
 * A Debian 11 (bullseye) sysroot per target: glibc 2.31's headers and libraries plus
 * libfuse 3.10 and libzstd 1.4. Compiling our addons against it means the linker can only pick glibc symbol
 * versions that exist in 2.31 (and, for what we call, none above 2.28), whatever the host's
 * glibc is; and bullseye's `libfuse3.so.3` and `libzstd.so.1` are the ones the bundles ship.
 *
 * Made from the packages only (`debootstrap --download-only`, then `dpkg-deb -x` of the few we
 * need): no chroot, no emulator, the same way for every architecture. Cached under
 * `$XDG_CACHE_HOME/overpack/sysroot/bullseye-<arch>/` and reused while the package list is
 * the same.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Target } from '../../runtime/native/targets.js';
import { DEBIAN_SUITE, debianArch, debootstrap, debsCache, type DebianArch } from './debian.js';
import { overpackCache } from '../../runtime/paths/xdg.js';
import { OverpackError } from '../../runtime/errors/overpack-error.js';

/** What the sysroot holds: C library and kernel headers, libfuse 3, libzstd, libgcc_s for -shared links. */
const PACKAGES = ['libc6', 'libc6-dev', 'libcrypt1', 'libcrypt-dev', 'linux-libc-dev', 'libgcc-s1', 'libfuse3-3', 'libfuse3-dev', 'libzstd1', 'libzstd-dev'];
/** Written last: a sysroot without it (an interrupted run) is made again. */
const COMPLETE = '.overpack-sysroot';

export class SysrootError extends OverpackError {
  constructor(message: string, readonly target: Target) {
    super('SYSROOT', 'make-sysroot', null, message);
  }
}

export function sysrootDir(target: Target): string {
  return path.join(overpackCache(), 'sysroot', `${DEBIAN_SUITE}-${debianArch(target)}`);
}

/** The sysroot for `target`, made first if it is not cached. Throws SysrootError. */
export function ensureSysroot(target: Target, progress: (message: string) => void): string {
  const dir = sysrootDir(target);
  const recipe = `${DEBIAN_SUITE} ${PACKAGES.join(' ')}\n`;
  try {
    if (fs.readFileSync(path.join(dir, COMPLETE), 'utf8') === recipe) return dir;
  } catch {
    /* not made yet */
  }
  const arch = debianArch(target);
  progress(`making the ${DEBIAN_SUITE} sysroot for ${target} in ${dir} (once)`);
  const download = `${dir}.download-${process.pid}`;
  const work = `${dir}.tmp-${process.pid}`;
  try {
    fs.rmSync(download, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
    try {
      debootstrap(arch, download, ['--download-only', '--variant=minbase', '--include=libc6-dev,libfuse3-dev,linux-libc-dev,libzstd-dev']);
    } catch (err) {
      throw new SysrootError((err as Error).message, target);
    }
    fs.mkdirSync(work, { recursive: true });
    for (const pkg of PACKAGES) extractDeb(findDeb(arch, download, pkg, target), work, target);
    keepSymlinksInside(work);
    fs.writeFileSync(path.join(work, COMPLETE), recipe);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(work, dir);
    return dir;
  } finally {
    fs.rmSync(download, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The downloaded .deb of `pkg` (debootstrap leaves one version of each). */
function findDeb(arch: DebianArch, download: string, pkg: string, target: Target): string {
  for (const dir of [debsCache(arch), path.join(download, 'var', 'cache', 'apt', 'archives')]) {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    const found = names.filter((n) => n.startsWith(`${pkg}_`) && (n.endsWith(`_${arch}.deb`) || n.endsWith('_all.deb'))).sort();
    if (found.length > 0) return path.join(dir, found[found.length - 1]!);
  }
  throw new SysrootError(`debootstrap did not download ${pkg} for ${arch}`, target);
}

function extractDeb(deb: string, into: string, target: Target): void {
  const run = spawnSync('dpkg-deb', ['-x', deb, into], { encoding: 'utf8' });
  if (run.error || run.status !== 0) throw new SysrootError(`dpkg-deb -x ${deb} failed: ${run.error?.message ?? run.stderr}`, target);
}

/**
 * Debian's packages hold absolute symlinks (`libfuse3.so -> /lib/<triplet>/libfuse3.so.3`).
 * Followed as they are, they would lead the linker out of the sysroot to the host's newer
 * libraries; made relative, they stay inside.
 */
function keepSymlinksInside(root: string): void {
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isSymbolicLink()) {
        const target = fs.readlinkSync(p);
        if (!path.isAbsolute(target)) continue;
        fs.unlinkSync(p);
        fs.symlinkSync(path.relative(dir, path.join(root, target)), p);
      }
    }
  };
  walk(root);
}
