/**
 * What a FUSE binding is: it serves a filesystem's `FsOps` (runtime/vfs/ops.ts) on a
 * mountpoint. Two implement it: our libfuse 3 addon (`fuse3.ts`) and fuse-native
 * (`fuse-native.ts`).
 */
import type { FsOps } from '../vfs/index.js';

export interface MountOptions {
  /** Shown in /proc/mounts as the source. */
  fsName: string;
  /** Seconds the kernel may cache attributes and lookups (0 disables caching). */
  attrTimeout: number;
  entryTimeout: number;
  negativeTimeout: number;
  /** Let other users (root included) use the mount; the kernel checks modes (default_permissions). */
  allowOther?: boolean;
  /** The kernel's writeback cache (fuse3 only; README, FUSE bindings, says what it costs). */
  writeback?: boolean;
  /** FUSE passthrough of upper files where the kernel and the server's privileges allow it (fuse3 only; README, FUSE bindings). */
  passthrough?: boolean;
  debug?: boolean;
}

export interface MountedFs {
  readonly mountPoint: string;
  /** Unmounts (lazily if busy) and stops serving. Idempotent. */
  unmount(): Promise<void>;
}

export interface FuseBinding {
  readonly name: string;
  /** Whether this binding's native part can be loaded here (without mounting anything). */
  available(): boolean;
  mount(mountPoint: string, ops: FsOps, options: MountOptions): Promise<MountedFs>;
}
