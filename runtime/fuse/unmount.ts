/**
 * Unmounting a FUSE filesystem without relying on a `fusermount` on PATH: fuse3's
 * `fusermount3` (setuid, works for users), then libfuse 2's `fusermount`, then `umount`
 * (root only). fuse-native's own unmount shells out to `fusermount -uz`, which a machine with
 * only fuse3 does not have.
 */
import { childProcess } from '../builtins.js';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

function run(cmd: string, args: string[]): Promise<{ ok: boolean; missing: boolean; stderr: string }> {
  return new Promise((resolve) => {
    childProcess().execFile(cmd, args, (err, _stdout, stderr) => {
      const missing = (err as NodeJS.ErrnoException | null)?.code === 'ENOENT';
      resolve({ ok: !err, missing, stderr: String(stderr).trim() });
    });
  });
}

/** This process's mounts (/proc/self/mountinfo, no I/O into any mount): mountpoints unescaped. */
export function mountTable(): Array<{ mountPoint: string; options: string[] }> {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      return { mountPoint: (f[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), options: (f[5] ?? '').split(',') };
    });
}

/** Whether `path` is a mountpoint right now. */
export function isMounted(path: string): boolean {
  return mountTable().some((m) => m.mountPoint === path);
}

/**
 * Whether the FUSE mount at `mp` has lost its server (it answers ENOTCONN). Asked from a child
 * process with a timeout: a live but hung server must not hang this one, and a probe that does
 * not answer in time means "alive but busy".
 */
export function isStaleMount(mp: string): Promise<boolean> {
  return new Promise((resolve) => {
    // A listing, not a stat: the kernel may answer a stat of the root from its attribute cache.
    childProcess().execFile('ls', ['-A', mp], { timeout: 3000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      resolve(err !== null && /not connected/i.test(String(stderr)));
    });
  });
}

/** Lazily detaches a mount without waiting on its server: safe at exit and for stale mounts. */
export function detachMount(mp: string): void {
  const attempts: Array<[string, string[]]> = [['fusermount3', ['-uz', mp]], ['fusermount', ['-uz', mp]], ['umount', ['-l', mp]]];
  for (const [cmd, args] of attempts) {
    if (childProcess().spawnSync(cmd, args, { stdio: 'ignore' }).status === 0 || !isMounted(mp)) break;
  }
}

export interface UnmountResult {
  ok: boolean;
  /** Why it failed: the last tool's message. */
  message: string;
}

/** Unmounts `path`; `lazy` detaches even when busy (processes inside then see ENOTCONN). */
export async function unmountPath(path: string, lazy: boolean): Promise<UnmountResult> {
  const attempts: Array<[string, string[]]> = [
    ['fusermount3', [lazy ? '-uz' : '-u', path]],
    ['fusermount', [lazy ? '-uz' : '-u', path]],
  ];
  if (process.getuid?.() === 0) attempts.push(['umount', lazy ? ['-l', path] : [path]]);
  let message = 'no unmount tool found (install fuse3 for fusermount3)';
  for (const [cmd, args] of attempts) {
    const r = await run(cmd, args);
    if (r.ok) return { ok: true, message: '' };
    if (!r.missing) message = r.stderr || `${cmd} failed`;
    if (!isMounted(path)) return { ok: true, message: '' };
  }
  return { ok: false, message };
}

/**
 * This process's descriptors open on /dev/fuse. libfuse 2 opens the device without
 * close-on-exec, so every child would inherit it and keep the connection alive after this
 * process dies: the mount would then hang instead of failing with ENOTCONN. Whoever spawns
 * long-lived children while serving a mount closes these in the child (see the launcher).
 */
export function fuseDeviceFds(): number[] {
  const out: number[] = [];
  let names: string[] = [];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === '/dev/fuse') out.push(Number(name));
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}
