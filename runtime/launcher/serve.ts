/**
 * Where a launch's app runs: in a mount this launch serves itself (a discarded run,
 * `--overpack-mount`, a linger of 0), in the mount of a launch already serving this build, or
 * in the mount of a mount server that lingers after the app (mount-server.ts), started when
 * none runs. Each resolves with the app's exit status once its mount needs nothing more of us.
 */
import fs from 'node:fs';
import path from 'node:path';
import { crypto } from '../builtins.js';
import type { ImageLayer } from '../image/image-layer.js';
import { runApp, startApp, type AppResult } from './app-process.js';
import { becomeApp, runsInProcess } from './in-process.js';
import { acquireOrJoin, InstanceError, type Instance, type JoinOptions } from './instance.js';
import { LaunchError } from './launch-error.js';
import { LINGER_SECONDS, type Manifest } from '../manifest/schema.js';
import type { MountRequest } from './mount.js';
import { say } from './say.js';
import { awaitStartedServer, dropStartedServer, startMountServer } from './start-mount-server.js';
import { mark } from './trace.js';
import { EXIT } from '../errors/exit-codes.js';

/** What every way of running needs of the launch. */
export interface Launch {
  manifest: Manifest;
  appArgs: string[];
  bundle: string;
  binDir: string;
  /** --overpack-mount: serve (or show) the mount until a signal instead of running the app. */
  mount: boolean;
  /** Undone when the launch ends, last first. */
  cleanup: Array<() => void>;
}

/** The app runs in this process now (in-process.ts): nothing is left for the launch to wait for. */
export const HANDED_OVER = 'handed over';
export type Outcome = AppResult | typeof HANDED_OVER;

type Server = Extract<Instance, { role: 'server' }>;
type Joiner = Extract<Instance, { role: 'joiner' }>;

/** A preserved app's mountpoint name: one per data directory, the same at every launch. */
export function preservedMountName(name: string, dataDir: string): string {
  return `${name}-${crypto().createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}`;
}

/** The linger in ms: OVERPACK_LINGER (seconds), else the manifest's `overlay.linger`, else the default. */
export function lingerMs(manifest: Manifest): number {
  const env = process.env.OVERPACK_LINGER;
  if (env !== undefined && env.trim() !== '') {
    const v = Number(env);
    if (!Number.isFinite(v) || v < 0 || v > LINGER_SECONDS.max) throw new LaunchError(`OVERPACK_LINGER must be a number of seconds from 0 to ${LINGER_SECONDS.max}, not ${JSON.stringify(env)}`, EXIT.usage);
    return Math.round(v * 1000);
  }
  return Math.round((manifest.overlay?.linger ?? LINGER_SECONDS.default) * 1000);
}

export async function join(dataDir: string, opts: JoinOptions): Promise<Instance | null> {
  try {
    return await acquireOrJoin(dataDir, opts);
  } catch (err) {
    if (err instanceof InstanceError) throw new LaunchError(err.message, EXIT.tempFail);
    throw err;
  }
}

function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => resolve());
  });
}

/**
 * The app's first read is its entrypoint: verifying it (BLAKE3, which first loads the hashing
 * addon) while the app's Node is still starting saves the app's first FUSE read that work.
 * Through the image layer, never through our own mount: a request of ours still in flight
 * when this process exits would keep it from exiting (its thread waits on a mount nobody
 * serves any more). Skipped when the upper has its own copy; a failure is left for the app's
 * own read to report.
 */
export function prefetchEntrypoint(layer: ImageLayer, entrypoint: string, upper: string): void {
  const rel = path.posix.normalize(`/${entrypoint}`);
  if (fs.existsSync(path.join(upper, rel))) return;
  layer.open(rel).then((f) => f.close(), () => undefined);
}

/** Mounts in this process and runs the app (or serves until a signal), then unmounts. */
export async function serveHere(launch: Launch, req: MountRequest, server: Server | null): Promise<AppResult> {
  const { manifest } = launch;
  // The app's Node starts up while we mount (held until the mount is ready, see startApp).
  const app = launch.mount ? null : startApp(req.mountPoint, manifest, launch.appArgs, launch.bundle, launch.binDir, true);
  if (app) launch.cleanup.push(() => app.cancel());
  // Loaded only now, after the app's process was started: the engine's modules (and
  // fs/promises) initialize while the app's Node starts up, not before it.
  const { mountOverlay } = await import('./mount.js');
  const overlay = await mountOverlay(req);
  server?.announce(req.mountPoint);
  let result: AppResult;
  if (!app) {
    // Handlers first, then the announcement: a caller may stop us the moment it reads the path.
    const stopped = untilStopped();
    process.stdout.write(`${req.mountPoint}\n`);
    say(`serving ${manifest.name} at ${req.mountPoint}; Ctrl-C to stop`);
    await stopped;
    result = { code: 0, signal: null };
  } else {
    app.go();
    prefetchEntrypoint(req.layer, manifest.entrypoint, req.upper);
    result = await app.result;
  }
  mark('runtime: app exited');
  // Launches that joined this mount keep it alive until their apps are done too.
  await server?.drain();
  await overlay.umount();
  mark('runtime: unmounted');
  return result;
}

/** Runs the app (or shows the mount until a signal) in the mount another process serves. */
export async function runJoined(launch: Launch, joined: Joiner): Promise<Outcome> {
  if (!launch.mount && runsInProcess(launch.manifest)) return handOver(launch, joined);
  try {
    if (launch.mount) {
      const stopped = untilStopped();
      process.stdout.write(`${joined.mountPoint}\n`);
      await stopped;
      return { code: 0, signal: null };
    }
    return await runApp(joined.mountPoint, launch.manifest, launch.appArgs, launch.bundle, launch.binDir);
  } finally {
    joined.leave();
  }
}

/** The app in this process, in the joined mount; it leaves the mount when its process exits. */
function handOver(launch: Launch, joined: Joiner): typeof HANDED_OVER {
  becomeApp(joined.mountPoint, launch.manifest, launch.appArgs, launch.bundle, launch.binDir, () => joined.leave());
  return HANDED_OVER;
}

export interface LingerRequest {
  dataDir: string;
  build: string;
  mountPoint: string;
  lingerMs: number;
}

/** A lingering run under way: the server joined, or the start of one. */
export interface LingeringRun {
  joined: Joiner | null;
  starting: Promise<void> | null;
}

/**
 * Joins this build's mount server, or starts one (not waited for: see runInMountServer).
 * `started`: the status pipe of a server the loader started already; waited for instead, and
 * where it says nothing good (another server was there, it failed), one is started as before.
 */
export async function beginLingeringRun(dataDir: string, build: string, lingerMs: number, makeDataDir: () => void, started: number | null): Promise<LingeringRun> {
  makeDataDir();
  const found = await join(dataDir, { build, serve: false });
  if (found?.role === 'joiner') {
    dropStartedServer(started);
    return { joined: found, starting: null };
  }
  mark(started === null ? 'runtime: starting a mount server' : 'runtime: waiting for the mount server the loader started');
  const starting = started === null ? startMountServer(lingerMs, build) : awaitStartedServer(started).catch(() => startMountServer(lingerMs, build));
  starting.catch(() => undefined); // awaited (and reported) by runInMountServer
  return { joined: null, starting };
}

/** Runs the app in the mount of this build's mount server, starting one when none runs. */
export async function runInMountServer(launch: Launch, req: LingerRequest, begun: LingeringRun): Promise<Outcome> {
  const { manifest } = launch;
  // A Node app runs in this process once the mount is there; any other app's process starts
  // up while the server mounts, as in serveHere.
  const app = runsInProcess(manifest) ? null : startApp(req.mountPoint, manifest, launch.appArgs, launch.bundle, launch.binDir, true);
  if (app) launch.cleanup.push(() => app.cancel());
  let { joined, starting } = begun;
  for (let attempt = 0; ; attempt++) {
    if (starting) {
      await starting;
      mark('runtime: mount server ready');
    }
    joined ??= (await join(req.dataDir, { build: req.build, serve: false })) as Joiner | null;
    if (joined) {
      if (!app) return handOver(launch, joined);
      try {
        if (joined.mountPoint === req.mountPoint) {
          app.go();
          return await app.result;
        }
        app.cancel(); // served by an older runtime, which mounts elsewhere
        return await runApp(joined.mountPoint, manifest, launch.appArgs, launch.bundle, launch.binDir);
      } finally {
        joined.leave();
      }
    }
    // Twice: a server may stop between its "ready" and our joining (its linger ran out, a reset).
    if (attempt === 2) throw new LaunchError(`the mount server of ${manifest.name} stopped each time before the app could run in it`, EXIT.software);
    mark('runtime: starting a mount server');
    starting = startMountServer(req.lingerMs, req.build);
  }
}
