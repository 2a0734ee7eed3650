/**
 * OverlayFS: the public controller, shaped like the overlayfs_fuse crate. Configure, mount,
 * use the mountpoint (from other processes or async calls: never sync calls from this
 * process, which serves the mount), unmount, then decide what happens to the changes.
 *
 *   const fs = new OverlayFS('/srv/base').setInodeMode('persistent');
 *   await fs.mount();                 // upper: /srv/base_upper, mountpoint: $TMPDIR/mount_base_<id>_<ts>
 *   fs.handle().mountPoint;
 *   await fs.umount();
 *   await fs.overlayAction('commit');
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import type { FuseBinding, MountedFs } from '../fuse/binding.js';
import { detachMount, isMounted, isStaleMount } from '../fuse/unmount.js';
import { checkFuse } from '../fuse/preflight.js';
import { chooseBinding, UnknownBindingError } from '../fuse/registry.js';
import { DirLayer } from '../overlay/dir-layer.js';
import { OverlayError } from '../overlay/errors.js';
import { finalizeUpper, type FinalizeResult, type OverlayAction } from '../overlay/finalize.js';
import { INODE_MODES, InodeStore, type InodeMode } from '../overlay/inodes.js';
import type { Layer } from '../overlay/layer.js';
import { LayerStack } from '../overlay/layer-stack.js';
import { OverlayOps } from '../overlay/operations.js';
import { recoverCommit } from '../overlay/commit.js';

export interface OverlayHandle {
  readonly mountPoint: string;
  readonly upper: string;
  /** The lower directory, or the lower layer's description when it is not a directory. */
  readonly lower: string;
  /** The FUSE binding serving the mount (`fuse3` or `fuse-native`); null while unmounted. */
  readonly binding: string | null;
}

/**
 * How long the kernel may trust attributes, lookups and misses. Every change goes through the
 * mount, so the kernel's caches stay right; the one exception is a hard-linked file written
 * through one name, whose other names (separate nodes in libfuse 2) see it after this delay.
 */
export const DEFAULT_CACHE_SECONDS = 30;

export interface MountTuning {
  /** Seconds the kernel may cache attributes, lookups and misses; 0 turns caching off. */
  cacheTimeout?: number;
  /**
   * The kernel's writeback cache (fuse3 binding): writes are merged in the page cache and
   * sent in large requests. Off by default, for what it costs (README, FUSE bindings);
   * `OVERPACK_FUSE_WRITEBACK=1` turns it on where this is not set.
   */
  writeback?: boolean;
  /**
   * FUSE passthrough (fuse3 binding, a server with CAP_SYS_ADMIN, Linux >= 6.9): the kernel
   * reads and writes upper files itself, with no request per READ or WRITE; every open and
   * close then costs a request (answered in C). On by default; `OVERPACK_FUSE_PASSTHROUGH=0`
   * or `=1` overrides this setting.
   */
  passthrough?: boolean;
  debug?: boolean;
}

const FUSE_CONF = '/etc/fuse.conf';

/** An environment variable that forces a setting: "0" off, "1" on, anything else leaves it. */
function envSwitch(value: string | undefined): boolean | undefined {
  return value === '0' ? false : value === '1' ? true : undefined;
}

/** Whether fusermount lets users ask for allow_other (a `user_allow_other` line in fuse.conf). */
function userAllowOther(): boolean {
  try {
    return readFileSync(FUSE_CONF, 'utf8').split('\n').some((l) => l.replace(/#.*/, '').trim() === 'user_allow_other');
  } catch {
    return false;
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The binding to mount with when none was set; an unknown OVERPACK_FUSE_BINDING is a MOUNT_FAILED. */
async function defaultBinding(): Promise<FuseBinding> {
  try {
    return await chooseBinding();
  } catch (err) {
    if (err instanceof UnknownBindingError) throw new OverlayError('MOUNT_FAILED', 'mount', '', err.message);
    throw err;
  }
}

export class OverlayFS {
  private readonly lowerLayer: Layer;
  private readonly lowerDir: string | null;
  private upper: string | null;
  private mountPointPath: string | null = null;
  private asHome = false;
  private inodeMode: InodeMode = 'virtual';
  private binding: FuseBinding | null = null;
  private servedBy: string | null = null;
  private tuning: MountTuning = {};
  private allowOthers = false;
  private pendingAction: OverlayAction | null = null;
  private mounted: MountedFs | null = null;
  private ops: OverlayOps | null = null;
  private createdMountPoint = false;
  private readonly id = randomBytes(4).toString('hex');
  private readonly onExit = () => this.emergencyUnmount();

  /** `lower` is a directory path or any read-only `Layer` (such as a bundle's image). */
  constructor(lower: string | Layer) {
    if (typeof lower === 'string') {
      this.lowerDir = path.resolve(lower);
      this.lowerLayer = new DirLayer(this.lowerDir);
      this.upper = `${this.lowerDir}_upper`;
    } else {
      this.lowerDir = null;
      this.lowerLayer = lower;
      this.upper = null;
    }
  }

  private assertUnmounted(op: string): void {
    if (this.mounted) {
      throw new OverlayError('ALREADY_MOUNTED', op, this.mountPointPath ?? '', `${op}() cannot be called while mounted at ${this.mountPointPath}; call umount() first`);
    }
  }

  setUpper(dir: string): this {
    this.assertUnmounted('setUpper');
    this.upper = path.resolve(dir);
    return this;
  }

  /** Mount at this directory instead of a generated one (created if missing). */
  setMountpoint(dir: string): this {
    this.assertUnmounted('setMountpoint');
    this.mountPointPath = path.resolve(dir);
    return this;
  }

  setInodeMode(mode: InodeMode): this {
    this.assertUnmounted('setInodeMode');
    if (!INODE_MODES.includes(mode)) {
      throw new OverlayError('BAD_UPPER', 'setInodeMode', '', `inode mode must be ${INODE_MODES.map((m) => `"${m}"`).join(' or ')}, not "${String(mode)}"`);
    }
    this.inodeMode = mode;
    return this;
  }

  /** Generated mountpoints go to ~/.cache instead of the temp dir. */
  mountpointAsHome(): this {
    this.assertUnmounted('mountpointAsHome');
    this.asHome = true;
    return this;
  }

  setBinding(binding: FuseBinding): this {
    this.assertUnmounted('setBinding');
    this.binding = binding;
    return this;
  }

  /**
   * Let other users (root and services included) use the mount, with the kernel checking
   * permissions as on any filesystem. Off by default: a mount is then its owner's alone. An
   * unprivileged owner needs `user_allow_other` in /etc/fuse.conf.
   */
  allowOther(allow = true): this {
    this.assertUnmounted('allowOther');
    this.allowOthers = allow;
    return this;
  }

  setTuning(tuning: MountTuning): this {
    this.assertUnmounted('setTuning');
    this.tuning = { ...tuning };
    return this;
  }

  isMounted(): boolean {
    return this.mounted !== null;
  }

  handle(): OverlayHandle {
    return {
      mountPoint: this.mountPointPath ?? this.generatedMountPoint(),
      upper: this.upper ?? '',
      lower: this.lowerDir ?? this.lowerLayer.description,
      binding: this.mounted ? this.servedBy : null,
    };
  }

  private generatedMountPoint(): string {
    const base = this.asHome ? path.join(homedir(), '.cache') : tmpdir();
    const dir = this.lowerDir ? path.basename(this.lowerDir) : 'layer';
    const ts = BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
    this.mountPointPath = path.join(base, `mount_${dir}_${this.id}_${ts}`);
    return this.mountPointPath;
  }

  /** Checks everything that can be checked before touching the disk. */
  private validate(): { upper: string; mountPoint: string } {
    if (this.lowerDir !== null) {
      let st;
      try {
        st = statSync(this.lowerDir);
      } catch {
        throw new OverlayError('BAD_LOWER', 'mount', this.lowerDir, `lower directory ${this.lowerDir} does not exist`);
      }
      if (!st.isDirectory()) throw new OverlayError('BAD_LOWER', 'mount', this.lowerDir, `lower ${this.lowerDir} is not a directory`);
    }
    const upper = this.upper;
    if (!upper) throw new OverlayError('BAD_UPPER', 'mount', '', 'this lower is not a directory, so the upper has no default: call setUpper()');
    if (existsSync(upper) && !statSync(upper).isDirectory()) {
      throw new OverlayError('BAD_UPPER', 'mount', upper, `upper ${upper} exists and is not a directory`);
    }
    const mountPoint = this.mountPointPath ?? this.generatedMountPoint();
    if (this.lowerDir !== null) {
      if (isInside(upper, this.lowerDir) || isInside(this.lowerDir, upper)) {
        throw new OverlayError('BAD_UPPER', 'mount', upper, `upper ${upper} and lower ${this.lowerDir} must not contain each other`);
      }
      if (isInside(mountPoint, this.lowerDir)) {
        throw new OverlayError('BAD_MOUNTPOINT', 'mount', mountPoint, `mountpoint ${mountPoint} must not be inside the lower ${this.lowerDir}`);
      }
    }
    if (isInside(mountPoint, upper) || isInside(upper, mountPoint)) {
      throw new OverlayError('BAD_MOUNTPOINT', 'mount', mountPoint, `mountpoint ${mountPoint} and upper ${upper} must not contain each other`);
    }
    if (existsSync(mountPoint)) {
      if (isMounted(mountPoint)) {
        throw new OverlayError('MOUNTPOINT_BUSY', 'mount', mountPoint, `${mountPoint} is already a mountpoint; unmount it first (overpack umount ${mountPoint})`);
      }
      if (!statSync(mountPoint).isDirectory()) {
        throw new OverlayError('BAD_MOUNTPOINT', 'mount', mountPoint, `mountpoint ${mountPoint} is not a directory`);
      }
      if (readdirSync(mountPoint).length > 0) {
        throw new OverlayError('MOUNTPOINT_BUSY', 'mount', mountPoint, `mountpoint ${mountPoint} is not empty; choose an empty directory`);
      }
    }
    const problem = checkFuse();
    if (problem) throw new OverlayError(problem.code, 'mount', '/dev/fuse', problem.message);
    if (this.allowOthers && process.getuid?.() !== 0 && !userAllowOther()) {
      throw new OverlayError(
        'NO_ALLOW_OTHER', 'mount', FUSE_CONF,
        `allow_other needs "user_allow_other" in ${FUSE_CONF} for a mount made by a user other than root; ask an administrator to add that line, or mount without --allow-other (the mount is then yours alone)`,
      );
    }
    return { upper, mountPoint };
  }

  async mount(): Promise<void> {
    this.assertUnmounted('mount');
    const target = this.mountPointPath;
    if (target !== null && isMounted(target) && (await isStaleMount(target))) {
      // A server that was killed leaves its mount behind, answering ENOTCONN: clean it up.
      detachMount(target);
    }
    const { upper, mountPoint } = this.validate();
    if (this.lowerDir !== null) {
      // An interrupted commit-atomic leaves the lower old or new; finish or undo it first.
      const recovered = await recoverCommit(this.lowerDir);
      if (recovered !== 'none') process.stderr.write(`overpack: an interrupted commit of ${this.lowerDir} was ${recovered === 'completed' ? 'completed' : 'rolled back'}\n`);
    }
    const binding = this.binding ?? (await defaultBinding());
    const upperExisted = existsSync(upper);
    this.createdMountPoint = !existsSync(mountPoint);
    const stack = new LayerStack(this.lowerLayer, upper);
    try {
      if (this.createdMountPoint) mkdirSync(mountPoint, { recursive: true, mode: 0o700 });
      await stack.init();
      const ops = new OverlayOps(stack, new InodeStore(this.inodeMode));
      const cache = this.tuning.cacheTimeout ?? DEFAULT_CACHE_SECONDS;
      this.mounted = await binding.mount(mountPoint, ops, {
        fsName: `overpack:${this.lowerDir ?? this.lowerLayer.description}`,
        attrTimeout: cache,
        entryTimeout: cache,
        negativeTimeout: cache,
        allowOther: this.allowOthers,
        writeback: this.tuning.writeback ?? process.env.OVERPACK_FUSE_WRITEBACK === '1',
        passthrough: envSwitch(process.env.OVERPACK_FUSE_PASSTHROUGH) ?? this.tuning.passthrough ?? true,
        debug: this.tuning.debug ?? false,
      });
      this.ops = ops;
      this.servedBy = binding.name;
    } catch (err) {
      // Leave the disk as it was found.
      if (!upperExisted) await fsp.rm(upper, { recursive: true, force: true }).catch(() => undefined);
      else await fsp.rm(stack.upper.workDir, { recursive: true, force: true }).catch(() => undefined);
      if (this.createdMountPoint) await fsp.rmdir(mountPoint).catch(() => undefined);
      if (err instanceof OverlayError) throw err;
      throw new OverlayError('MOUNT_FAILED', 'mount', mountPoint, `cannot mount the overlay at ${mountPoint}: ${(err as Error).message}`, { cause: err });
    }
    process.on('exit', this.onExit);
  }

  /** Unmounts, removes a mountpoint it created, then applies an action chosen with overlayAction(). */
  async umount(): Promise<FinalizeResult | null> {
    const mounted = this.mounted;
    if (!mounted) throw new OverlayError('NOT_MOUNTED', 'umount', this.mountPointPath ?? '', 'the overlay is not mounted');
    try {
      await mounted.unmount();
    } catch (err) {
      throw new OverlayError('UNMOUNT_FAILED', 'umount', mounted.mountPoint, `cannot unmount ${mounted.mountPoint}: ${(err as Error).message}`, { cause: err });
    }
    this.mounted = null;
    process.off('exit', this.onExit);
    await this.ops?.closeAll();
    this.ops = null;
    if (this.createdMountPoint) await fsp.rmdir(mounted.mountPoint).catch(() => undefined);
    const action = this.pendingAction;
    this.pendingAction = null;
    return action ? this.overlayAction(action) : null;
  }

  /**
   * While mounted: remember `action` for umount(). Unmounted: apply it now (as the crate's
   * overlay_action does after umount).
   */
  async overlayAction(action: OverlayAction): Promise<FinalizeResult | null> {
    if (this.mounted) {
      this.pendingAction = action;
      return null;
    }
    if (!this.upper) throw new OverlayError('BAD_UPPER', action, '', 'no upper layer is configured');
    return finalizeUpper(action, this.lowerDir, this.upper);
  }

  /** Normal process exit while still mounted: detach the mount so nothing stale is left. */
  private emergencyUnmount(): void {
    const mp = this.mounted?.mountPoint;
    if (!mp) return;
    detachMount(mp);
    if (this.createdMountPoint) {
      try {
        rmdirSync(mp);
      } catch {
        /* best effort at exit */
      }
    }
  }
}
