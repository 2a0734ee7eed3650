/**
 * The one base of overpack's errors: what went wrong (`code`, for programs: the exit code
 * table, tests), in which operation (`op`), on which path (the bundle, a file, a mountpoint;
 * null when there is none). The message is for people and says what to do. Each layer keeps
 * its own subclass with its own codes; all of them can be handled as one.
 */
export class OverpackError extends Error {
  constructor(
    readonly code: string,
    readonly op: string,
    readonly path: string | null,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}
