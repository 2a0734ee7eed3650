/**
 * What library and CLI users see of the overlay as a whole: `OverlayError` names the operation,
 * the path and what to do. (Errors of single filesystem operations are `FsError`, in
 * runtime/vfs/errors.ts.)
 */
import { OverpackError } from '../errors/overpack-error.js';
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
export class OverlayError extends OverpackError {
  declare readonly code: OverlayErrorCode;
  declare readonly path: string;
  constructor(code: OverlayErrorCode, op: string, path: string, message: string, options?: { cause?: unknown }) {
    super(code, op, path, message, options);
  }
}
