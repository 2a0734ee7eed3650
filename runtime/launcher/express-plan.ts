/**
 * The express relaunch: what a mount server leaves for the bundle's loader, so that a relaunch
 * joining it runs the app at once, without starting the runtime (runtime/loader/express.c).
 *
 * A relaunch that finds this build's mount server serving does nothing the server has not
 * already done or checked: the image, the manifest, the signature and the addons are those
 * of the same file, the plain Node is there, the sandbox check and the desktop entry have been
 * done. What is left is to register as a client, set the app's environment and exec it. The
 * server writes here, once its mount is announced, everything that takes: the bundle it
 * serves (path and identity: the file must be the one the server read, unchanged), what the
 * launch must find the same (its data home, files whose state would change what the runtime
 * does), the lock's exact text (the loader joins only while it reads the same: announced, not
 * closing, this server), the server's pid and start time, the mountpoint, and the command and
 * environment changes that runApp / becomeApp would make. Anything the loader cannot check,
 * or any runtime option in the launch (`--overpack-*`, an `OVERPACK_*` variable other than
 * those listed), and it starts the runtime as before: the express path is only ever faster.
 *
 * One file per bundle file and data directory, `<cache>/overpack/express/<dev>-<ino>-<data>`
 * (planFile), private to the user, replaced by each server. It stays when its server stops: the
 * lock then no longer reads as it says (no loader joins a server that is gone, or one that was
 * killed), and it tells the loader that a server lingered for such a launch before, so the
 * loader starts the next one while the runtime starts up (overpack_loader.c). The format, NUL-terminated fields in
 * this order, a list as its count then its items:
 *
 *   magic, bundle, identity ("dev ino size mtime-ns ctime-ns"), data home (the desktop entry's
 *   record is there even when the data directory is portable), data directory, lock text, server pid, server start time, mountpoint (as
 *   /proc/self/mountinfo spells it), program, argv[0] ("" for the launch's own), [fixed
 *   arguments], [names to unset], [NAME=VALUE to set], bin directory (put in front of PATH),
 *   [OVERPACK_* names a launch may carry], OVERPACK_LINGER's maximum, [path, state] pairs
 *   ("absent", "dir", or an identity).
 */
import fs from 'node:fs';
import path from 'node:path';
import { appEnvChanges, shellCommand } from './app-process.js';
import { isJsEntrypoint } from './entrypoint.js';
import { LINGER_SECONDS, type Manifest } from '../manifest/schema.js';
import { overpackCache } from '../paths/xdg.js';
import { privateDir } from './paths.js';
import { processStartTime } from './proc-stat.js';
import { runtimeExe } from './self.js';

const MAGIC = 'OVERPACK-EXPRESS-1';

/**
 * Variables a launch may carry that change nothing in it (a bundle started by another bundle's
 * app has them). The loader also lets through OVERPACK_EXPRESS (set to 0, it starts the
 * runtime: flags.ts) and a plain number in OVERPACK_LINGER (a joining launch's linger is unused).
 */
const HARMLESS_ENV = ['OVERPACK_BUNDLE', 'OVERPACK_NODE', 'OVERPACK_NODE_DISPATCH', 'OVERPACK_LOADED_FROM'];

export interface ExpressInputs {
  bundle: string;
  /** The bundle's file as the server opened it. */
  fd: number;
  manifest: Manifest;
  dataDir: string;
  /** The data directory is `<bundle>.data`, beside the bundle. */
  portable: boolean;
  dataHome: string;
  /** The plain Node on the app's PATH, and the directory that holds its `node` link. */
  node: string;
  binDir: string;
  mountPoint: string;
  /** Files whose change would make a launch act differently (the desktop entry's record). */
  watched: string[];
}

type Stats = fs.BigIntStats;
const identity = (st: Stats) => `${st.dev} ${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`;

function stateOf(file: string): string {
  const st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  return !st ? 'absent' : st.isDirectory() ? 'dir' : identity(st);
}

/** The kernel's escaping of a mountpoint in /proc/self/mountinfo: space, tab, newline and backslash in octal. */
function mountinfoEscape(p: string): string {
  return p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** FNV-1a, 64 bits, in hex: short names for strings the loader can hash the same way. */
function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text)) h = BigInt.asUintN(64, (h ^ BigInt(byte)) * 0x100000001b3n);
  return h.toString(16).padStart(16, '0');
}

/**
 * One plan per bundle file and data directory: launches of one file with another data home (or
 * a portable data directory) are served by another server, and find their own plan. The
 * loader knows both without the manifest: the data directory is `<bundle>.data` when that is a
 * directory, else the app's directory under the data home.
 */
function planFile(st: Stats, input: ExpressInputs): string {
  const data = input.portable ? `${input.bundle}.data` : input.dataHome;
  return path.join(overpackCache(), 'express', `${st.dev}-${st.ino}-${fnv1a64(data)}`);
}

/** Writes the plan for a server whose lock reads `lockText`; returns its path (to remove), or null when this bundle cannot be relaunched express. */
export function writeExpressPlan(input: ExpressInputs, lockText: string): string | null {
  const started = processStartTime('self');
  if (!started) return null;
  const st = fs.fstatSync(input.fd, { bigint: true });
  const { manifest } = input;
  const entry = path.join(input.mountPoint, manifest.entrypoint);
  const args = manifest.args ?? [];
  const [program, argv0, fixed] = isJsEntrypoint(manifest) ? [input.node, '', [entry, ...args]] : ((c) => [c[0], c[0], c[1]] as const)(shellCommand(entry, args));
  const changes = appEnvChanges(input.mountPoint, manifest, input.bundle, input.node, runtimeExe());
  const list = (items: readonly string[]) => [String(items.length), ...items];
  const watched = [...(input.portable ? [] : [`${input.bundle}.data`]), ...input.watched];
  const fields = [
    MAGIC,
    input.bundle,
    identity(st),
    input.dataHome,
    input.dataDir,
    lockText,
    String(process.pid),
    started,
    mountinfoEscape(input.mountPoint),
    program,
    argv0,
    ...list(fixed),
    ...list([...changes.unset, 'OVERPACK_LOADED_FROM']),
    ...list(changes.set.map(([k, v]) => `${k}=${v}`)),
    input.binDir,
    ...list(HARMLESS_ENV),
    String(LINGER_SECONDS.max),
    ...list(watched.flatMap((f) => [f, stateOf(f)])),
  ];
  // A NUL inside a field would shift every field after it; no path or variable can hold one.
  if (fields.some((f) => f.includes('\0'))) return null;
  const file = planFile(st, input);
  privateDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, fields.map((f) => `${f}\0`).join(''), { mode: 0o600 });
  fs.renameSync(tmp, file);
  removePlansOfDeletedBundles(path.dirname(file));
  return file;
}

/** Plans stay when their server stops; those whose bundle file is gone (deleted, or replaced by another) are removed here. */
function removePlansOfDeletedBundles(dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    const plan = path.join(dir, name);
    try {
      const fields = fs.readFileSync(plan, 'utf8').split('\0');
      if (fields[0] !== MAGIC || name.endsWith('.tmp')) continue;
      const st = fs.statSync(fields[1]!, { bigint: true, throwIfNoEntry: false });
      if (!st || !name.startsWith(`${st.dev}-${st.ino}-`)) fs.rmSync(plan, { force: true });
    } catch {
      /* being replaced, or not ours to judge */
    }
  }
}
