/**
 * The error a filesystem operation throws: a POSIX errno for one operation on one path. The
 * engine and the image throw it; a FUSE binding turns it (or any Node fs error) into the
 * negative errno of its reply.
 */
import { constants } from 'node:os';

export type Errno = keyof typeof constants.errno;

/** A POSIX error for one operation on one path (inside the mount). */
export class FsError extends Error {
  readonly errno: number;
  constructor(readonly code: Errno, readonly op: string, readonly path: string, detail?: string) {
    super(`${op} ${path}: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'FsError';
    this.errno = constants.errno[code];
  }
}

/** Turns any thrown value from a node fs call into an errno number FUSE understands. */
export function toErrno(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e.errno === 'number') return Math.abs(e.errno);
  if (e && typeof e.code === 'string' && e.code in constants.errno) return constants.errno[e.code as Errno];
  return constants.errno.EIO;
}
