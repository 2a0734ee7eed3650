/** Where a bundle keeps things on the user's machine (XDG base directories). */
import os from 'node:os';
import path from 'node:path';

export function cacheHome(): string {
  return process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
}

export function dataHome(): string {
  return process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
}

/** A name safe to use as a directory: the app's manifest name, reduced to [A-Za-z0-9._-]. */
export function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'app';
}
