/** A launch that cannot go on, for a reason the user can act on, with the exit code that says which. */
export class LaunchError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
    this.name = 'LaunchError';
  }
}
