/** The runtime's own messages on stderr: one line each, prefixed, dimmed on a terminal unless NO_COLOR. */
const useColor = process.stderr.isTTY === true && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';

export function say(msg: string): void {
  process.stderr.write(`${useColor ? '\x1b[2moverpack:\x1b[0m' : 'overpack:'} ${msg}\n`);
}
