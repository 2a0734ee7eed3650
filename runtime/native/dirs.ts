/**
 * Where the native files live: `dist/native/<target>/` holds, per target, what a bundle for it
 * ships (see `builder/native/target-natives.ts`); inside a bundle the launcher extracts them
 * and points OVERPACK_NATIVE_DIR at them.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Target } from './targets.js';
import { OverpackError } from '../errors/overpack-error.js';

/** The repository (or installed package) root: two levels above dist/runtime/native. */
export function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // here = <root>/dist/runtime/native (compiled) or <root>/runtime/native (sources)
  const up2 = path.resolve(here, '..', '..');
  return path.basename(up2) === 'dist' ? path.dirname(up2) : up2;
}

export function platformTag(): string {
  return `${process.platform}-${process.arch}`;
}

/** The prepared natives of one target (what a bundle for it ships). */
export function nativeDirFor(target: Target): string {
  return path.join(packageRoot(), 'dist', 'native', target);
}

/** Directory holding the prepared addons for this platform. */
export function nativeDir(): string {
  const fromEnv = process.env.OVERPACK_NATIVE_DIR;
  if (fromEnv) return fromEnv;
  return path.join(packageRoot(), 'dist', 'native', platformTag());
}

export class NativeAddonError extends OverpackError {
  constructor(message: string, readonly addonPath: string) {
    super('NO_ADDON', 'load-addon', addonPath, message);
  }
}
