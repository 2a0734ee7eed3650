/**
 * A Node app run in the launch's own process. Where another process serves the mount (a
 * lingering mount server, or a launch already serving this build), this process has nothing
 * left to do once the app may run: instead of starting the bundle's Node a second time for the
 * app, it becomes the app. It sets the app's environment, argv and execPath as node mode does
 * for a spawned app (entry.cts) and runs the entrypoint as Node's main module; from then on the
 * app's exit status, signals, stdio and pid are this process's own, as when it runs directly.
 *
 * Not where this process serves the mount itself (it must never wait on its own mount), and
 * not where the app's Node must be set up differently from this one before any JS runs:
 * NODE_OPTIONS for the app, or a manifest environment variable Node or its libraries read at
 * start-up (NODE_PATH, UV_THREADPOOL_SIZE, the locale, OpenSSL's).
 */
import nodeModule from 'node:module';
import path from 'node:path';
import { appEnv } from './app-process.js';
import { isJsEntrypoint } from './entrypoint.js';
import type { Manifest } from '../manifest/schema.js';
import { mark } from './trace.js';

/** Set to 1, a Node app always gets a process of its own (as with the linger at 0). */
export const SEPARATE_APP_PROCESS_ENV = 'OVERPACK_SEPARATE_APP_PROCESS';

/** Environment variables read when a Node process starts, not when the app reads them. */
const READ_AT_START = /^(NODE_|UV_|OPENSSL_|SSL_CERT_|LC_|LANG$|LANGUAGE$)/;

/** Whether this launch may become its app (see above). */
export function runsInProcess(manifest: Manifest): boolean {
  if (!isJsEntrypoint(manifest)) return false;
  if (process.env[SEPARATE_APP_PROCESS_ENV] === '1') return false;
  if (process.env.OVERPACK_APP_NODE_OPTIONS !== undefined) return false;
  return !Object.keys(manifest.env ?? {}).some((k) => READ_AT_START.test(k));
}

/**
 * Turns this process into the app, in `appDir` (the mount another process serves). `atExit`
 * runs when the app's process exits (leaving the mount, removing the run directory); a process
 * killed by a signal leaves them for the next launch, which cleans up after dead pids.
 */
export function becomeApp(appDir: string, manifest: Manifest, userArgs: string[], bundle: string, binDir: string, atExit: () => void): void {
  const env = appEnv(appDir, manifest, bundle, binDir);
  for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k];
  Object.assign(process.env, env);
  // As in node mode: fork() and spawn(process.execPath) start the bundle's plain Node.
  const plain = process.env.OVERPACK_NODE;
  if (plain) process.execPath = plain;
  process.argv = [process.execPath, path.join(appDir, manifest.entrypoint), ...(manifest.args ?? []), ...userArgs];
  process.once('exit', atExit);
  mark('runtime: the app runs in this process');
  process.once('exit', () => mark('runtime: the app exited'));
  // On a turn of its own, outside the launch's promise chain: what the app throws is the app's
  // uncaught exception (Node's message, exit status 1), not a failure of the launch.
  setImmediate(() => (nodeModule.Module as unknown as { runMain: () => void }).runMain());
}
