/**
 * The glibc symbol versions an ELF file needs (its `.gnu.version_r` section, as `readelf -V`
 * prints it), and the check that none is above the floor the bundles promise. A file that
 * needs GLIBC_2.34 does not load where glibc is 2.31, whatever it calls.
 */
import { spawnSync } from 'node:child_process';
import { OverpackError } from '../../runtime/errors/overpack-error.js';

/** Official Node builds (18 to 26) need glibc 2.28: the natives must not need more. */
export const GLIBC_FLOOR = '2.28';

export class ElfReadError extends OverpackError {
  constructor(message: string, readonly file: string) {
    super('ELF', 'read-elf', file, message);
  }
}

/** Every `GLIBC_*` version the file needs (`GLIBC_2.14`, `GLIBC_PRIVATE`, ...), sorted, unique. */
export function glibcNeeds(file: string): string[] {
  const run = spawnSync('readelf', ['-V', '--wide', file], { encoding: 'utf8' });
  if (run.error) throw new ElfReadError(`cannot run readelf (Debian: apt-get install binutils): ${run.error.message}`, file);
  if (run.status !== 0 || /^readelf: Error/m.test(run.stderr)) throw new ElfReadError(`readelf -V ${file} failed: ${run.stderr.trim()}`, file);
  const needs = new Set<string>();
  let inNeeds = false;
  for (const line of run.stdout.split('\n')) {
    if (/^Version \w+ section/.test(line)) inNeeds = line.includes("'.gnu.version_r'");
    else if (inNeeds) {
      const m = /Name: (GLIBC_\S+)/.exec(line);
      if (m) needs.add(m[1]!);
    }
  }
  return [...needs].sort(compareGlibcNames);
}

/** `GLIBC_2.3.4` -> [2, 3, 4]; null for names that are no release (`GLIBC_PRIVATE`, `GLIBC_ABI_DT_RELR`). */
export function glibcRelease(name: string): number[] | null {
  const m = /^GLIBC_(\d+(?:\.\d+)*)$/.exec(name);
  return m ? m[1]!.split('.').map(Number) : null;
}

function compareReleases(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function compareGlibcNames(a: string, b: string): number {
  const ra = glibcRelease(a);
  const rb = glibcRelease(b);
  if (ra && rb) return compareReleases(ra, rb);
  if (ra) return -1;
  if (rb) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface FloorViolation {
  file: string;
  /** The version above the floor (or one that no glibc release provides, such as GLIBC_PRIVATE). */
  version: string;
}

/** The needs of `file` that a glibc of release `floor` could not satisfy. */
export function glibcFloorViolations(file: string, floor: string = GLIBC_FLOOR): FloorViolation[] {
  const limit = glibcRelease(`GLIBC_${floor}`);
  if (!limit) throw new RangeError(`${floor} is not a glibc release`);
  return glibcNeeds(file)
    .filter((name) => {
      const release = glibcRelease(name);
      return release === null || compareReleases(release, limit) > 0;
    })
    .map((version) => ({ file, version }));
}
