/** Messages for people: on stderr, colour only on a TTY and never with NO_COLOR. */
const useColor = process.stderr.isTTY === true && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';

function paint(code: string, text: string): string {
  return useColor ? `\x1b[${code}m${text}\x1b[0m` : text;
}

export function say(message: string): void {
  process.stderr.write(`${paint('2', 'overpack:')} ${message}\n`);
}

export function warn(message: string): void {
  process.stderr.write(`${paint('33', 'overpack: warning:')} ${message}\n`);
}

export class CliExit extends Error {
  constructor(readonly exitCode: number, message: string) {
    super(message);
  }
}

/** Stops the command with a message on stderr and the given exit code. */
export function fail(message: string, exitCode = 1): never {
  throw new CliExit(exitCode, message);
}

export function printError(message: string): void {
  process.stderr.write(`${paint('31', 'overpack: error:')} ${message}\n`);
}
