/**
 * The error a filesystem operation throws: a POSIX errno for one operation on one path. The
 * engine and the image throw it; a FUSE binding turns it (or any Node fs error) into the
 * negative errno of its reply.
 */
import { constants } from 'node:os';
import { OverpackError } from '../errors/overpack-error.js';

export type Errno = keyof typeof constants.errno;

/** A POSIX error for one operation on one path (inside the mount). */
export class FsError extends OverpackError {
  declare readonly code: Errno;
  declare readonly path: string;
  readonly errno: number;
  constructor(code: Errno, op: string, path: string, detail?: string) {
    super(code, op, path, `${op} ${path}: ${code}${detail ? ` (${detail})` : ''}`);
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
