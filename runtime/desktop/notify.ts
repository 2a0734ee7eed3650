/**
 * A runtime error where nobody reads stderr: a bundle double-clicked in a file manager has no
 * terminal. Every error is appended, with a time stamp, to `$XDG_STATE_HOME/overpack/<app>.log`
 * (default `~/.local/state`); when stderr is not a terminal and a graphical session is there
 * (DISPLAY or WAYLAND_DISPLAY), it is also shown: a desktop notification through `notify-send`
 * or `gdbus` (org.freedesktop.Notifications on the session bus), else a dialog (`zenity`,
 * `kdialog`) started without waiting for it. Nothing here can hang the exit: each tool runs with
 * a timeout or detached, and a missing tool is skipped.
 */
import fs from 'node:fs';
import path from 'node:path';
import { childProcess } from '../builtins.js';
import { stateHome } from '../paths/xdg.js';

const TOOL_TIMEOUT_MS = 3000;

/** The log a desktop user is pointed at: one per app. */
export function errorLogFile(app: string): string {
  return path.join(stateHome(), 'overpack', `${app}.log`);
}

function log(app: string, message: string): string | null {
  const file = errorLogFile(app);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.appendFileSync(file, `${new Date().toISOString()} ${message.replace(/\n/g, '\n  ')}\n`, { mode: 0o600 });
    return file;
  } catch {
    return null; // a read-only home: stderr is all there is
  }
}

/** Whether `tool` answered within its time and succeeded. */
function ran(tool: string, args: string[]): boolean {
  const r = childProcess().spawnSync(tool, args, { stdio: 'ignore', timeout: TOOL_TIMEOUT_MS });
  return !r.error && r.status === 0;
}

function show(title: string, body: string): void {
  if (ran('notify-send', ['--app-name=overpack', '--urgency=critical', title, body])) return;
  // The same notification straight over the session bus (glib's gdbus is on most desktops).
  // GVariant text: a quoted string with C-style escapes (a raw newline would not parse).
  const gvariant = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n').replace(/\t/g, '\\t')}'`;
  const notify = ['call', '--session', '--dest', 'org.freedesktop.Notifications', '--object-path', '/org/freedesktop/Notifications', '--method', 'org.freedesktop.Notifications.Notify'];
  if (ran('gdbus', [...notify, gvariant('overpack'), 'uint32 0', "''", gvariant(title), gvariant(body), '@as []', '@a{sv} {}', 'int32 -1'])) return;
  // zenity reads --text as Pango markup: a message with a '<' or '&' in it (a path, `<pub.pem>`)
  // would not parse, and the dialog would say only "An error has occurred.". --no-markup shows it as it is.
  for (const [tool, args] of [['zenity', ['--error', '--no-markup', '--title', title, '--text', body]], ['kdialog', ['--title', title, '--error', body]]] as const) {
    try {
      // A dialog waits for its user: never for us.
      const p = childProcess().spawn(tool, args, { stdio: 'ignore', detached: true });
      p.on('error', () => undefined);
      p.unref();
      if (p.pid !== undefined) return;
    } catch {
      /* not installed */
    }
  }
}

/** Records a runtime error of `app`, and shows it to a desktop user who has no terminal. */
export function reportError(app: string, message: string): void {
  const file = log(app, message);
  const graphical = Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
  if (process.stderr.isTTY || !graphical) return;
  show(`${app} could not start`, `${message}${file ? `\n\nDetails: ${file}` : ''}`);
}
