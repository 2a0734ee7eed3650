/**
 * Checks that a FUSE mount can work here before anything is created on disk, and makes both
 * mount helpers resolvable: libfuse 2 (fuse-native) runs `fusermount`, libfuse 3 (our addon)
 * runs `fusermount3`, and a machine may have only one of them.
 */
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, readlinkSync, statSync } from 'node:fs';
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
 * libfuse runs its helper (its fixed path, then PATH) to mount as a user: `fusermount` for
 * libfuse 2, `fusermount3` for libfuse 3, and the protocol between library and helper is the
 * same. Where only one of them exists, a link with the other name goes in a private directory
 * at the front of this process's PATH: `dir` (made 0700 if missing, e.g. a run's private
 * directory), else a fresh mkdtemp removed at exit. Never a fixed name in the shared temporary
 * directory, which another user could make first with a link of their choosing. Throws when
 * the link cannot be made; does nothing as root (libfuse mounts directly) or when both or
 * neither helper exist (checkFuse says what to install).
 */
export function provideFusermount(dir?: string): void {
  if (process.getuid?.() === 0) return;
  const fm2 = findOnPath('fusermount');
  const fm3 = findOnPath('fusermount3');
  if ((fm2 !== null) === (fm3 !== null)) return;
  const [name, target] = fm2 !== null ? ['fusermount3', fm2] : ['fusermount', fm3!];
  const linkDir = dir ?? privateTempDir();
  mkdirSync(linkDir, { recursive: true, mode: 0o700 });
  const link = path.join(linkDir, name);
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
  if (!parts.includes(linkDir)) process.env.PATH = [linkDir, ...parts].join(':');
}

let tempDir: string | null = null;

function privateTempDir(): string {
  if (tempDir === null) {
    const made = mkdtempSync(path.join(tmpdir(), 'overpack-fusermount-'));
    process.on('exit', () => rmSync(made, { recursive: true, force: true }));
    tempDir = made;
  }
  return tempDir;
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
  const found = findOnPath('fusermount3') ?? findOnPath('fusermount');
  if (found !== null) {
    try {
      provideFusermount();
      return null;
    } catch (err) {
      return { code: 'NO_FUSERMOUNT', message: `cannot provide a fusermount helper via ${found}: ${(err as Error).message}` };
    }
  }
  return {
    code: 'NO_FUSERMOUNT',
    message: `neither fusermount nor fusermount3 is installed; unprivileged FUSE mounts need one (Debian/Ubuntu: apt-get install fuse3). ${FALLBACK_HINT}`,
  };
}
