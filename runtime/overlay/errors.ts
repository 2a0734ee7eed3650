/**
 * Typed errors. `FsError` travels inside the engine and becomes a negative errno at the FUSE
 * boundary; `OverlayError` is what library and CLI users see: it names the operation, the path
 * and what to do.
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

export type OverlayErrorCode =
  | 'ALREADY_MOUNTED'
  | 'NOT_MOUNTED'
  | 'BAD_LOWER'
  | 'BAD_UPPER'
  | 'BAD_MOUNTPOINT'
  | 'MOUNTPOINT_BUSY'
  | 'NO_FUSE'
  | 'NO_FUSERMOUNT'
  | 'NO_ALLOW_OTHER'
  | 'MOUNT_FAILED'
  | 'UNMOUNT_FAILED'
  | 'FINALIZE_FAILED';

/** An error of the overlay as a whole (configuration, mount, unmount, finalize). */
export class OverlayError extends Error {
  constructor(
    readonly code: OverlayErrorCode,
    readonly op: string,
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'OverlayError';
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
