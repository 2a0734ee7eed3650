/**
 * Mounting a bundle's overlay: the steps every server of a mount takes, whether it is the
 * launch itself or a detached mount server (mount-server.ts). Loaded after the app's process
 * was started: the engine's modules initialize while the app's Node starts up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FALLBACK_HINT, provideFusermount } from '../fuse/preflight.js';
import { detachMount, isMounted, isStaleMount } from '../fuse/unmount.js';
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
  /** FUSE passthrough (the manifest's overlay.passthrough; on for --overpack-mount): see MountTuning. */
  passthrough: boolean;
  discard: boolean;
  /** This run's private directory (for a fusermount link, see provideFusermount). */
  runDir: string;
}

/** Mounts the overlay of the image under `upper` at `mountPoint`; errors of this machine's FUSE are exit 3. */
export async function mountOverlay(req: MountRequest): Promise<OverlayFS> {
  const mntRoot = path.dirname(req.mountPoint);
  fs.mkdirSync(mntRoot, { recursive: true, mode: 0o700 });
  await cleanStaleMounts(mntRoot);
  provideFusermount(path.join(req.runDir, 'fusermount'));
  mark('runtime: mounting');
  const overlay = new OverlayFS(req.layer).setUpper(req.upper).setMountpoint(req.mountPoint).setInodeMode(req.inodeMode);
  overlay.setTuning({ ...(req.writeback ? { writeback: true } : {}), passthrough: req.passthrough });
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
    if (await isStaleMount(mp)) {
      detachMount(mp);
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
