/** The runtime's own messages on stderr: one line each, prefixed, dimmed on a terminal unless NO_COLOR. */
// The environment as the launch found it (a launch that becomes its app replaces it, in-process.ts).
const colorWanted = !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
// Asked at the first message, not at start-up: process.stderr builds its stream then (with
// net for a pipe, tty for a terminal), which a launch that says nothing never needs.
let useColor: boolean | undefined;

export function say(msg: string): void {
  useColor ??= colorWanted && process.stderr.isTTY === true;
  process.stderr.write(`${useColor ? '\x1b[2moverpack:\x1b[0m' : 'overpack:'} ${msg}\n`);
}
