/**
 * The app's process: started with the user's environment plus what the runtime sets, stdio
 * inherited, signals forwarded, and (through overpack-exec) dying with the runtime. Outside
 * the mount: a JS entrypoint runs on the bundle's Node, anything else through a shell.
 */
import fs from 'node:fs';
import path from 'node:path';
import { childProcess } from '../builtins.js';
import { EXEC_HELPER } from '../native/addon.js';
import { fuseDeviceFds } from '../fuse/unmount.js';
import { EXEC_SCRIPT } from './exec-script.js';
import { isJsEntrypoint } from './entrypoint.js';
import { LaunchError } from './launch-error.js';
import { isReservedEnv, type Manifest } from '../manifest/validate.js';
import { runtimeExe } from './self.js';
import { appDetached, forwardSignals } from './signals.js';
import { SERVE_BUILD_ENV, SERVE_LINGER_ENV, STARTED_SERVER_ENV } from './start-mount-server.js';
import { mark } from './trace.js';
import { EXIT } from '../errors/exit-codes.js';

/** The user's PATH as it was when we started (the FUSE preflight may put a private dir in front). */
export const USER_PATH = process.env.PATH;
/** Set by the runtime for its own children; never taken from the user's environment for the app. */
export const RUNTIME_PRIVATE_ENV = ['OVERPACK_NATIVE_DIR', 'OVERPACK_NODE_DISPATCH', 'OVERPACK_NODE_GATE', 'OVERPACK_APP_NODE_OPTIONS', SERVE_LINGER_ENV, SERVE_BUILD_ENV, STARTED_SERVER_ENV];

export type AppResult = { code: number | null; signal: NodeJS.Signals | null };

/**
 * The bundle's overpack-exec among its extracted natives, once this kernel is known to run it,
 * or null. Under user-mode emulation (an arm64 bundle under qemu-aarch64 without binfmt_misc)
 * the runtime itself runs but the kernel cannot exec another arm64 program: the app is then
 * started directly. Tried once per natives directory, remembered beside it.
 */
function execHelper(): string | null {
  const dir = process.env.OVERPACK_NATIVE_DIR;
  if (!dir) return null;
  const file = path.join(dir, EXEC_HELPER);
  const works = `${file}.runs-here`;
  if (fs.existsSync(works)) return file;
  if (!fs.existsSync(file)) return null;
  const probe = childProcess().spawnSync(file, [String(process.pid), '/bin/sh', '-c', 'exit 0'], { stdio: 'ignore', timeout: 5000 });
  if (probe.status !== 0) return null;
  fs.writeFileSync(works, '');
  return file;
}

/** Runs the app with stdio inherited and signals forwarded; resolves with its exit status. */
export function runApp(appDir: string, manifest: Manifest, userArgs: string[], bundle: string, binDir: string): Promise<AppResult> {
  const app = startApp(appDir, manifest, userArgs, bundle, binDir, false);
  app.go();
  return app.result;
}


/** What the runtime changes in the user's environment for its app, in order (appEnv). */
export interface EnvChanges {
  unset: readonly string[];
  set: Array<[string, string]>;
}

/**
 * The changes that do not depend on the launch: the runtime's private names taken out, the
 * manifest's variables (never a name the runtime owns: the validator refuses those, and they
 * are dropped here again), then what the runtime tells the app. `node`: the plain Node on the
 * app's PATH; `dispatch`: the runtime file a spawned Node app runs as node (see below). The
 * express relaunch applies the same changes (express-plan.ts).
 */
export function appEnvChanges(appDir: string, manifest: Manifest, bundle: string, node: string | undefined, dispatch: string): EnvChanges {
  const set: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(manifest.env ?? {})) if (!isReservedEnv(k)) set.push([k, v]);
  set.push(['APPDIR', appDir], ['OVERPACK_BUNDLE', bundle]);
  if (node !== undefined) set.push(['OVERPACK_NODE', node]);
  // Naming this runtime's file, not just "1": an app that launches another bundle must not turn
  // that one into node (one that shares this runtime through the loader is told apart by
  // OVERPACK_LOADED_FROM, see entry.cts).
  if (isJsEntrypoint(manifest)) set.push(['OVERPACK_NODE_DISPATCH', dispatch]);
  return { unset: RUNTIME_PRIVATE_ENV, set };
}

/**
 * The app's environment: the user's, changed as appEnvChanges says, then what comes from the
 * launch itself: ARGV0 (its argv[0]), OWD (its working directory) and PATH (the run's bin
 * directory in front of the user's PATH), set the same way by the loader's express relaunch
 * (runtime/loader/express.c).
 */
export function appEnv(appDir: string, manifest: Manifest, bundle: string, binDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const changes = appEnvChanges(appDir, manifest, bundle, process.env.OVERPACK_NODE, process.execPath);
  for (const k of changes.unset) delete env[k];
  for (const [k, v] of changes.set) env[k] = v;
  env.ARGV0 = process.env.OVERPACK_ARGV0 ?? process.argv0;
  env.OWD = process.cwd();
  env.PATH = `${binDir}:${USER_PATH ?? '/usr/bin:/bin'}`;
  // NODE_OPTIONS the user set is for the app's Node; this runtime ran without it (see main()).
  const appNodeOptions = process.env.OVERPACK_APP_NODE_OPTIONS;
  if (appNodeOptions !== undefined) env.NODE_OPTIONS = appNodeOptions;
  return env;
}

/** How a non-JS entrypoint is started: through a shell outside the mount (see exec-script.ts). */
export function shellCommand(entry: string, args: string[]): [string, string[]] {
  return ['/bin/sh', ['-c', EXEC_SCRIPT, entry, ...args]];
}

export interface AppRun {
  /** The app's exit status (rejects when it cannot be started). */
  result: Promise<AppResult>;
  /** The mount is ready: the app may run. */
  go(): void;
  /** The mount failed: an app started held exits without running anything. */
  cancel(): void;
}

/**
 * Starts the app. `held`: the mount is not ready yet. A .js app then gets its process at once,
 * held at a gate: the bundle's Node starts up (and loads NODE_EXTRA_CA_CERTS when set; what
 * each costs: bench/README, figures behind the code) while this process mounts, and reads one
 * byte from the gate (descriptor OVERPACK_NODE_GATE, see entry.cts) before it loads the app's
 * first file: "1" once go() is called, end of file if we cancel or die. Nothing of the app and
 * nothing inside the mount runs before go(). Any other app, or one whose Node has NODE_OPTIONS
 * (a --require would run before the gate), is spawned by go() as before.
 */
export function startApp(appDir: string, manifest: Manifest, userArgs: string[], bundle: string, binDir: string, held: boolean): AppRun {
  const entry = path.join(appDir, manifest.entrypoint);
  const args = [...(manifest.args ?? []), ...userArgs];
  const isJs = isJsEntrypoint(manifest);
  const env = appEnv(appDir, manifest, bundle, binDir);
  // A JS entrypoint runs on this bundle as node, which lives outside the mount: spawned
  // directly. Anything else goes through a shell outside the mount (see exec-script.ts).
  const [direct, directArgv] = isJs ? [runtimeExe(), [entry, ...args]] : shellCommand(entry, args);
  // Through overpack-exec (see overpack_exec.c), the app dies with this process even when it
  // is killed with SIGKILL; bundles from before it shipped start the app directly.
  const helper = execHelper();
  const [program, argv] = helper ? [helper, [String(process.pid), direct, ...directArgv]] : [direct, directArgv];
  // The app must not inherit /dev/fuse (libfuse opens it without close-on-exec): holding it, an
  // app would keep a dead runtime's mount hanging instead of failing. Giving the child a pipe at
  // those descriptor numbers replaces them; our ends are closed at once.
  const gated = held && isJs && env.NODE_OPTIONS === undefined;
  let settle!: { resolve: (r: AppResult) => void; reject: (e: unknown) => void };
  const result = new Promise<AppResult>((resolve, reject) => (settle = { resolve, reject }));
  result.catch(() => undefined); // a held app that fails to start is reported when awaited, not as unhandled
  let gate: (NodeJS.WritableStream & { destroy(): void }) | null = null;
  let heldChild: { kill(sig: NodeJS.Signals): boolean } | null = null;
  const launch = () => {
    const fuseFds = fuseDeviceFds();
    const stdio: Array<'inherit' | 'ignore' | 'pipe'> = ['inherit', 'inherit', 'inherit'];
    for (let fd = 3; fd <= Math.max(2, ...fuseFds); fd++) stdio.push(fuseFds.includes(fd) ? 'pipe' : 'ignore');
    if (gated) {
      env.OVERPACK_NODE_GATE = String(stdio.length);
      stdio.push('pipe');
    }
    const detached = appDetached();
    const child = childProcess().spawn(program, argv, { stdio, env, cwd: process.cwd(), detached });
    mark(gated ? 'runtime: app spawned, held' : 'runtime: app spawned');
    for (const fd of fuseFds) (child.stdio[fd] as NodeJS.ReadableStream & { destroy(): void } | null)?.destroy();
    if (gated) {
      heldChild = child;
      gate = child.stdio[stdio.length - 1] as unknown as NodeJS.WritableStream & { destroy(): void };
      gate.on('error', () => undefined); // the app died before go(): its exit status tells
    }
    const stopForwarding = forwardSignals(child, detached);
    child.on('error', (err) => {
      stopForwarding();
      settle.reject(new LaunchError(`cannot start ${manifest.entrypoint}: ${err.message}`, EXIT.cannotExecute));
    });
    child.on('exit', (code, signal) => {
      stopForwarding();
      settle.resolve({ code, signal });
    });
  };
  if (gated) launch();
  let went = false;
  return {
    result,
    go: () => {
      if (went) return;
      went = true;
      if (gate) gate.end('1');
      else launch();
    },
    cancel: () => {
      // End of file alone would do; the kill spares the user a Node that starts up for nothing.
      if (!went && gate) {
        gate.destroy();
        heldChild?.kill('SIGKILL');
      }
      went = true;
    },
  };
}
