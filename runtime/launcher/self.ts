/**
 * Which bundle this runtime serves, and which file this runtime is. A bundle stored raw is
 * both: the runtime executable with the image after it. A bundle whose runtime is compressed
 * starts with the loader (runtime/loader/overpack_loader.c), which runs the runtime from the
 * user's cache (or from memory) and names the bundle in OVERPACK_LOADED_FROM. The variable is
 * taken out of the environment here, before anything is started: the app and its children
 * must not inherit it (a runtime started by them would take another bundle's image for its own).
 */
import fs from 'node:fs';

const loadedFrom = process.env.OVERPACK_LOADED_FROM;
delete process.env.OVERPACK_LOADED_FROM;

/** Whether this runtime was started by a bundle's loader (its runtime is stored compressed). */
export function loadedByLoader(): boolean {
  return loadedFrom !== undefined && loadedFrom !== '';
}

/** The bundle file: where the image is read from. */
export const BUNDLE: string = loadedFrom || process.execPath;

/**
 * A path that starts this runtime again: its file, or /proc/<our pid>/exe when it runs from a
 * memfd (whose name, "/memfd:… (deleted)", is no path). Not /proc/self/exe: that would name
 * whichever program makes the exec (overpack-exec, for the app).
 */
export function runtimeExe(): string {
  return fs.existsSync(process.execPath) ? process.execPath : `/proc/${process.pid}/exe`;
}

/** The environment for starting this same launch again (the NODE_OPTIONS respawn). */
export function relaunchEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return loadedFrom ? { ...env, OVERPACK_LOADED_FROM: loadedFrom } : env;
}
