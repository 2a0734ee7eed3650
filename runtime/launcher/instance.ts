/**
 * One mount per preserved app, shared by every launch that runs at the same time.
 *
 * The launch that takes `<data>/lock` ({pid, mountPoint, closing, build, ...}) is the *server*
 * and serves the overlay: a detached mount server (mount-server.ts) that runs no app itself
 * and lingers a few seconds after the last app is done, or, where nothing lingers, the launch
 * itself. Launches *join*: they register `<data>/clients/<pid>`, check the lock again, and run
 * their app in the server's mount. The server waits for the registered clients, marks the lock
 * `closing`, looks at the clients once more (a client that registered meanwhile sends it back
 * to serving) and only then unmounts and drops the lock. A joiner proceeds only if, after
 * registering, the lock is not closing; so a joiner never runs in a mount that is going away,
 * and two servers never share one upper.
 *
 * A launch joins only a server of its own build (the index hash): a rebuilt or updated bundle
 * never runs in a mount of the old image. An idle detached server of another build is asked
 * to stop (SIGTERM, after checking by its start time that the pid is still that server).
 */
import fs from 'node:fs';
import path from 'node:path';
import { isMounted } from '../fuse/unmount.js';
import { procStatFields, processStartTime as startTime, sameProcess, startedAs } from './proc-stat.js';
import { OverpackError } from '../errors/overpack-error.js';

interface LockState {
  pid: number;
  mountPoint: string | null;
  closing: boolean;
  /** The index hash of the bundle served (absent in locks of runtimes before it was recorded). */
  build?: string;
  /** A mount server of its own (mount-server.ts) that runs no app: idle when it has no clients. */
  detached?: boolean;
  /** Field 22 of /proc/<pid>/stat: tells this server from a later process with the same pid. */
  started?: string | null;
}

export type Instance =
  | {
      role: 'server';
      /**
       * The mount is ready at `mountPoint`; `detached`: by a mount server that runs no app of its
       * own. Returns the lock's text as written: it stays the same while the mount may be joined.
       */
      announce(mountPoint: string, detached?: boolean): string;
      /**
       * Waits until no client is left and none came for `lingerMs`, then marks the lock closing.
       * `firstWaitMs`: how long to wait for a first client (a mount server's launch registers
       * only once the mount is announced).
       */
      drain(lingerMs?: number, firstWaitMs?: number): Promise<void>;
      /** Ends a lingering drain(): it returns as soon as no client is left. */
      stopLingering(): void;
      release(): void;
    }
  | { role: 'joiner'; mountPoint: string; leave(): void };

export interface JoinOptions {
  /** This bundle's build (its index hash). */
  build: string;
  /** Become the server when nobody serves; false: return null then (the caller starts a mount server). */
  serve: boolean;
  /** Stop an idle mount server instead of joining it, whatever its build (--overpack-reset). */
  stopIdle?: boolean;
  timeoutMs?: number;
}

export class InstanceError extends OverpackError {
  constructor(dataDir: string, message: string) {
    super('BUSY', 'join', dataDir, message);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readLock(file: string): LockState | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LockState;
  } catch {
    return null;
  }
}

function writeLock(file: string, state: LockState): string {
  const tmp = `${file}.${process.pid}.tmp`;
  const text = JSON.stringify(state);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
  return text;
}

/**
 * `clients/<pid>` holds the client's start time (empty in files of older runtimes): a client
 * that is gone without leaving (killed, or an app the loader ran in its own process, see
 * runtime/loader/express.c) is told from a later process with its pid.
 */
function clientAlive(dir: string, name: string): boolean {
  const pid = Number(name);
  if (!alive(pid)) return false;
  const stat = procStatFields(pid);
  // Exited, not yet reaped by its parent: it holds nothing in the mount any more.
  if (stat?.[0] === 'Z' || stat?.[0] === 'X') return false;
  let started = '';
  try {
    started = fs.readFileSync(path.join(dir, name), 'utf8').trim();
  } catch {
    return false; // left just now
  }
  return started === '' || startedAs(stat?.[19] ?? null, started);
}

function liveClients(dir: string): number {
  let n = 0;
  for (const name of fs.readdirSync(dir)) {
    if (clientAlive(dir, name)) n++;
    else fs.rmSync(path.join(dir, name), { force: true }); // a client that crashed, or an app that exited
  }
  return n;
}

/** Asks an idle mount server to stop; true when it was asked. */
function stopServer(state: LockState): boolean {
  if (!state.detached || !state.started || !sameProcess(state.pid, state.started)) return false;
  try {
    process.kill(state.pid, 'SIGTERM');
    return true;
  } catch {
    return false;
  }
}

/** Becomes the server for `dataDir`, or joins the running one; waits through a closing one. */
export async function acquireOrJoin(dataDir: string, opts: JoinOptions): Promise<Instance | null> {
  fs.mkdirSync(path.join(dataDir, 'clients'), { recursive: true, mode: 0o700 });
  const lock = path.join(dataDir, 'lock');
  const clients = path.join(dataDir, 'clients');
  const me = path.join(clients, String(process.pid));
  const deadline = Date.now() + (opts.timeoutMs ?? 30000);
  let asked = 0; // the pid of a server asked to stop
  for (;;) {
    if (Date.now() > deadline) throw new InstanceError(dataDir, `timed out waiting for the running instance of this app (lock ${lock})`);
    if (opts.serve) {
      const server = takeLock(lock, clients, opts.build);
      if (server) return server;
    }
    const state = readLock(lock);
    if (!state) {
      if (!opts.serve && !fs.existsSync(lock)) return null; // nobody serves: the caller starts a server
      await sleep(20); // being written or replaced right now
      continue;
    }
    if (!alive(state.pid)) {
      fs.rmSync(lock, { force: true }); // left by a crashed server
      continue;
    }
    if (state.closing || !state.mountPoint || !isMounted(state.mountPoint)) {
      await sleep(20); // starting up or shutting down: wait for it to settle
      continue;
    }
    if (state.build !== opts.build || opts.stopIdle) {
      // Not a mount to run in: stop the server if it is idle, else say who holds it.
      const idle = state.detached === true && liveClients(clients) === 0;
      if (idle && (asked === state.pid || stopServer(state))) {
        asked = state.pid;
        await sleep(20);
        continue;
      }
      if (opts.stopIdle) throw new InstanceError(dataDir, `this app is running (pid ${state.pid})`);
      throw new InstanceError(dataDir, `another build of this app is running (pid ${state.pid}, serving ${state.mountPoint}); a bundle runs only in a mount of its own image: close the running app and launch again`);
    }
    fs.writeFileSync(me, startTime('self') ?? '');
    const again = readLock(lock);
    if (again && again.pid === state.pid && !again.closing && again.mountPoint === state.mountPoint) {
      return { role: 'joiner', mountPoint: state.mountPoint, leave: () => fs.rmSync(me, { force: true }) };
    }
    fs.rmSync(me, { force: true });
    await sleep(20);
  }
}

function takeLock(lock: string, clients: string, build: string): Instance | null {
  const base = { pid: process.pid, build, started: startTime('self') };
  try {
    fs.writeFileSync(lock, JSON.stringify({ ...base, mountPoint: null, closing: false } satisfies LockState), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw err;
  }
  let mountPoint: string | null = null;
  let detached = false;
  let lingerUntilIdle = false;
  let wake: (() => void) | null = null;
  const nap = (ms: number) => new Promise<void>((resolve) => {
    const t = setTimeout(() => ((wake = null), resolve()), ms);
    wake = () => (clearTimeout(t), (wake = null), resolve());
  });
  return {
    role: 'server',
    announce: (mp, isDetached = false) => {
      mountPoint = mp;
      detached = isDetached;
      return writeLock(lock, { ...base, mountPoint, closing: false, detached });
    },
    drain: async (lingerMs = 0, firstWaitMs = lingerMs) => {
      let idleSince: number | null = null;
      let wait = firstWaitMs;
      for (;;) {
        if (liveClients(clients) > 0) {
          idleSince = null;
          wait = lingerMs;
          await nap(100);
          continue;
        }
        idleSince ??= Date.now();
        const left = lingerUntilIdle ? 0 : wait - (Date.now() - idleSince);
        if (left > 0) {
          await nap(Math.min(left, 100));
          continue;
        }
        writeLock(lock, { ...base, mountPoint, closing: true, detached });
        if (liveClients(clients) === 0) return;
        writeLock(lock, { ...base, mountPoint, closing: false, detached }); // someone joined just now
        idleSince = null;
      }
    },
    stopLingering: () => {
      lingerUntilIdle = true;
      wake?.();
    },
    release: () => fs.rmSync(lock, { force: true }),
  };
}
