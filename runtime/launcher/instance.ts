/**
 * One mount per preserved app, shared by every launch that runs at the same time.
 *
 * The first launch becomes the *server*: it holds `<data>/lock` ({pid, mountPoint, closing})
 * and serves the overlay. Later launches *join*: they register `<data>/clients/<pid>`, check the
 * lock again, and run their app in the server's mount. When its own app is done the server
 * waits for the registered clients, marks the lock `closing`, looks at the clients once more
 * (a client that registered meanwhile sends it back to serving) and only then unmounts and
 * drops the lock. A joiner proceeds only if, after registering, the lock is not closing; so a
 * joiner never runs in a mount that is going away, and two servers never share one upper.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isMounted } from '../fuse/unmount.js';

interface LockState {
  pid: number;
  mountPoint: string | null;
  closing: boolean;
}

export type Instance =
  | { role: 'server'; announce(mountPoint: string): void; drain(): Promise<void>; release(): void }
  | { role: 'joiner'; mountPoint: string; leave(): void };

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

function writeLock(file: string, state: LockState): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, file);
}

function liveClients(dir: string): number {
  let n = 0;
  for (const name of fs.readdirSync(dir)) {
    if (alive(Number(name))) n++;
    else fs.rmSync(path.join(dir, name), { force: true }); // a client that crashed
  }
  return n;
}

export class InstanceError extends Error {}

/** Becomes the server for `dataDir`, or joins the running one; waits through a closing one. */
export async function acquireOrJoin(dataDir: string, timeoutMs = 30000): Promise<Instance> {
  fs.mkdirSync(path.join(dataDir, 'clients'), { recursive: true, mode: 0o700 });
  const lock = path.join(dataDir, 'lock');
  const clients = path.join(dataDir, 'clients');
  const me = path.join(clients, String(process.pid));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (Date.now() > deadline) throw new InstanceError(`timed out waiting for the running instance of this app (lock ${lock})`);
    try {
      fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, mountPoint: null, closing: false } satisfies LockState), { flag: 'wx' });
      return {
        role: 'server',
        announce: (mountPoint) => writeLock(lock, { pid: process.pid, mountPoint, closing: false }),
        drain: async () => {
          const mountPoint = readLock(lock)?.mountPoint ?? null;
          for (;;) {
            while (liveClients(clients) > 0) await sleep(100);
            writeLock(lock, { pid: process.pid, mountPoint, closing: true });
            if (liveClients(clients) === 0) return;
            writeLock(lock, { pid: process.pid, mountPoint, closing: false }); // someone joined just now
          }
        },
        release: () => fs.rmSync(lock, { force: true }),
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const state = readLock(lock);
    if (!state) {
      await sleep(20); // being written or replaced right now
      continue;
    }
    if (!alive(state.pid)) {
      fs.rmSync(lock, { force: true }); // left by a crashed server
      continue;
    }
    if (state.closing || !state.mountPoint || !isMounted(state.mountPoint)) {
      await sleep(50); // starting up or shutting down: wait for it to settle
      continue;
    }
    fs.writeFileSync(me, '');
    const again = readLock(lock);
    if (again && again.pid === state.pid && !again.closing && again.mountPoint === state.mountPoint) {
      return { role: 'joiner', mountPoint: state.mountPoint, leave: () => fs.rmSync(me, { force: true }) };
    }
    fs.rmSync(me, { force: true });
    await sleep(50);
  }
}
