/**
 * Debian's archive as the source of an older glibc: debootstrap fetches Debian 11 (bullseye,
 * glibc 2.31) packages for the build sysroots (`sysroot.ts`) and for the root the Debian 11
 * test runs bundles in. Downloaded packages are kept in one cache per architecture, shared by
 * both, so each package is fetched once.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Target } from '../../runtime/native/targets.js';
import { OverpackError } from '../../runtime/errors/overpack-error.js';
import { overpackCache } from '../../runtime/paths/xdg.js';

export const DEBIAN_SUITE = 'bullseye';
export const DEBIAN_MIRROR = process.env.OVERPACK_DEBIAN_MIRROR || 'http://deb.debian.org/debian';

export type DebianArch = 'amd64' | 'arm64';

export function debianArch(target: Target): DebianArch {
  return target === 'linux-x64' ? 'amd64' : 'arm64';
}

/** Where debootstrap keeps the .deb files it downloaded for one architecture. */
export function debsCache(arch: DebianArch): string {
  return path.join(overpackCache(), 'debian', `${DEBIAN_SUITE}-${arch}-debs`);
}

export class DebootstrapError extends OverpackError {
  constructor(message: string, readonly args: readonly string[]) {
    super('DEBOOTSTRAP', 'debootstrap', null, message);
  }
}

/**
 * Runs debootstrap for bullseye into `dir` with the shared package cache; throws with the
 * reason (not installed, no network, ...) and the tail of its log.
 */
export function debootstrap(arch: DebianArch, dir: string, options: readonly string[]): void {
  fs.mkdirSync(debsCache(arch), { recursive: true });
  const args = [...options, `--arch=${arch}`, `--cache-dir=${debsCache(arch)}`, DEBIAN_SUITE, dir, DEBIAN_MIRROR];
  const run = spawnSync('debootstrap', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.error) {
    const e = run.error as NodeJS.ErrnoException;
    throw new DebootstrapError(e.code === 'ENOENT' ? 'debootstrap is not installed (Debian: apt-get install debootstrap)' : `cannot run debootstrap: ${e.message}`, args);
  }
  if (run.status !== 0) {
    const log = `${run.stdout}\n${run.stderr}`.trim().split('\n').slice(-8).join('\n  ');
    throw new DebootstrapError(`debootstrap ${args.join(' ')} failed (exit ${run.status}; no network to ${DEBIAN_MIRROR}?):\n  ${log}`, args);
  }
}
