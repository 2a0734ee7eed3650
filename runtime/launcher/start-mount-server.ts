/**
 * Starting a mount server (mount-server.ts) from a launch that found none: the same runtime,
 * with the linger and the build in its environment, in a session of its own, with none of the
 * launch's stdio (a caller reading the launch's output must see end of file when the app is
 * done, not when the server exits) and a status pipe on descriptor 3.
 */
import fs from 'node:fs';
import { childProcess } from '../builtins.js';
import { LaunchError } from './launch-error.js';
import { relaunchEnv, runtimeExe } from './self.js';
import { EXIT } from '../errors/exit-codes.js';

/** The environment that makes a runtime a mount server: the linger in ms, and the build it serves. */
export const SERVE_LINGER_ENV = 'OVERPACK_SERVE_LINGER_MS';
export const SERVE_BUILD_ENV = 'OVERPACK_SERVE_BUILD';
export const STATUS_FD = 3;
/** A mount server waits this long for the launch that started it to register. */
export const FIRST_CLIENT_MS = 5000;

/** One JSON line on the status pipe. */
export type ServerStatus = { ready: true } | { ready: false; code: number; message: string };

/** Set by the loader: the status pipe of a mount server it started for this launch (overpack_loader.c). */
export const STARTED_SERVER_ENV = 'OVERPACK_SERVER_STARTING';
/** In SERVE_BUILD_ENV and SERVE_LINGER_ENV: the server reads them from its own image and manifest. */
const AUTO = 'auto';

/** A server's status line, once `text` holds one: null while it does not. */
function statusLine(text: string): ServerStatus | null {
  const end = text.indexOf('\n');
  return end < 0 ? null : (JSON.parse(text.slice(0, end)) as ServerStatus);
}

/** What a launch makes of a server's status: ready, its own error, or (no status) how it ended. */
function outcome(status: ServerStatus | null, ended: string): LaunchError | null {
  if (status?.ready) return null;
  if (status) return new LaunchError(status.message, status.code);
  return new LaunchError(`the mount server of this bundle stopped before its mount was ready (${ended})`, EXIT.software);
}

/** Starts a mount server for this bundle and waits until its mount is ready (or it failed). */
export function startMountServer(lingerMs: number, build: string): Promise<void> {
  const env: NodeJS.ProcessEnv = { ...process.env, [SERVE_LINGER_ENV]: String(lingerMs), [SERVE_BUILD_ENV]: build };
  // The server makes no TLS connection: the CA file would only slow its Node's start-up.
  delete env.NODE_EXTRA_CA_CERTS;
  const child = childProcess().spawn(runtimeExe(), [], { stdio: ['ignore', 'ignore', 'ignore', 'pipe'], env: relaunchEnv(env), argv0: process.argv0, cwd: '/', detached: true });
  const pipe = child.stdio[STATUS_FD] as NodeJS.ReadableStream & { unref?(): void };
  return new Promise<void>((resolve, reject) => {
    let text = '';
    let settled = false;
    const settle = (status: ServerStatus | null, exit?: string) => {
      if (settled) return;
      settled = true;
      child.unref();
      pipe.unref?.();
      const err = outcome(status, exit ?? 'no status');
      if (err) reject(err);
      else resolve();
    };
    pipe.on('data', (d: Buffer) => {
      text += d.toString();
      const status = statusLine(text);
      if (status) settle(status);
    });
    child.on('error', (err) => settle(null, err.message));
    child.on('exit', (code, signal) => settle(null, signal ? `killed by ${signal}` : `exit status ${code}`));
  });
}

/**
 * The status pipe of the mount server the loader started for this launch, taken out of the
 * environment (the app must not inherit it); null when there is none. Only a pipe counts.
 */
export function takeStartedServer(): number | null {
  const value = process.env[STARTED_SERVER_ENV];
  delete process.env[STARTED_SERVER_ENV];
  const fd = Number(value);
  if (value === undefined || !Number.isInteger(fd) || fd < 3) return null;
  try {
    if (!fs.fstatSync(fd).isFIFO()) return null;
  } catch {
    return null;
  }
  return fd;
}

/** Waits for the status of the server the loader started: resolves once its mount is ready, rejects otherwise. */
export function awaitStartedServer(fd: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const buf = Buffer.alloc(4096);
    let text = '';
    const next = () =>
      fs.read(fd, buf, 0, buf.length, null, (err, n) => {
        if (!err && n > 0) {
          text += buf.toString('utf8', 0, n);
          if (!statusLine(text)) return next();
        }
        fs.close(fd, () => undefined);
        const failed = outcome(statusLine(text), err ? err.message : 'the one the loader started');
        if (failed) reject(failed);
        else resolve();
      });
    next();
  });
}

/** A started server's pipe this launch has no use for: closed (the server serves or exits on its own). */
export function dropStartedServer(fd: number | null): void {
  if (fd !== null) fs.close(fd, () => undefined);
}

/**
 * This process's mount-server request, taken out of the environment, or null. The variables
 * come with the status pipe (a socket, as Node makes pipes); without it they were not set by a
 * launch, and this process refuses to start rather than act on them (or start a server itself).
 */
export function takeServeRequest(): { lingerMs: number | null; build: string | null } | null {
  const linger = process.env[SERVE_LINGER_ENV];
  const build = process.env[SERVE_BUILD_ENV];
  delete process.env[SERVE_LINGER_ENV];
  delete process.env[SERVE_BUILD_ENV];
  if (linger === undefined && build === undefined) return null;
  let piped = false;
  try {
    const st = fs.fstatSync(STATUS_FD);
    piped = st.isSocket() || st.isFIFO();
  } catch {
    /* no descriptor 3 */
  }
  if (!piped || build === undefined || !(Number(linger) >= 0 || linger === AUTO)) {
    throw new LaunchError(`${SERVE_LINGER_ENV} and ${SERVE_BUILD_ENV} are set only by the runtime for its mount server; unset them`, EXIT.usage);
  }
  // "auto" (the loader started it, overpack_loader.c): this image's build, the manifest's linger.
  return { lingerMs: linger === AUTO ? null : Number(linger), build: build === AUTO ? null : build };
}
