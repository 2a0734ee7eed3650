/**
 * The native addons of the bundle this runtime runs from. A single executable cannot bundle an
 * addon: the launcher extracts them (launcher/addons.ts) and names their directory here; the
 * builder redirects each package's own addon loading to `bundledAddon` (see bundleRuntime in
 * builder/build.ts), and our addon's loader (addon.ts) asks here first.
 */
import path from 'node:path';

let dir: string | null = null;
const loaded = new Map<string, Record<string, unknown>>();

/** The directory the launcher extracted the bundle's natives to. */
export function useBundledAddons(extracted: string): void {
  dir = extracted;
}

/** Whether this process runs from a bundle whose natives were extracted. */
export function hasBundledAddons(): boolean {
  return dir !== null;
}

/** The bundle's addon `name`, loaded once (process.dlopen, the one way an executable loads one from disk). */
export function bundledAddon(name: string): Record<string, unknown> {
  if (dir === null) throw new Error(`the native addon ${name} is needed before the bundle's natives were extracted`);
  let m = loaded.get(name);
  if (!m) {
    const mod = { exports: {} as Record<string, unknown> };
    process.dlopen(mod, path.join(dir, name));
    m = mod.exports;
    loaded.set(name, m);
  }
  return m;
}
