import { OverpackError } from '../errors/overpack-error.js';

/** A launch that cannot go on, for a reason the user can act on, with the exit code that says which (EXIT). */
export class LaunchError extends OverpackError {
  constructor(message: string, readonly exitCode: number) {
    super('LAUNCH', 'launch', null, message);
  }
}
