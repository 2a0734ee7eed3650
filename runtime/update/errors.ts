/**
 * What can stop an update, each with its exit code (the same for `./app.run --overpack-update`
 * and `overpack update`): sysexits(3) numbers where one fits, so scripts can tell a network
 * problem from a refused key. 70 stays for our own bugs (an error that is not an UpdateError).
 */
export const UPDATE_EXIT = {
  /** `--check`: no update (this bundle is the latest). Not an error: the script's "no". */
  NONE: 1,
  USAGE: 2,
  /** The download does not check out (signature, index, a file's BLAKE3, the executable), or the remote is no bundle. */
  DAMAGED: 65,
  /** No network: the name does not resolve, the host cannot be reached or refuses the connection. */
  NO_NETWORK: 68,
  /** The server answered with an error (404, 500, ...) or a file given with --from does not exist. */
  UNAVAILABLE: 69,
  /** The bundle's directory cannot be written (the new bundle is assembled beside the old one). */
  CANT_WRITE: 73,
  /** Interrupted (connection cut, timeout, the server changed the file): run again, it resumes. */
  INTERRUPTED: 75,
  /** Signed by another key (or not signed): refused unless the new key is named explicitly. */
  REFUSED_KEY: 77,
  /** An older version than this bundle's (a replayed old bundle): refused unless allowed. */
  DOWNGRADE: 77,
} as const;

export type UpdateErrorCode = keyof typeof UPDATE_EXIT;

export class UpdateError extends Error {
  readonly exitCode: number;
  /**
   * @param code what went wrong (UPDATE_EXIT's keys)
   * @param op what was being done: 'fetch', 'read-remote', 'verify', 'replace', ...
   * @param where the URL or path involved
   */
  constructor(readonly code: UpdateErrorCode, readonly op: string, readonly where: string, message: string) {
    super(message);
    this.name = 'UpdateError';
    this.exitCode = UPDATE_EXIT[code];
  }
}
