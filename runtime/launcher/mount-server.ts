/**
 * The mount server: a detached runtime process that serves a preserved app's overlay for
 * every launch of it and keeps serving for a while (the linger) after the last app is done,
 * so a relaunch runs in a mount whose kernel caches (entries, attributes, pages) are warm.
 *
 * A launch that finds no server starts one (`startMountServer`): the same runtime, with the
 * linger and the build in its environment, its own session, no terminal and no stdio of the
 * launch (a caller reading the launch's output must see end of file when the app is done),
 * and a status pipe on descriptor 3 that says "ready" once the mount is announced, or why it
 * failed. The launch then joins like any other (instance.ts). The server exits on its own:
 * when no launch has used the mount for the linger, or at SIGTERM once its clients are done.
 */
import fs from 'node:fs';
import { acquireOrJoin, InstanceError } from './instance.js';
import { LaunchError } from './launch-error.js';
import { mountOverlay, type MountRequest } from './mount.js';
import { writeExpressPlan, type ExpressInputs } from './express-plan.js';
import { privateDir } from './paths.js';
import { FIRST_CLIENT_MS, STATUS_FD, type ServerStatus } from './start-mount-server.js';
import { mark } from './trace.js';
import { EXIT } from '../errors/exit-codes.js';

export interface ServeRequest extends MountRequest {
  dataDir: string;
  build: string;
  lingerMs: number;
  /** What the loader needs to relaunch the app in this mount without the runtime (express-plan.ts); null: it cannot. */
  express: ExpressInputs | null;
}

/** The express plan for this mount, or null: it is only ever a faster way in, so failing to write one fails nothing. */
function offerExpress(req: ServeRequest, lockText: string): string | null {
  if (!req.express) return null;
  try {
    return writeExpressPlan(req.express, lockText);
  } catch {
    return null;
  }
}

function report(status: ServerStatus): void {
  try {
    fs.writeSync(STATUS_FD, `${JSON.stringify(status)}\n`);
    fs.closeSync(STATUS_FD);
  } catch {
    /* the launch is gone: nobody to tell */
  }
}

/** A server the loader started for a launch that will not want one: says so and exits 0. */
export function declineServing(message: string): never {
  report({ ready: false, code: EXIT.ok, message });
  process.exit(0);
}

/** The mount server's whole life: take the lock, mount, announce, serve, linger, unmount. */
export async function serveDetached(req: ServeRequest): Promise<number> {
  let release = () => undefined as void;
  let announced = false;
  try {
    const instance = await acquireOrJoin(req.dataDir, { build: req.build, serve: true });
    if (!instance || instance.role === 'joiner') {
      instance?.leave(); // another server of this build came first: the launch joins that one
      report({ ready: true });
      return 0;
    }
    release = () => instance.release();
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => instance.stopLingering());
    privateDir(req.upper);
    const overlay = await mountOverlay(req);
    // Kept when this server stops: its lock then reads otherwise, and the plan tells the
    // loader of the next launch that a server lingered for it, so it starts one at once.
    offerExpress(req, instance.announce(req.mountPoint, true));
    report({ ready: true });
    announced = true;
    mark('mount server: ready');
    await instance.drain(req.lingerMs, Math.max(req.lingerMs, FIRST_CLIENT_MS));
    await overlay.umount();
    release();
    return 0;
  } catch (err) {
    release();
    if (announced) throw err; // the launch is not waiting any more: the error goes to the app's log
    const [code, message] = err instanceof LaunchError ? [err.exitCode, err.message] : err instanceof InstanceError ? [EXIT.tempFail, err.message] : [EXIT.software, (err as Error)?.message ?? String(err)];
    report({ ready: false, code, message });
    return code;
  }
}
