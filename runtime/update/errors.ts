/**
 * What can stop an update, each with its exit code (the same for `./app.run --overpack-update`
 * and `overpack update`; the numbers are EXIT's, sysexits(3) where one fits), so scripts can
 * tell a network problem from a refused key. 70 stays for our own bugs (an error that is not an UpdateError).
 */
import { EXIT } from '../errors/exit-codes.js';
import { OverpackError } from '../errors/overpack-error.js';

export const UPDATE_EXIT = {
  /** `--check`: no update (this bundle is the latest). Not an error: the script's "no". */
  NONE: EXIT.failed,
  USAGE: EXIT.usage,
  /** The download does not check out (signature, index, a file's BLAKE3, the executable), or the remote is no bundle. */
  DAMAGED: EXIT.dataError,
  /** No network: the name does not resolve, the host cannot be reached or refuses the connection. */
  NO_NETWORK: EXIT.noNetwork,
  /** The server answered with an error (404, 500, ...) or a file given with --from does not exist. */
  UNAVAILABLE: EXIT.serviceUnavailable,
  /** The bundle's directory cannot be written (the new bundle is assembled beside the old one). */
  CANT_WRITE: EXIT.cannotCreate,
  /** Interrupted (connection cut, timeout, the server changed the file): run again, it resumes. */
  INTERRUPTED: EXIT.tempFail,
  /** Signed by another key (or not signed): refused unless the new key is named explicitly. */
  REFUSED_KEY: EXIT.refused,
  /** An older version than this bundle's (a replayed old bundle): refused unless allowed. */
  DOWNGRADE: EXIT.refused,
} as const;

export type UpdateErrorCode = keyof typeof UPDATE_EXIT;

export class UpdateError extends OverpackError {
  declare readonly code: UpdateErrorCode;
  readonly exitCode: number;
  /**
   * @param code what went wrong (UPDATE_EXIT's keys)
   * @param op what was being done: 'fetch', 'read-remote', 'verify', 'replace', ...
   * @param where the URL or path involved
   */
  constructor(code: UpdateErrorCode, op: string, readonly where: string, message: string) {
    super(code, op, where, message);
    this.exitCode = UPDATE_EXIT[code];
  }
}
