/** Messages for people: on stderr, colour only on a TTY and never with NO_COLOR. */
import { EXIT } from '../runtime/errors/exit-codes.js';
import { OverpackError } from '../runtime/errors/overpack-error.js';

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

/** A command that stops with a message and an exit code (EXIT). */
export class CliExit extends OverpackError {
  constructor(readonly exitCode: number, message: string) {
    super('CLI', 'command', null, message);
  }
}

/** Stops the command with a message on stderr and the given exit code. */
export function fail(message: string, exitCode: number = EXIT.failed): never {
  throw new CliExit(exitCode, message);
}

export function printError(message: string): void {
  process.stderr.write(`${paint('31', 'overpack: error:')} ${message}\n`);
}
