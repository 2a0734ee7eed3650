/**
 * Our N-API addon (`runtime/fuse/lowlevel/overpack_fuse3.c`): the libfuse 3 binding and the few
 * system calls Node lacks. Loaded from the bundle (the launcher extracts it) or from
 * `dist/native/<platform>/` (development, library use). Its functions are typed here, once; the
 * FUSE binding (`runtime/fuse/fuse3*.ts`) and the engine's system calls (`syscalls.ts`) use them.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { bundledAddon, hasBundledAddons } from './bundled.js';
import { nativeDir, NativeAddonError } from './dirs.js';

export const FUSE3_ADDON = 'overpack-fuse3.node';
export const LIBFUSE3 = 'libfuse3.so.3';
/** The image's zstd (codec.c links it; shipped beside the addon like libfuse 3). */
export const LIBZSTD = 'libzstd.so.1';
/** Not an addon: the program the launcher starts the app through (overpack_exec.c). */
export const EXEC_HELPER = 'overpack-exec';

export type Req = number;
export interface Session {
  readonly __session: unique symbol;
}

/** The addon's functions (see the C file for each one's contract). */
export interface OverpackAddon {
  mount(mountPoint: string, args: string[], dispatcher: (op: number, req: Req, ...args: unknown[]) => void, maxWrite: number, flags: number): Session;
  close(s: Session): void;
  replyErr(req: Req, errno: number): number;
  replyEntry(req: Req, nodeid: number, attr: Float64Array, entryTimeout: number, attrTimeout: number): number;
  /** Under passthrough the open is passed through to `passthroughFd` (-1: cached by the kernel), and fh and openFlags are unused. */
  replyCreate(req: Req, nodeid: number, attr: Float64Array, entryTimeout: number, attrTimeout: number, fh: number, openFlags: number, passthroughFd: number): number;
  /** An OPEN the addon sent under passthrough: passed through to the upper descriptor `fd`, or cached (-1). */
  replyOpen(req: Req, ino: number, fd: number): number;
  /** [mode, opens passed through]: mode 0 zero-message opens, 1 passthrough, 2 asked for but refused by the kernel. */
  passthroughState(s: Session): [number, number];
  replyAttr(req: Req, attr: Float64Array, timeout: number): number;
  replyFd(req: Req, fd: number, size: number, offset: number): number;
  replyBuf(req: Req, buf: Buffer, length: number): number;
  replyWrite(req: Req, count: number): number;
  replyXattrSize(req: Req, size: number): number;
  replyReadlink(req: Req, target: string): number;
  replyStatfs(req: Req, values: Float64Array): number;
  replyDir(req: Req, size: number, base: number, names: string[], attrs: Float64Array, nodeids: Float64Array, plus: boolean, entryTimeout: number, attrTimeout: number): number;
  replyLseek(req: Req, offset: number): number;
  /** Drops the kernel's cached attributes of a node (not its pages). */
  invalInode(s: Session, ino: number): number;
  /** Remembers that node `ino` has no security.capability: the addon answers the kernel's next asks itself. */
  noCapability(s: Session, ino: number): void;
  /** READs (and WRITEs, if `writable`) of node `ino` through handle `fh` (0: handle-less) are answered from `fd` by the addon itself (fuse3_direct.c). */
  directFd(s: Session, ino: number, fh: number, fd: number, writable: boolean): void;
  /** No request may use `fd` any more: called before it is closed. */
  forgetDirect(s: Session, fd: number): void;
  /** READs and WRITEs the addon answered itself: [reads, writes]. */
  directCounts(s: Session): [number, number];
  /**
   * LOOKUPs under directory `dir` are answered by the addon from this listing (fuse3_entries.c):
   * every entry's name, node id and attributes (packed as packAttr does). 0, or -1 (not lent).
   */
  lendDir(s: Session, dir: number, names: string[], nodeids: Float64Array, attrs: Float64Array, entryTimeout: number, attrTimeout: number, negativeTimeout: number): number;
  /** Takes every lent listing back: [nodeid, lookups] pairs of the lookups the addon answered and the kernel still holds. */
  reclaimEntries(s: Session): Float64Array;
  /** LOOKUPs the addon answered from lent listings: [with an entry, with "no such entry"]. */
  lentCounts(s: Session): [number, number];
  libfuseVersion(): number;
  /** Copies by the kernel on a worker thread; `done` gets 0 or an errno, and the bytes copied (fewer: the source ended). */
  copyRange(inFd: number, inOffset: number, outFd: number, outOffset: number, length: number, done: (errno: number, copied: number) => void): void;
  /** 0 or a positive errno. */
  mknod(path: string, mode: number, rdev: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  /** The new offset, or a negative errno. */
  seek(fd: number, offset: number, whence: number): number;
  utimens(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): number;
  /** Restores a signal's default action and unblocks it; 0 or a positive errno. */
  defaultSignal(signo: number): number;
  /** One zstd frame of `src` that records its size (and with `checksum`, zstd's checksum). */
  zstdCompress(src: Buffer, level: number, checksum?: boolean): Buffer;
  /** 0 when `src` inflates to exactly `dst.length` bytes (written into dst); -1 not such a frame; -2 damaged. */
  zstdDecompress(src: Buffer, dst: Buffer): number;
  readonly UTIME_NOW: number;
  readonly UTIME_OMIT: number;
}

let addon: OverpackAddon | undefined;

/** Loads the addon once; throws NativeAddonError naming the file and what to do. */
export function loadAddon(): OverpackAddon {
  if (addon) return addon;
  if (hasBundledAddons()) {
    try {
      addon = bundledAddon(FUSE3_ADDON) as unknown as OverpackAddon;
    } catch (err) {
      throw new NativeAddonError(`this bundle carries no usable libfuse 3 addon: ${(err as Error).message}`, FUSE3_ADDON);
    }
    return addon;
  }
  const file = path.join(nativeDir(), FUSE3_ADDON);
  if (!existsSync(file)) {
    throw new NativeAddonError(
      `the libfuse 3 addon is not built (${file} is missing). Run \`npm run build\`; it needs the Debian package libfuse3-dev. Or use OVERPACK_FUSE_BINDING=fuse-native.`,
      file,
    );
  }
  try {
    addon = createRequire(import.meta.url)(file) as OverpackAddon;
  } catch (err) {
    throw new NativeAddonError(`cannot load the libfuse 3 addon ${file}: ${(err as Error).message}`, file);
  }
  return addon;
}

/** The addon, or null where it cannot be loaded (then callers use what Node offers). */
export function tryAddon(): OverpackAddon | null {
  try {
    return loadAddon();
  } catch {
    return null;
  }
}
