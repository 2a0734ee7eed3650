/**
 * The bundle's main (a Node single-executable application): find the image at the end of this
 * executable, mount the writable overlay over it, run the app inside, pass its exit status on.
 * This process serves the mount, so it never touches the mount with synchronous calls: the app
 * runs as a child.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { restoreDefaultSignal } from '../native/syscalls.js';
import { makeRunDir, removeAbandonedRunDirs } from './run-dir.js';
import { EXEC_SCRIPT } from './exec-script.js';
import { plainNode } from './plain-node.js';
import { BUNDLE, relaunchEnv, runtimeExe } from './self.js';
import { NoExecError } from './exec-dir.js';
import { FALLBACK_HINT } from '../fuse/preflight.js';
import { EXEC_HELPER, loadAddon } from '../native/addon.js';
import { appDetached, forwardSignals } from './signals.js';
import { fuseDeviceFds, isMounted } from '../fuse/unmount.js';
import { readImage, ImageError } from '../image/format.js';
import { SignatureError } from '../image/signature.js';
import { ImageLayer } from '../image/image-layer.js';
import { extractAddons } from './addons.js';
import { extractTree } from './extract.js';
import { isReservedEnv, validateManifest, type Manifest } from './manifest.js';
import { enforceSignature, signatureRequirement, type SignatureState } from './trust.js';
import { cacheHome, dataHome, privateDir, safeName } from './paths.js';
import { acquireOrJoin, InstanceError, type Instance } from './instance.js';
import { mark } from './trace.js';
import { DesktopError, integrate, refreshIntegration, unintegrate } from '../desktop/integration.js';
import { reportError } from '../desktop/notify.js';
import { sandboxHelperCandidates, sandboxProblem } from '../desktop/chromium.js';
import type { FuseBinding } from '../fuse/binding.js';

mark('runtime: modules loaded');

const RUNTIME_VERSION = '0.1.0';
const useColor = process.stderr.isTTY === true && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
/** The user's PATH as it was when we started (the FUSE preflight may put a private dir in front). */
const USER_PATH = process.env.PATH;
/** Set by the runtime for its own children; never taken from the user's environment for the app. */
const RUNTIME_PRIVATE_ENV = ['OVERPACK_NATIVE_DIR', 'OVERPACK_NODE_DISPATCH', 'OVERPACK_NODE_GATE', 'OVERPACK_APP_NODE_OPTIONS'];

class LaunchError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

function say(msg: string): void {
  process.stderr.write(`${useColor ? '\x1b[2moverpack:\x1b[0m' : 'overpack:'} ${msg}\n`);
}

interface Flags {
  help: boolean;
  version: boolean;
  info: boolean;
  extract: string | null | undefined; // undefined: not asked; null: default dir
  mount: boolean;
  extractAndRun: boolean;
  reset: boolean;
  yes: boolean;
  discard: boolean;
  verifySignature: string | undefined; // public key file
  integrate: boolean;
  unintegrate: boolean;
}

/** Splits `--overpack-*` runtime flags (never passed to the app) from the app's arguments. */
function parseFlags(argv: string[]): { flags: Flags; appArgs: string[] } {
  const flags: Flags = { help: false, version: false, info: false, extract: undefined, mount: false, extractAndRun: false, reset: false, yes: false, discard: false, verifySignature: undefined, integrate: false, unintegrate: false };
  const appArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--overpack-')) {
      appArgs.push(a);
      continue;
    }
    const [name, inline] = a.slice('--overpack-'.length).split('=', 2) as [string, string | undefined];
    switch (name) {
      case 'help': flags.help = true; break;
      case 'version': flags.version = true; break;
      case 'info': flags.info = true; break;
      case 'mount': flags.mount = true; break;
      case 'extract-and-run': flags.extractAndRun = true; break;
      case 'reset': flags.reset = true; break;
      case 'yes': flags.yes = true; break;
      case 'discard': flags.discard = true; break;
      case 'integrate': flags.integrate = true; break;
      case 'unintegrate': flags.unintegrate = true; break;
      case 'verify-signature': {
        const value = inline ?? argv[++i];
        if (value === undefined || value === '') throw new LaunchError('--overpack-verify-signature needs the public key file: --overpack-verify-signature <pub.pem>', 2);
        flags.verifySignature = value;
        break;
      }
      case 'extract': {
        const next = argv[i + 1];
        if (inline !== undefined) flags.extract = inline;
        else if (next !== undefined && !next.startsWith('-')) flags.extract = argv[++i]!;
        else flags.extract = null;
        break;
      }
      default:
        throw new LaunchError(`unknown runtime option --overpack-${name} (see --overpack-help)`, 2);
    }
  }
  return { flags, appArgs };
}

const HELP = `Runtime options of this overpack bundle (never passed to the app):
  --overpack-help              this help
  --overpack-version           app and runtime versions
  --overpack-info              manifest, image hash and the paths this bundle uses
  --overpack-extract [DIR]     write the app's files to DIR (default ./<name>-<version>) and exit
  --overpack-mount             mount the app's overlay, print its path, serve until interrupted
  --overpack-extract-and-run   run without FUSE: extract to a temporary directory and run there
                               (also: OVERPACK_EXTRACT_AND_RUN=1; changes are not kept)
  --overpack-discard           this run only: start from a clean writable layer and drop it after
  --overpack-reset [--overpack-yes]  delete the app's preserved writable layer
  --overpack-verify-signature PUB.pem  refuse to start unless this bundle is signed by that key
                               (also: OVERPACK_VERIFY_SIGNATURE=PUB.pem)
  --overpack-integrate         add this app to the desktop's menu, with its icon (a later run
                               from another path or of a newer build updates the entry)
  --overpack-unintegrate       remove exactly what --overpack-integrate wrote
Errors are also written to $XDG_STATE_HOME/overpack/<app>.log, and shown as a desktop
notification when there is no terminal.
`;

/**
 * libfuse mounts as a user through its setuid helper (fixed path, then PATH): `fusermount` for
 * libfuse 2, `fusermount3` for libfuse 3. Where only one of them exists, a link with the other
 * name goes in this run's private directory (mkdtemp, 0700) at the front of our PATH, so the
 * FUSE preflight finds both and never has to make one under a predictable name in the shared
 * temporary directory.
 */
function providePrivateFusermount(runDir: string): void {
  if (process.getuid?.() === 0) return; // root mounts directly
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/bin', '/usr/local/bin', '/sbin', '/usr/sbin']).filter(Boolean);
  const find = (name: string) =>
    dirs.map((d) => path.join(d, name)).find((c) => {
      try {
        fs.accessSync(c, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  const fm2 = find('fusermount');
  const fm3 = find('fusermount3');
  if ((fm2 && fm3) || (!fm2 && !fm3)) return; // both there, or none: the preflight explains what to install
  const dir = path.join(runDir, 'fusermount');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.symlinkSync((fm2 ?? fm3)!, path.join(dir, fm2 ? 'fusermount3' : 'fusermount'));
  process.env.PATH = `${dir}:${process.env.PATH ?? ''}`;
}

function appDataDir(bundle: string, name: string): string {
  const portable = `${bundle}.data`;
  if (fs.existsSync(portable) && fs.statSync(portable).isDirectory()) return portable;
  return path.join(dataHome(), 'overpack', safeName(name));
}

/** Mounts left by killed runs answer ENOTCONN; detach them and drop their directories. */
async function cleanStaleMounts(mntRoot: string): Promise<void> {
  let names: string[] = [];
  try {
    names = fs.readdirSync(mntRoot);
  } catch {
    return;
  }
  for (const name of names) {
    const mp = path.join(mntRoot, name);
    if (!isMounted(mp)) {
      try {
        fs.rmdirSync(mp);
      } catch {
        /* not empty or in use: leave it */
      }
      continue;
    }
    // Probed from a child: a mount whose server hangs would hang us too. A probe that does not
    // answer in time means "alive but busy": leave that mount alone.
    const probe = await new Promise<string>((resolve) => {
      // A listing, not a stat: the kernel may answer a stat from its cache without asking anyone.
      const p = spawn('ls', ['-A', mp], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      const t = setTimeout(() => {
        p.kill('SIGKILL');
        resolve('');
      }, 2000);
      p.on('close', () => (clearTimeout(t), resolve(err))); // close, not exit: stderr may still be in flight at exit
      p.on('error', () => (clearTimeout(t), resolve('')));
    });
    if (/not connected/i.test(probe)) {
      await new Promise((resolve) => spawn('fusermount3', ['-uz', mp], { stdio: 'ignore' }).on('exit', resolve).on('error', resolve));
      if (isMounted(mp)) await new Promise((resolve) => spawn('umount', ['-l', mp], { stdio: 'ignore' }).on('exit', resolve).on('error', resolve));
      try {
        fs.rmdirSync(mp);
      } catch {
        /* best effort */
      }
    }
  }
}

type AppResult = { code: number | null; signal: NodeJS.Signals | null };

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
  const probe = spawnSync(file, [String(process.pid), '/bin/sh', '-c', 'exit 0'], { stdio: 'ignore', timeout: 5000 });
  if (probe.status !== 0) return null;
  fs.writeFileSync(works, '');
  return file;
}

/** Runs the app with stdio inherited and signals forwarded; resolves with its exit status. */
function runApp(appDir: string, manifest: Manifest, userArgs: string[], bundle: string, binDir: string): Promise<AppResult> {
  const app = startApp(appDir, manifest, userArgs, bundle, binDir, false);
  app.go();
  return app.result;
}

interface AppRun {
  /** The app's exit status (rejects when it cannot be started). */
  result: Promise<AppResult>;
  /** The mount is ready: the app may run. */
  go(): void;
  /** The mount failed: an app started held exits without running anything. */
  cancel(): void;
}

/**
 * Starts the app. `held`: the mount is not ready yet. A .js app then gets its process at once,
 * held at a gate: the bundle's Node starts up (~20 ms here, plus ~25-40 ms of
 * NODE_EXTRA_CA_CERTS when set) while this process mounts, and reads one byte from the gate
 * (descriptor OVERPACK_NODE_GATE, see entry.cts) before it loads the app's first file: "1"
 * once go() is called, end of file if we cancel or die. Nothing of the app and nothing inside
 * the mount runs before go(). Any other app, or one whose Node has NODE_OPTIONS (a --require
 * would run before the gate), is spawned by go() as before.
 */
function startApp(appDir: string, manifest: Manifest, userArgs: string[], bundle: string, binDir: string, held: boolean): AppRun {
  const entry = path.join(appDir, manifest.entrypoint);
  const args = [...(manifest.args ?? []), ...userArgs];
  const isJs = /\.(c|m)?js$/.test(entry);
  // The user's environment, then the manifest's (never a name the runtime owns: the validator
  // refuses those, and they are dropped here again), then what the runtime sets.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of RUNTIME_PRIVATE_ENV) delete env[k];
  for (const [k, v] of Object.entries(manifest.env ?? {})) if (!isReservedEnv(k)) env[k] = v;
  Object.assign(env, {
    APPDIR: appDir,
    OVERPACK_BUNDLE: bundle,
    ARGV0: process.env.OVERPACK_ARGV0 ?? process.argv0,
    OWD: process.cwd(),
    PATH: `${binDir}:${USER_PATH ?? '/usr/bin:/bin'}`,
  });
  // NODE_OPTIONS the user set is for the app's Node; this runtime ran without it (see main()).
  const appNodeOptions = process.env.OVERPACK_APP_NODE_OPTIONS;
  if (appNodeOptions !== undefined) env.NODE_OPTIONS = appNodeOptions;
  // Naming this runtime's file, not just "1": an app that launches another bundle must not turn
  // that one into node (one that shares this runtime through the loader is told apart by
  // OVERPACK_LOADED_FROM, see entry.cts).
  if (isJs) env.OVERPACK_NODE_DISPATCH = process.execPath;
  // A JS entrypoint runs on this bundle as node, which lives outside the mount: spawned
  // directly. Anything else goes through a shell outside the mount (see exec-script.ts).
  const [direct, directArgv] = isJs ? [runtimeExe(), [entry, ...args]] : ['/bin/sh', ['-c', EXEC_SCRIPT, entry, ...args]];
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
    const child = spawn(program, argv, { stdio, env, cwd: process.cwd(), detached });
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
      settle.reject(new LaunchError(`cannot start ${manifest.entrypoint}: ${err.message}`, 126));
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

/**
 * The app's first read is its entrypoint: verifying it (BLAKE3, which first loads the hashing
 * addon) while the app's Node is still starting takes ~2 ms off the app's first FUSE read.
 * Through the image layer, never through our own mount: a request of ours still in flight
 * when this process exits would keep it from exiting (its thread waits on a mount nobody
 * serves any more). Skipped when the upper has its own copy; a failure is left for the app's
 * own read to report.
 */
function prefetchEntrypoint(layer: ImageLayer, entrypoint: string, upper: string): void {
  const rel = path.posix.normalize(`/${entrypoint}`);
  if (fs.existsSync(path.join(upper, rel))) return;
  layer.open(rel).then((f) => f.close(), () => undefined);
}

function exitLike(result: { code: number | null; signal: NodeJS.Signals | null }): never {
  mark('runtime: exit');
  if (result.signal) {
    // Die of the same signal, so the caller sees what the app saw (SIGPIPE included, which
    // Node ignores unless its default action is restored).
    process.removeAllListeners(result.signal);
    restoreDefaultSignal(result.signal);
    process.kill(process.pid, result.signal);
  }
  // Only a signal whose default is not to end the process leaves us here: exit as a shell would.
  process.exit(result.code ?? 128 + (result.signal ? os.constants.signals[result.signal] : 0));
}

/**
 * A single executable honours NODE_OPTIONS (--require, --inspect, heap limits, ...) before our
 * code runs, and Node 20 has no switch against it. Options the user set are meant for the app's
 * Node, not for the process that checks the bundle, serves the mount and holds the app's data:
 * so when NODE_OPTIONS is set, this process only starts the runtime again without it (handing
 * the value over for the app) and passes signals and the exit status through.
 */
function respawnWithoutNodeOptions(): Promise<never> | null {
  const value = process.env.NODE_OPTIONS;
  if (value === undefined) return null;
  if (value.trim() === '') {
    delete process.env.NODE_OPTIONS;
    return null;
  }
  const env: NodeJS.ProcessEnv = { ...process.env, OVERPACK_APP_NODE_OPTIONS: value };
  delete env.NODE_OPTIONS;
  const detached = appDetached();
  const child = spawn(runtimeExe(), process.argv.slice(2), { stdio: 'inherit', env: relaunchEnv(env), argv0: process.argv0, detached });
  forwardSignals(child, detached);
  return new Promise<never>((_, reject) => {
    child.on('error', (err) => reject(new LaunchError(`cannot restart the runtime without NODE_OPTIONS: ${err.message}`, 70)));
    child.on('exit', (code, signal) => exitLike({ code, signal }));
  });
}

async function main(): Promise<void> {
  // NODE_OPTIONS (e.g. --require) was meant for the app's Node, not this runtime; keep it for the app only.
  const respawned = respawnWithoutNodeOptions();
  if (respawned) return respawned;
  const bundle = BUNDLE;
  const { flags, appArgs } = parseFlags(process.argv.slice(2));
  if (flags.help) {
    process.stdout.write(HELP);
    return;
  }
  const image = (() => {
    try {
      return readImage(bundle);
    } catch (err) {
      if (err instanceof ImageError) throw new LaunchError(err.message, 65);
      throw err;
    }
  })();
  // Checked again here: an index can be written by hand, not only by `overpack build`.
  const checked = validateManifest(image.index.manifest);
  if (!checked.manifest) throw new LaunchError(`${bundle}: the manifest inside this bundle is invalid:\n  ${checked.problems.join('\n  ')}\nRebuild the bundle with overpack build.`, 65);
  const manifest = checked.manifest;
  const name = safeName(manifest.name);
  reportAs = manifest.name;
  // Before anything from the bundle is extracted, loaded, mounted or run.
  let signature: SignatureState;
  try {
    signature = enforceSignature(image, bundle, signatureRequirement(manifest, flags.verifySignature), cacheHome());
  } catch (err) {
    if (err instanceof SignatureError) throw new LaunchError(err.op === 'read-key' ? err.message : `${bundle}: ${err.message}`, err.op === 'read-key' ? 2 : 65);
    throw err;
  }
  // BLAKE3 (file verification) and FUSE live in the addons: make them loadable first.
  privateDir(path.join(cacheHome(), 'overpack'));
  try {
    extractAddons(image.fd, image.index.addons);
  } catch (err) {
    if (err instanceof NoExecError) throw new LaunchError(err.message, 3);
    throw err;
  }
  const dataDir = appDataDir(bundle, manifest.name);
  // Made only by what keeps data (a preserved run, a reset), not by every launch.
  const makeDataDir = () => {
    if (dataDir === `${bundle}.data`) return;
    privateDir(path.join(dataHome(), 'overpack'));
    privateDir(dataDir);
  };
  const upperPreserved = path.join(dataDir, 'upper');
  if (flags.version) {
    const built = image.index.runtime;
    const platform = built ? `, ${built.target}, glibc >= ${built.glibc ?? 'none'}` : '';
    process.stdout.write(`${manifest.name} ${manifest.version} (overpack runtime ${RUNTIME_VERSION}, image format ${image.footer.version}, node ${process.version}${platform})\n`);
    return;
  }
  if (flags.info) {
    const info = {
      manifest,
      bundle,
      imageFormat: image.footer.version,
      indexHash: image.footer.indexHash.toString('hex'),
      files: image.tree.files,
      target: image.index.runtime?.target ?? null,
      node: process.version,
      glibc: image.index.runtime?.glibc ?? null,
      signature,
      upper: upperPreserved,
      mountRoot: path.join(cacheHome(), 'overpack', 'mnt'),
      portable: dataDir === `${bundle}.data`,
    };
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const layer = new ImageLayer(bundle, image.fd, image.tree, (p) => say(`error: ${p} in the bundle is corrupt (its content does not match the image index); the bundle is damaged, download or build it again`));
  const desktopApp = { manifest, bundle: path.resolve(bundle), indexHash: image.footer.indexHash.toString('hex') };
  const copyIcon = (iconPath: string, dest: string) => layer.copyFileTo(iconPath, dest);
  if (flags.integrate || flags.unintegrate) {
    try {
      if (flags.integrate) say(`added ${manifest.name} to the desktop menu:\n  ${(await integrate(desktopApp, copyIcon)).join('\n  ')}`);
      else {
        const removed = unintegrate(manifest.name);
        say(removed.length > 0 ? `removed ${manifest.name} from the desktop menu:\n  ${removed.join('\n  ')}` : `${manifest.name} is not in the desktop menu: nothing to remove`);
      }
    } catch (err) {
      if (err instanceof DesktopError) throw new LaunchError(err.message, 1);
      throw err;
    }
    return;
  }
  // Electron/Chromium: its sandbox needs user namespaces here (a bundle's mount is nosuid).
  // Checked only where the app is about to run (not for --overpack-extract, -mount, -reset).
  if (flags.extract === undefined && !flags.mount && !flags.reset) {
    const helper = sandboxHelperCandidates(manifest.entrypoint).find((p) => image.tree.lookup(p)?.type === 'file');
    const sandbox = helper ? sandboxProblem(helper) : null;
    if (sandbox) throw new LaunchError(sandbox, 3);
  }
  // An entry written for this app from another path or build points here from now on.
  await refreshIntegration(desktopApp, copyIcon).catch((err: unknown) => say(`warning: the desktop menu entry of ${manifest.name} could not be updated: ${(err as Error).message}`));
  if (flags.extract !== undefined) {
    const dest = path.resolve(flags.extract ?? `${name}-${manifest.version}`);
    await extractTree(layer, dest, (done, total) => done % 500 === 0 && say(`extracting ${done}/${total}`));
    say(`extracted ${manifest.name} to ${dest}`);
    return;
  }
  if (flags.reset) {
    if (!flags.yes) {
      if (!process.stdin.isTTY) throw new LaunchError(`--overpack-reset deletes ${upperPreserved}; add --overpack-yes to confirm`, 2);
      process.stderr.write(`Delete the preserved data of ${manifest.name} in ${upperPreserved}? [y/N] `);
      const answer = await new Promise<string>((resolve) => process.stdin.once('data', (d) => resolve(String(d).trim())));
      if (!/^y(es)?$/i.test(answer)) return;
    }
    makeDataDir();
    const instance = await acquireOrJoin(dataDir, 5000);
    if (instance.role === 'joiner') {
      instance.leave();
      throw new LaunchError(`${manifest.name} is running; reset it after it has exited`, 75);
    }
    fs.rmSync(upperPreserved, { recursive: true, force: true });
    instance.release();
    say(`reset ${manifest.name}: removed ${upperPreserved}`);
    return;
  }

  mark('runtime: image, manifest and addons ready');
  removeAbandonedRunDirs();
  const runDir = makeRunDir(name);
  const binDir = path.join(runDir, 'bin');
  fs.mkdirSync(binDir);
  // `node` on the app's PATH is this bundle's Node, as a plain Node (see plain-node.ts), so
  // `#!/usr/bin/env node` scripts and `node -p ...` work as with the real one; a bundle from
  // before the index recorded its runtime gets the bundle itself (scripts and -e only).
  let nodeForApp = bundle;
  try {
    nodeForApp = plainNode(image.index.executable) ?? bundle;
  } catch (err) {
    if (/SHA-256/.test((err as Error).message)) throw new LaunchError(`${bundle}: ${(err as Error).message}; the bundle is damaged, download or build it again`, 65);
    say(`warning: cannot prepare the bundle's node for the app (${(err as Error).message}); the node on its PATH runs scripts only`);
  }
  fs.symlinkSync(nodeForApp, path.join(binDir, 'node'));
  process.env.OVERPACK_NODE = nodeForApp;
  const cleanup: Array<() => void> = [() => fs.rmSync(runDir, { recursive: true, force: true })];
  const finish = () => {
    for (const f of cleanup.reverse()) {
      try {
        f();
      } catch {
        /* keep cleaning */
      }
    }
  };
  try {
    if (flags.extractAndRun || process.env.OVERPACK_EXTRACT_AND_RUN === '1') {
      const appDir = path.join(runDir, 'app');
      await extractTree(layer, appDir);
      say('running without FUSE from a temporary copy; changes the app makes are not kept');
      const result = await runApp(appDir, manifest, appArgs, bundle, binDir);
      finish();
      exitLike(result);
    }

    const discard = flags.discard || manifest.overlay?.onExit === 'discard';
    let upper = upperPreserved;
    let instance: Instance | null = null;
    if (discard) {
      upper = path.join(runDir, 'upper');
      fs.mkdirSync(upper, { mode: 0o700 });
    } else {
      makeDataDir();
      try {
        instance = await acquireOrJoin(dataDir);
      } catch (err) {
        if (err instanceof InstanceError) throw new LaunchError(err.message, 75);
        throw err;
      }
      if (instance.role === 'joiner') {
        // Another launch of this app is serving its preserved data: run inside its mount.
        const joined = instance;
        let result: { code: number | null; signal: NodeJS.Signals | null };
        try {
          if (flags.mount) {
            process.stdout.write(`${joined.mountPoint}\n`);
            await new Promise<void>((resolve) => {
              for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => resolve());
            });
            result = { code: 0, signal: null };
          } else {
            result = await runApp(joined.mountPoint, manifest, appArgs, bundle, binDir);
          }
        } finally {
          joined.leave();
        }
        finish();
        exitLike(result);
      }
      const server = instance;
      cleanup.push(() => server.release());
      // Created private; an upper made by an older runtime is tightened.
      privateDir(upper);
    }
    const mntRoot = path.join(cacheHome(), 'overpack', 'mnt');
    fs.mkdirSync(mntRoot, { recursive: true, mode: 0o700 });
    // A preserved app's mountpoint (its APPDIR) is the same at every launch, so absolute paths
    // it keeps under it stay true: one per data directory, and only the launch holding its lock
    // mounts there. A discarded run keeps nothing, and several may run at once: a name of its own.
    const mountPoint = path.join(mntRoot, discard ? `${name}-${randomBytes(4).toString('hex')}` : `${name}-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}`);
    // The app's Node starts up while we mount (held until the mount is ready, see startApp).
    const app = flags.mount ? null : startApp(mountPoint, manifest, appArgs, bundle, binDir, true);
    if (app) cleanup.push(() => app.cancel());
    await cleanStaleMounts(mntRoot);
    providePrivateFusermount(runDir);
    mark('runtime: mounting');
    // Loaded only now, after the app's process was started: the engine's modules (and
    // fs/promises) initialize while the app's Node starts up, not before it.
    const { OverlayFS, OverlayError } = await import('../overlay/index.js');
    const overlay = new OverlayFS(layer).setUpper(upper).setMountpoint(mountPoint).setInodeMode(manifest.overlay?.inodeMode ?? 'virtual');
    // Unset in the manifest, OVERPACK_FUSE_WRITEBACK=1 still turns it on (the engine's default).
    if (manifest.overlay?.writeback) overlay.setTuning({ writeback: true });
    overlay.setBinding(await bundledBinding());
    try {
      await overlay.mount();
    } catch (err) {
      if (err instanceof OverlayError && (err.code === 'NO_FUSE' || err.code === 'NO_FUSERMOUNT')) throw new LaunchError(err.message, 3);
      // The kernel or libfuse refused the mount (a /dev/fuse that is no FUSE device, a
      // container without the capability, ...): this machine's FUSE, not a bug of ours.
      if (err instanceof OverlayError && err.code === 'MOUNT_FAILED') throw new LaunchError(`${err.message}. ${FALLBACK_HINT}`, 3);
      throw err;
    }
    mark('runtime: mounted');
    await overlay.overlayAction(discard ? 'discard' : 'preserve');
    if (instance?.role === 'server') instance.announce(mountPoint);
    let result: { code: number | null; signal: NodeJS.Signals | null };
    if (flags.mount) {
      // Handlers first, then the announcement: a caller may stop us the moment it reads the path.
      const stopped = new Promise<void>((resolve) => {
        for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => resolve());
      });
      process.stdout.write(`${mountPoint}\n`);
      say(`serving ${manifest.name} at ${mountPoint}; Ctrl-C to stop`);
      await stopped;
      result = { code: 0, signal: null };
    } else {
      app!.go();
      prefetchEntrypoint(layer, manifest.entrypoint, upper);
      result = await app!.result;
    }
    mark('runtime: app exited');
    // Launches that joined this mount keep it alive until their apps are done too.
    if (instance?.role === 'server') await instance.drain();
    await overlay.umount();
    mark('runtime: unmounted');
    finish();
    exitLike(result);
  } catch (err) {
    finish();
    throw err;
  }
}

/**
 * A bundle carries one FUSE binding, our libfuse 3 addon (with its libfuse3): where it cannot
 * load (another architecture's bundle, a libc too old), that is "FUSE unavailable" with the
 * way to run without it.
 */
async function bundledBinding(): Promise<FuseBinding> {
  const { fuse3Binding } = await import('../fuse/fuse3.js');
  try {
    loadAddon();
  } catch (err) {
    throw new LaunchError(`${(err as Error).message}. ${FALLBACK_HINT}`, 3);
  }
  return fuse3Binding;
}

/** The app errors are reported as (its log file, the notification): the bundle's name until the manifest is read. */
let reportAs = path.basename(BUNDLE).replace(/\.run$/, '');

main().catch((err: unknown) => {
  const [message, code] = err instanceof LaunchError ? [err.message, err.exitCode] : [(err as Error)?.message ?? String(err), 70];
  say(`error: ${message}`);
  reportError(safeName(reportAs), message);
  process.exit(code);
});
