/**
 * OVERPACK_TRACE=1: launch timeline marks on stderr, one line each, from the runtime and from
 * the app's Node (node mode, see entry.cts), in absolute time so the two processes line up:
 *   overpack-trace <pid> <epoch ms> +<ms since this process started> <label>
 * Launch time is a figure we track; this is how its parts are measured. Off, a mark is one
 * comparison. Written with fs.writeSync: process.stderr would build a stream we do not need.
 */
import fs from 'node:fs';

const on = process.env.OVERPACK_TRACE === '1';

export function mark(label: string): void {
  if (!on) return;
  const now = performance.now();
  fs.writeSync(2, `overpack-trace ${process.pid} ${(performance.timeOrigin + now).toFixed(2)} +${now.toFixed(2)} ${label}\n`);
}
