/**
 * Signals for a wrapped program: it must receive each signal once, as it would if it ran
 * directly.
 *
 * - On a terminal, with this process in the terminal's foreground process group, the app
 *   shares our group: the terminal's own signals (Ctrl-C's SIGINT, Ctrl-\'s SIGQUIT, SIGWINCH)
 *   reach it directly, so those are not forwarded; the rest are (kill of our pid).
 * - With no terminal on stdin, stdout or stderr (services, pipelines in CI), the app runs in a
 *   session of its own: a signal to our whole group (`kill -TERM -PGID`, a supervisor) reaches
 *   only us, and we forward it once.
 * - On a terminal but in the background, the app shares our group (it must, to use the
 *   terminal) and everything is forwarded; a signal to the whole group then reaches it twice.
 * Whether we are in the foreground is read when the signal arrives (a job can be moved with
 * `fg`/`bg` meanwhile), from /proc/self/stat.
 */
import { procStatFields } from './proc-stat.js';
import { tty } from '../builtins.js';

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];
/** What a terminal sends to its whole foreground process group. */
const FROM_TERMINAL = new Set<NodeJS.Signals>(['SIGINT', 'SIGQUIT', 'SIGWINCH']);

function hasTerminal(): boolean {
  return [0, 1, 2].some((fd) => tty().isatty(fd));
}

/** Whether this process is in its terminal's foreground process group (fields 5 and 8 of stat). */
function inForeground(): boolean {
  const f = procStatFields('self');
  return f !== null && f[2] === f[5] && Number(f[5]) > 0;
}

/** Spawn option for the app (or an inner runtime): a session of its own when there is no terminal. */
export function appDetached(): boolean {
  return !hasTerminal();
}

/** Forwards our signals to `child` as described above; returns a function that stops it. */
export function forwardSignals(child: { kill(sig: NodeJS.Signals): boolean }, detached: boolean): () => void {
  const handlers = FORWARDED.map((sig) => {
    const h = () => {
      if (!detached && FROM_TERMINAL.has(sig) && inForeground()) return; // it has it already
      child.kill(sig);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return () => {
    for (const [sig, h] of handlers) process.off(sig, h);
  };
}
