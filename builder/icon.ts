/** The app's icon (manifest `desktop.icon`), checked at build time: a desktop must be able to show it. */
import fs from 'node:fs';
import { BuildError } from '../runtime/image/writer.js';
import { iconKind, type IconKind } from '../runtime/desktop/icon.js';

const MAX_ICON_BYTES = 4 << 20;

/** What the icon at `file` is; a BuildError naming `desktop.icon` and the problem otherwise. */
export function checkIcon(file: string): IconKind {
  const bad = (why: string): never => {
    throw new BuildError(file, 'icon', `desktop.icon: ${file} ${why}`);
  };
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return bad('does not exist in the app directory');
  }
  if (!st.isFile()) bad("is not a regular file (a symlink or a directory cannot be installed as an icon)");
  if (st.size > MAX_ICON_BYTES) bad(`is ${st.size} bytes; an icon must be at most ${MAX_ICON_BYTES} bytes`);
  const kind = iconKind(fs.readFileSync(file));
  if ('problem' in kind) return bad(kind.problem);
  return kind;
}
