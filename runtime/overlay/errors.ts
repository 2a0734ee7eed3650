/**
 * What library and CLI users see of the overlay as a whole: `OverlayError` names the operation,
 * the path and what to do. (Errors of single filesystem operations are `FsError`, in
 * runtime/vfs/errors.ts.)
 */
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
