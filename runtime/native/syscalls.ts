/**
 * System calls the engine needs and Node does not offer, from our addon: mknod (fifos, sockets,
 * devices), fallocate, lseek with SEEK_DATA/SEEK_HOLE, and utimensat with exact nanoseconds.
 * Failures throw Node-style errors (`code`, `errno`, `syscall`, `path`), like `fs` calls do.
 * Where the addon cannot be loaded (a fuse-native-only installation), mknod, fallocate and
 * seek answer ENOSYS and utimens falls back to Node's, which keeps about a microsecond.
 */
import fs from 'node:fs';
import { constants as osc } from 'node:os';
import { tryAddon } from './addon.js';

/** A time to set: nanoseconds since the epoch, the current time, or "leave unchanged". */
export type TimeSpec = bigint | 'now' | 'omit';

const NS = 1_000_000_000n;
const errnoNames = new Map(Object.entries(osc.errno).map(([name, n]) => [n, name]));

export function errnoError(errno: number, syscall: string, path?: string): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`${syscall}${path ? ` ${path}` : ''}: ${code}`), { code, errno: -errno, syscall, path });
}

function check(rc: number, syscall: string, path?: string): void {
  if (rc !== 0) throw errnoError(rc, syscall, path);
}

export function mknod(path: string, mode: number, rdev: number): void {
  const a = tryAddon();
  check(a ? a.mknod(path, mode, rdev) : osc.errno.ENOSYS, 'mknod', path);
}

export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  const a = tryAddon();
  check(a ? a.fallocate(fd, mode, offset, length) : osc.errno.ENOSYS, 'fallocate');
}

export const SEEK_DATA = 3;

export function seek(fd: number, offset: number, whence: number): number {
  const a = tryAddon();
  const r = a ? a.seek(fd, offset, whence) : -osc.errno.ENOSYS;
  if (r < 0) throw errnoError(-r, 'lseek');
  return r;
}

/**
 * Gives `signal` its default action back (Node ignores SIGPIPE from the start, and Node has no
 * way to undo that), so that raising it ends the process. False where the addon is missing.
 */
export function restoreDefaultSignal(signal: NodeJS.Signals): boolean {
  const a = tryAddon();
  return a !== null && typeof a.defaultSignal === 'function' && a.defaultSignal(osc.signals[signal]) === 0;
}

/** Sets the times of `path` (never following a final symlink), exact to the nanosecond. */
export function utimens(path: string, atime: TimeSpec, mtime: TimeSpec): void {
  const a = tryAddon();
  if (a && typeof a.utimens === 'function') {
    const part = (t: TimeSpec): [number, number] =>
      t === 'now' ? [0, a.UTIME_NOW] : t === 'omit' ? [0, a.UTIME_OMIT] : [Number(t / NS), Number(t % NS)];
    check(a.utimens(path, ...part(atime), ...part(mtime)), 'utimensat', path);
    return;
  }
  // Node's lutimes takes seconds as one double; "omit" is the current value.
  const st = fs.lstatSync(path, { bigint: true });
  const seconds = (t: TimeSpec, current: bigint): number | Date =>
    t === 'now' ? new Date() : Number(t === 'omit' ? current : t) / 1e9;
  fs.lutimesSync(path, seconds(atime, st.atimeNs), seconds(mtime, st.mtimeNs));
}
