/**
 * Mounting a bundle's overlay: the steps every server of a mount takes, whether it is the
 * launch itself or a detached mount server (mount-server.ts). Loaded after the app's process
 * was started: the engine's modules initialize while the app's Node starts up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { FALLBACK_HINT } from '../fuse/preflight.js';
import { isMounted } from '../fuse/unmount.js';
import { loadAddon } from '../native/addon.js';
import type { FuseBinding } from '../fuse/binding.js';
import type { ImageLayer } from '../image/image-layer.js';
import { OverlayFS } from '../mount/overlayfs.js';
import { OverlayError, type InodeMode } from '../overlay/index.js';
import { LaunchError } from './launch-error.js';
import { mark } from './trace.js';
import { EXIT } from '../errors/exit-codes.js';

export interface MountRequest {
  layer: ImageLayer;
  upper: string;
  mountPoint: string;
  inodeMode: InodeMode;
  /** The manifest's overlay.writeback; false leaves it to OVERPACK_FUSE_WRITEBACK (the engine's default). */
  writeback: boolean;
  discard: boolean;
  /** This run's private directory (for a fusermount link, see providePrivateFusermount). */
  runDir: string;
}

/** Mounts the overlay of the image under `upper` at `mountPoint`; errors of this machine's FUSE are exit 3. */
export async function mountOverlay(req: MountRequest): Promise<OverlayFS> {
  const mntRoot = path.dirname(req.mountPoint);
  fs.mkdirSync(mntRoot, { recursive: true, mode: 0o700 });
  await cleanStaleMounts(mntRoot);
  providePrivateFusermount(req.runDir);
  mark('runtime: mounting');
  const overlay = new OverlayFS(req.layer).setUpper(req.upper).setMountpoint(req.mountPoint).setInodeMode(req.inodeMode);
  if (req.writeback) overlay.setTuning({ writeback: true });
  overlay.setBinding(await bundledBinding());
  try {
    await overlay.mount();
  } catch (err) {
    if (err instanceof OverlayError && (err.code === 'NO_FUSE' || err.code === 'NO_FUSERMOUNT')) throw new LaunchError(err.message, EXIT.unavailable);
    // The kernel or libfuse refused the mount (a /dev/fuse that is no FUSE device, a
    // container without the capability, ...): this machine's FUSE, not a bug of ours.
    if (err instanceof OverlayError && err.code === 'MOUNT_FAILED') throw new LaunchError(`${err.message}. ${FALLBACK_HINT}`, EXIT.unavailable);
    throw err;
  }
  mark('runtime: mounted');
  await overlay.overlayAction(req.discard ? 'discard' : 'preserve');
  return overlay;
}

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
    throw new LaunchError(`${(err as Error).message}. ${FALLBACK_HINT}`, EXIT.unavailable);
  }
  return fuse3Binding;
}
