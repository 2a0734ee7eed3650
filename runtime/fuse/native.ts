/**
 * How fuse-native is loaded. The host's native directory (runtime/native/dirs.ts) also holds
 * fuse-native, for the engine on this machine only. fuse-native's prebuilt addon links against
 * `libfuse.so.2` but carries no rpath, so on a machine without libfuse2 it cannot load: the
 * build copies it next to the `libfuse.so` that fuse-native ships (renamed `libfuse.so.2`) and
 * sets the addon's rpath to `$ORIGIN`.
 */
import { createRequire, Module } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { nativeDir, NativeAddonError } from '../native/dirs.js';

/** Created on first use: in the single-executable bundle there is no import.meta.url. */
const moduleRequire = () => createRequire(import.meta.url);

export const FUSE_ADDON = 'fuse-native.node';
export const LIBFUSE = 'libfuse.so.2';

/** The subset of fuse-native's class that we use; typed here because the package has no types. */
export interface FuseNativeInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
export interface FuseNativeClass {
  new (mnt: string, ops: object, opts: object): FuseNativeInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
}

let fuseNative: FuseNativeClass | undefined;

/**
 * Loads fuse-native with its addon taken from nativeDir() instead of letting it search with
 * node-gyp-build (which would find an addon that cannot resolve libfuse.so.2).
 */
export function loadFuseNative(): FuseNativeClass {
  if (fuseNative) return fuseNative;
  const require = moduleRequire();
  const addonPath = path.join(nativeDir(), FUSE_ADDON);
  if (!existsSync(addonPath)) {
    throw new NativeAddonError(
      `FUSE addon not found at ${addonPath}. Run \`npm run build\` (it prepares the addon; needs the Debian package patchelf).`,
      addonPath,
    );
  }
  const gypBuildPath = require.resolve('node-gyp-build', { paths: [path.dirname(require.resolve('fuse-native'))] });
  const shim = new Module(gypBuildPath);
  shim.exports = () => require(addonPath);
  shim.loaded = true;
  const cache = require.cache as Record<string, Module | undefined>;
  const previous = cache[gypBuildPath];
  cache[gypBuildPath] = shim;
  try {
    fuseNative = require('fuse-native') as FuseNativeClass;
  } catch (err) {
    throw new NativeAddonError(`cannot load the FUSE addon ${addonPath}: ${(err as Error).message}`, addonPath);
  } finally {
    if (previous) cache[gypBuildPath] = previous;
    else delete cache[gypBuildPath];
  }
  return fuseNative;
}
