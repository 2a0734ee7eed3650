/** Where a bundle keeps things on the user's machine; the XDG base directories are runtime/paths/xdg.ts. */
import fs from 'node:fs';
import path from 'node:path';
import { cacheHome } from '../paths/xdg.js';

export { cacheHome, dataHome } from '../paths/xdg.js';

/** A name safe to use as a directory: the app's manifest name, reduced to [A-Za-z0-9._-]. */
export function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'app';
}

/**
 * Creates `dir` (and missing parents) readable by this user only, and takes group and other
 * access away from it if it already exists and is ours: the app's data and our caches are
 * nobody else's business.
 */
export function privateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if (st.uid === process.getuid?.() && (st.mode & 0o077) !== 0) fs.chmodSync(dir, st.mode & 0o700);
}

/**
 * Where a bundle's mounts go, `<cache>/overpack/mnt`, made private and named as the kernel
 * names it: /proc/self/mountinfo holds the path with its symlinks resolved (a home reached
 * through a link), and launches find a served mount there by that name.
 */
export function mountRoot(): string {
  const dir = path.join(cacheHome(), 'overpack', 'mnt');
  privateDir(dir);
  return fs.realpathSync(dir);
}
