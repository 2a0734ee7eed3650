/**
 * The bundle's main (a Node single-executable application): find the image at the end of this
 * executable, mount the writable overlay over it, run the app inside, pass its exit status on.
 * The process that serves the mount (this one, or a mount server that lingers after the app,
 * see serve.ts) never touches the mount with synchronous calls: the app runs as a child. Where
 * another process serves it, a Node app runs in this process instead (in-process.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { childProcess, crypto } from '../builtins.js';
import { restoreDefaultSignal } from '../native/syscalls.js';
import { makeRunDir, removeAbandonedRunDirs } from './run-dir.js';
import { plainNode } from './plain-node.js';
import { BUNDLE, relaunchEnv, runtimeExe } from './self.js';
import { NoExecError } from './exec-dir.js';
import { appDetached, forwardSignals } from './signals.js';
import { readImage, ImageError } from '../image/format.js';
import { SignatureError } from '../image/signature.js';
import { ImageLayer } from '../image/image-layer.js';
import { learnEntrypoint } from './entrypoint.js';
import { extractAddons } from './addons.js';
import { extractTree } from './extract.js';
import { validateManifest } from '../manifest/validate.js';
import { enforceSignature, signatureRequirement, type SignatureState } from './trust.js';
import { cacheHome, dataHome, mountRoot, privateDir, safeName } from './paths.js';
import { mark } from './trace.js';
import { DesktopError, integrate, integrationCurrent, recordFile, refreshIntegration, unintegrate } from '../desktop/integration.js';
import type { ExpressInputs } from './express-plan.js';
import type { RuntimeRecord } from '../image/format.js';
import { reportError } from '../desktop/notify.js';
import { sandboxHelperCandidates, sandboxProblem } from '../desktop/chromium.js';
import { runApp } from './app-process.js';
import { flagsHelp, parseFlags, type Flags } from './flags.js';
import { LaunchError } from './launch-error.js';
import { say } from './say.js';
import { beginLingeringRun, HANDED_OVER, join, lingerMs, preservedMountName, runInMountServer, runJoined, serveHere, type Launch, type Outcome } from './serve.js';
import { declineServing } from './mount-server.js';
import { dropStartedServer, takeServeRequest, takeStartedServer } from './start-mount-server.js';
import type { MountRequest } from './mount.js';
import { EXIT } from '../errors/exit-codes.js';

mark('runtime: modules loaded');

const RUNTIME_VERSION = '0.1.0';

function appDataDir(bundle: string, name: string): string {
  const portable = `${bundle}.data`;
  if (fs.existsSync(portable) && fs.statSync(portable).isDirectory()) return portable;
  return path.join(dataHome(), 'overpack', safeName(name));
}

/**
 * What a mount server offers the loader for relaunches (express-plan.ts): the plain Node and a
 * bin directory of its own, in its run directory; null where the plain Node cannot be made.
 */
function expressInputs(fd: number, runtime: RuntimeRecord | undefined, runDir: string, rest: Omit<ExpressInputs, 'fd' | 'node' | 'binDir'>): ExpressInputs | null {
  let node: string | null;
  try {
    node = plainNode(runtime);
  } catch {
    return null;
  }
  if (!node) return null;
  const binDir = path.join(runDir, 'bin');
  fs.mkdirSync(binDir, { recursive: true });
  fs.symlinkSync(node, path.join(binDir, 'node'));
  return { ...rest, fd, node, binDir };
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
  const child = childProcess().spawn(runtimeExe(), process.argv.slice(2), { stdio: 'inherit', env: relaunchEnv(env), argv0: process.argv0, detached });
  forwardSignals(child, detached);
  return new Promise<never>((_, reject) => {
    child.on('error', (err) => reject(new LaunchError(`cannot restart the runtime without NODE_OPTIONS: ${err.message}`, EXIT.software)));
    child.on('exit', (code, signal) => exitLike({ code, signal }));
  });
}

async function main(): Promise<void> {
  // Set when this process was started as a mount server (start-mount-server.ts).
  const serveRequest = takeServeRequest();
  // Set when the loader started this launch's mount server already (overpack_loader.c).
  const startedServer = takeStartedServer();
  // NODE_OPTIONS (e.g. --require) was meant for the app's Node, not this runtime; keep it for the app only.
  const respawned = respawnWithoutNodeOptions();
  if (respawned) return respawned;
  const bundle = BUNDLE;
  const { flags, appArgs, from } = parseFlags(process.argv.slice(2));
  if (flags.help) {
    process.stdout.write(flagsHelp());
    return;
  }
  const image = (() => {
    try {
      return readImage(bundle);
    } catch (err) {
      if (err instanceof ImageError) throw new LaunchError(err.message, EXIT.dataError);
      throw err;
    }
  })();
  // Checked again here: an index can be written by hand, not only by `overpack build`.
  const checked = validateManifest(image.index.manifest);
  if (!checked.manifest) throw new LaunchError(`${bundle}: the manifest inside this bundle is invalid:\n  ${checked.problems.join('\n  ')}\nRebuild the bundle with overpack build.`, EXIT.dataError);
  const manifest = checked.manifest;
  const name = safeName(manifest.name);
  reportAs = manifest.name;
  // Before anything from the bundle is extracted, loaded, mounted or run.
  let signature: SignatureState;
  try {
    signature = enforceSignature(image, bundle, signatureRequirement(manifest, flags['verify-signature'], from['verify-signature']), cacheHome());
  } catch (err) {
    if (err instanceof SignatureError) throw new LaunchError(err.op === 'read-key' ? err.message : `${bundle}: ${err.message}`, err.op === 'read-key' ? EXIT.usage : EXIT.dataError);
    throw err;
  }
  // BLAKE3 (file verification) and FUSE live in the addons: make them loadable first.
  privateDir(path.join(cacheHome(), 'overpack'));
  try {
    extractAddons(image.fd, image.index.addons);
  } catch (err) {
    if (err instanceof NoExecError) throw new LaunchError(err.message, EXIT.unavailable);
    throw err;
  }
  if (!flags.update && (flags['update-from'] !== undefined || flags['accept-key'] !== undefined || flags.channel !== undefined || flags['allow-downgrade'])) throw new LaunchError('--overpack-update-from, --overpack-accept-key, --overpack-channel and --overpack-allow-downgrade go with --overpack-update', EXIT.usage);
  if (flags.update || flags.check) {
    await updateSelf(bundle, flags);
    return;
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
  // A damaged entrypoint is reported when the app reads it; here it only counts as no Node script.
  await learnEntrypoint(manifest, layer).catch(() => undefined);
  if (serveRequest) {
    // This process is the mount server a launch of this bundle started (mount-server.ts).
    const build = image.footer.indexHash.toString('hex');
    if (serveRequest.build !== null && serveRequest.build !== build) throw new LaunchError(`${bundle} was replaced while it was starting; launch it again`, EXIT.tempFail);
    // Started by the loader ahead of the launch: it serves only where the launch would want it.
    const lingerFor = serveRequest.lingerMs ?? (manifest.overlay?.onExit === 'discard' ? 0 : lingerMs(manifest));
    if (lingerFor === 0) return declineServing('this app does not linger: no mount server needed');
    const { serveDetached } = await import('./mount-server.js');
    const runDir = makeRunDir(name);
    const mountPoint = path.join(mountRoot(), preservedMountName(name, dataDir));
    const req = { layer, upper: upperPreserved, mountPoint, inodeMode: manifest.overlay?.inodeMode ?? 'virtual', writeback: manifest.overlay?.writeback === true, passthrough: manifest.overlay?.passthrough === true, discard: false, runDir } satisfies MountRequest;
    makeDataDir();
    try {
      // A desktop entry a launch would still refresh (another path or build): no express relaunch
      // until one has (the record is watched: the plan holds only while it stays as it is now).
      const current = integrationCurrent({ manifest, bundle: path.resolve(bundle), indexHash: build });
      const express = current ? expressInputs(image.fd, image.index.executable, runDir, { bundle, manifest, dataDir, portable: dataDir === `${bundle}.data`, dataHome: dataHome(), mountPoint, watched: [recordFile(manifest.name)] }) : null;
      const code = await serveDetached({ ...req, dataDir, build, lingerMs: lingerFor, express });
      fs.rmSync(runDir, { recursive: true, force: true });
      process.exit(code);
    } catch (err) {
      fs.rmSync(runDir, { recursive: true, force: true });
      throw err;
    }
  }
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
      if (err instanceof DesktopError) throw new LaunchError(err.message, EXIT.failed);
      throw err;
    }
    return;
  }
  // Electron/Chromium: its sandbox needs user namespaces here (a bundle's mount is nosuid).
  // Checked only where the app is about to run (not for --overpack-extract, -mount, -reset).
  if (flags.extract === undefined && !flags.mount && !flags.reset) {
    const helper = sandboxHelperCandidates(manifest.entrypoint).find((p) => image.tree.lookup(p)?.type === 'file');
    const sandbox = helper ? sandboxProblem(helper) : null;
    if (sandbox) throw new LaunchError(sandbox, EXIT.unavailable);
  }
  // An entry written for this app from another path or build points here from now on.
  const discard = flags.discard || manifest.overlay?.onExit === 'discard';
  const build = image.footer.indexHash.toString('hex');
  const runsApp = flags.extract === undefined && !flags.reset && !flags.mount && !flags['extract-and-run'];
  // A run in a lingering mount (serve.ts) joins its server, or starts one now: the server's
  // start-up overlaps the rest of ours.
  const linger = runsApp && !discard ? lingerMs(manifest) : 0;
  const lingering = linger > 0 ? await beginLingeringRun(dataDir, build, linger, makeDataDir, startedServer) : null;
  if (!lingering) dropStartedServer(startedServer);
  await refreshIntegration(desktopApp, copyIcon).catch((err: unknown) => say(`warning: the desktop menu entry of ${manifest.name} could not be updated: ${(err as Error).message}`));
  if (flags.extract !== undefined) {
    const dest = path.resolve(flags.extract ?? `${name}-${manifest.version}`);
    await extractTree(layer, dest, (done, total) => done % 500 === 0 && say(`extracting ${done}/${total}`));
    say(`extracted ${manifest.name} to ${dest}`);
    return;
  }
  if (flags.reset) {
    if (!flags.yes) {
      if (!process.stdin.isTTY) throw new LaunchError(`--overpack-reset deletes ${upperPreserved}; add --overpack-yes to confirm`, EXIT.usage);
      process.stderr.write(`Delete the preserved data of ${manifest.name} in ${upperPreserved}? [y/N] `);
      const answer = await new Promise<string>((resolve) => process.stdin.once('data', (d) => resolve(String(d).trim())));
      if (!/^y(es)?$/i.test(answer)) return;
    }
    makeDataDir();
    // An idle mount server of the app is stopped first; a running app is not interrupted.
    const instance = await join(dataDir, { build: image.footer.indexHash.toString('hex'), serve: true, stopIdle: true, timeoutMs: 5000 }).catch((err: unknown) => {
      throw err instanceof LaunchError ? new LaunchError(`${manifest.name} is running; reset it after it has exited (${err.message})`, EXIT.tempFail) : err;
    });
    if (instance?.role !== 'server') throw new LaunchError(`${manifest.name} is running; reset it after it has exited`, EXIT.tempFail);
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
    if (/SHA-256/.test((err as Error).message)) throw new LaunchError(`${bundle}: ${(err as Error).message}; the bundle is damaged, download or build it again`, EXIT.dataError);
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
    if (flags['extract-and-run']) {
      const appDir = path.join(runDir, 'app');
      await extractTree(layer, appDir);
      say('running without FUSE from a temporary copy; changes the app makes are not kept');
      const result = await runApp(appDir, manifest, appArgs, bundle, binDir);
      finish();
      exitLike(result);
    }

    const mntRoot = mountRoot();
    // A preserved app's mountpoint (its APPDIR) is the same at every launch, so absolute paths
    // it keeps under it stay true: one per data directory, and only the server holding its lock
    // mounts there. A discarded run keeps nothing, and several may run at once: a name of its own.
    const mountPoint = path.join(mntRoot, discard ? `${name}-${crypto().randomBytes(4).toString('hex')}` : preservedMountName(name, dataDir));
    const mountRequest = (upper: string): MountRequest => ({ layer, upper, mountPoint, inodeMode: manifest.overlay?.inodeMode ?? 'virtual', writeback: manifest.overlay?.writeback === true, passthrough: manifest.overlay?.passthrough ?? flags.mount, discard, runDir });
    const launch: Launch = { manifest, appArgs, bundle, binDir, mount: flags.mount, cleanup };
    let result: Outcome;
    if (discard) {
      const upper = path.join(runDir, 'upper');
      fs.mkdirSync(upper, { mode: 0o700 });
      result = await serveHere(launch, mountRequest(upper), null);
    } else {
      makeDataDir();
      if (lingering) {
        result = await runInMountServer(launch, { dataDir, build, mountPoint, lingerMs: linger }, lingering);
      } else {
        const instance = await join(dataDir, { build, serve: true });
        if (instance?.role === 'joiner') {
          result = await runJoined(launch, instance);
        } else {
          const server = instance!;
          cleanup.push(() => server.release());
          // Created private; an upper made by an older runtime is tightened.
          privateDir(upperPreserved);
          result = await serveHere(launch, mountRequest(upperPreserved), server);
        }
      }
    }
    if (result === HANDED_OVER) {
      // The app runs in this process now (in-process.ts): its exit is ours, the clean-up too.
      fs.closeSync(image.fd);
      process.once('exit', finish);
      return;
    }
    finish();
    exitLike(result);
  } catch (err) {
    finish();
    throw err;
  }
}


/**
 * --overpack-update: this bundle's file is replaced by the new version (the running process
 * keeps the old inode). Nothing is mounted or run; the app's data is not touched.
 */
async function updateSelf(bundle: string, flags: Flags): Promise<void> {
  if (flags.check && !flags.update) throw new LaunchError('--overpack-check goes with --overpack-update: --overpack-update --overpack-check', EXIT.usage);
  const [{ runUpdate }, { UpdateError }] = await Promise.all([import('../update/update.js'), import('../update/errors.js')]);
  const confirm = flags.yes || flags.check ? undefined : async (question: string): Promise<boolean> => {
    if (!process.stdin.isTTY) throw new LaunchError(`${question.replace(/\?$/, '')}: add --overpack-yes to confirm`, EXIT.usage);
    process.stderr.write(`${question} [y/N] `);
    const answer = await new Promise<string>((resolve) => process.stdin.once('data', (d) => resolve(String(d).trim())));
    process.stdin.pause();
    return /^y(es)?$/i.test(answer);
  };
  try {
    const r = await runUpdate({ bundle, from: flags['update-from'], channel: flags.channel, check: flags.check, acceptKey: flags['accept-key'], allowDowngrade: flags['allow-downgrade'], confirm, say });
    if (flags.check) process.exitCode = r.state === 'available' ? EXIT.ok : EXIT.failed;
  } catch (err) {
    if (err instanceof UpdateError) throw new LaunchError(err.message, err.exitCode);
    throw err;
  }
}

/** The app errors are reported as (its log file, the notification): the bundle's name until the manifest is read. */
let reportAs = path.basename(BUNDLE).replace(/\.run$/, '');

main().catch((err: unknown) => {
  const [message, code] = err instanceof LaunchError ? [err.message, err.exitCode] : [(err as Error)?.message ?? String(err), EXIT.software];
  say(`error: ${message}`);
  reportError(safeName(reportAs), message);
  process.exit(code);
});
