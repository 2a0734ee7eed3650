/**
 * The upper's on-disk format (AUFS-style names, stable across versions: a preserved upper from
 * one release must mount in the next):
 * - `.wh.<name>`: an empty regular file; hides `<name>` of the lower in that directory;
 * - `.wh..wh..opq`: a file inside an upper directory; hides every lower entry beneath it;
 * - `.wh..wh..work/`: the engine's scratch directory at the upper's root, where copy-ups are
 *   assembled before being renamed into place; emptied at every mount, never committed.
 * Every name starting with `.wh.` is reserved: never shown through the mount, never creatable.
 */
export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
export const WORK_DIR = '.wh..wh..work';

export function isReserved(name: string): boolean {
  return name.startsWith(WHITEOUT_PREFIX);
}

export function whiteoutName(name: string): string {
  return WHITEOUT_PREFIX + name;
}

/** The hidden name for a whiteout file, or null if `name` is not one (markers are not whiteouts). */
export function whitedOutName(name: string): string | null {
  if (!name.startsWith(WHITEOUT_PREFIX) || name.startsWith('.wh..wh.')) return null;
  return name.slice(WHITEOUT_PREFIX.length);
}
