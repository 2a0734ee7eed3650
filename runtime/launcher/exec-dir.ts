/**
 * Where the runtime puts files it must load or execute (the native addons, the plain `node`):
 * under `$XDG_CACHE_HOME/overpack/`, unless that lies on a filesystem mounted `noexec` (some
 * hardened homes, a cache on a removable disk), where the dynamic loader refuses to map them
 * ("failed to map segment from shared object") and exec fails. Then the first of the data
 * directory and the temporary directory that allows executables is used instead.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dataHome, overpackCache } from '../paths/xdg.js';
import { privateDir } from './paths.js';
import { mountTable } from '../fuse/unmount.js';
import { OverpackError } from '../errors/overpack-error.js';

/** The mount options of the filesystem holding `p` (the longest mountpoint prefix), from mountinfo. */
function mountOptions(p: string): string[] {
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch {
    return mountOptions(path.dirname(p)); // not made yet: its parent decides
  }
  let best = '';
  let options: string[] = [];
  for (const m of mountTable()) {
    const mp = m.mountPoint;
    if ((real === mp || real.startsWith(mp.endsWith('/') ? mp : `${mp}/`)) && mp.length >= best.length) {
      best = mp;
      options = m.options;
    }
  }
  return options;
}

export function isNoexec(p: string): boolean {
  try {
    return mountOptions(p).includes('noexec');
  } catch {
    return false;
  }
}

export class NoExecError extends OverpackError {
  constructor(readonly tried: string[]) {
    super(
      'NOEXEC',
      'place-natives',
      tried[0] ?? null,
      `every place this bundle can put its native files is on a filesystem mounted noexec (${tried.join(', ')}), so they cannot be loaded; ` +
        'set XDG_CACHE_HOME to a directory on a filesystem that allows executables',
    );
  }
}

/**
 * A directory someone else made (in a shared temporary directory) could hold planted files
 * that we would load: only one of ours, or none yet, will do.
 */
function ownedOrAbsent(dir: string): boolean {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false });
  return !st || (st.isDirectory() && st.uid === process.getuid?.());
}

let chosen: string | undefined;

/** The directory (…/overpack) for files to load or execute; throws NoExecError when none works. */
export function execCacheRoot(): string {
  if (chosen) return chosen;
  const candidates = [overpackCache(), path.join(dataHome(), 'overpack', 'exec-cache'), path.join(os.tmpdir(), `overpack-exec-${process.getuid?.() ?? 'user'}`)];
  const usable = candidates.find((dir) => ownedOrAbsent(dir) && !isNoexec(dir));
  if (!usable) throw new NoExecError(candidates);
  privateDir(usable);
  chosen = usable;
  return usable;
}
