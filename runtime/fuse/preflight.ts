/**
 * Checks that a FUSE mount can work here before anything is created on disk, and makes both
 * mount helpers resolvable: libfuse 2 (fuse-native) runs `fusermount`, libfuse 3 (our addon)
 * runs `fusermount3`, and a machine may have only one of them.
 */
import { accessSync, constants, existsSync, mkdtempSync, rmSync, symlinkSync, readlinkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export type FuseProblem = { code: 'NO_FUSE' | 'NO_FUSERMOUNT'; message: string };

export const FALLBACK_HINT =
  'Without FUSE, bundles can still run with --overpack-extract-and-run (or OVERPACK_EXTRACT_AND_RUN=1).';

function findOnPath(name: string): string | null {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/bin', '/usr/local/bin', '/sbin', '/usr/sbin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* keep looking */
    }
  }
  return null;
}

/**
 * libfuse runs its helper (its fixed path, then PATH) to mount as a user. When only the other
 * version's helper exists, a private directory with a link named `name` pointing to it is put
 * at the front of this process's PATH. The protocol between libfuse and the helper is the same.
 */
let helperDir: string | null = null;

function provideHelper(name: string, target: string): void {
  // A fresh private directory per process (mkdtemp, 0700): a fixed name in the shared temporary
  // directory could be made first by another user, with a link of their choosing.
  if (helperDir === null) {
    const made = mkdtempSync(path.join(tmpdir(), 'overpack-fusermount-'));
    process.on('exit', () => rmSync(made, { recursive: true, force: true }));
    helperDir = made;
  }
  const dir = helperDir;
  const link = path.join(dir, name);
  let current: string | null = null;
  try {
    current = readlinkSync(link);
  } catch {
    /* not there yet */
  }
  if (current !== target) {
    if (current !== null) throw new Error(`${link} points to ${current}, expected ${target}`);
    symlinkSync(target, link);
  }
  const parts = (process.env.PATH ?? '').split(':');
  if (!parts.includes(dir)) process.env.PATH = [dir, ...parts].join(':');
}

/** null when FUSE looks usable, else what is wrong and what to do. */
export function checkFuse(): FuseProblem | null {
  if (!existsSync('/dev/fuse')) {
    return {
      code: 'NO_FUSE',
      message: `/dev/fuse does not exist: the kernel's FUSE module is not loaded or this is a container without it (try: modprobe fuse, or run the container with --device /dev/fuse). ${FALLBACK_HINT}`,
    };
  }
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    const mode = (statSync('/dev/fuse').mode & 0o777).toString(8);
    return {
      code: 'NO_FUSE',
      message: `/dev/fuse is not readable and writable by this user (mode ${mode}); distributions normally make it 0666 (chmod 0666 /dev/fuse as root). ${FALLBACK_HINT}`,
    };
  }
  if (process.getuid?.() === 0) return null; // libfuse mounts directly as root
  const fm2 = findOnPath('fusermount');
  const fm3 = findOnPath('fusermount3');
  if (fm2 || fm3) {
    try {
      if (!fm2) provideHelper('fusermount', fm3!);
      if (!fm3) provideHelper('fusermount3', fm2!);
      return null;
    } catch (err) {
      return { code: 'NO_FUSERMOUNT', message: `cannot provide a fusermount helper via ${fm2 ?? fm3}: ${(err as Error).message}` };
    }
  }
  return {
    code: 'NO_FUSERMOUNT',
    message: `neither fusermount nor fusermount3 is installed; unprivileged FUSE mounts need one (Debian/Ubuntu: apt-get install fuse3). ${FALLBACK_HINT}`,
  };
}
