/**
 * The fuse-native (libfuse 2) binding: adapts promise-based `FsOps` to fuse-native's
 * callback API. Every request crosses from a libfuse thread to the JS main thread and back
 * (what that costs: bench/README, figures behind the code), so the mount options below are
 * chosen to make the kernel ask less often.
 */
import { failureErrno } from './failure.js';
import type { FuseBinding, MountedFs, MountOptions } from './binding.js';
import type { Attr, FsOps, StatFs, TimeSpec } from '../vfs/index.js';
import { loadFuseNative, type FuseNativeClass } from './native.js';
import { unmountPath } from './unmount.js';

type Cb = (...args: unknown[]) => void;

/** fuse-native's stat wire format: 18 uint32s, 64-bit values split low/high, times in ms. */
function statArray(a: Attr): Uint32Array {
  const ints = new Uint32Array(18);
  const split = (i: number, n: number) => {
    const v = Math.max(0, Math.floor(n));
    ints[i] = v % 4294967296;
    ints[i + 1] = Math.floor(v / 4294967296);
  };
  ints[0] = a.mode;
  ints[1] = a.uid;
  ints[2] = a.gid;
  split(3, a.size);
  ints[5] = a.dev;
  ints[6] = a.nlink;
  ints[7] = a.ino;
  ints[8] = a.rdev;
  ints[9] = a.blksize;
  split(10, a.blocks);
  split(12, a.atimeMs);
  split(14, a.mtimeMs);
  split(16, a.ctimeMs);
  return ints;
}

function wireStat(a: Attr): Record<string, number> {
  return {
    mode: a.mode, uid: a.uid, gid: a.gid, size: a.size, dev: a.dev, nlink: a.nlink, ino: a.ino, rdev: a.rdev,
    blksize: a.blksize, blocks: a.blocks, atime: a.atimeMs, mtime: a.mtimeMs, ctime: a.ctimeMs,
  };
}

/** fuse-native passes times in milliseconds; our patched addon marks UTIME_OMIT as 2^64 - 1. */
function msTime(ms: number): TimeSpec {
  return ms >= 2 ** 63 ? 'omit' : BigInt(Math.round(ms)) * 1_000_000n;
}

function failed(op: string, err: unknown): number {
  return -failureErrno(op, err);
}

/** Turns FsOps into fuse-native's ops object: (args..., cb) with negative errno on failure. */
function adaptOps(ops: FsOps): object {
  const done = (op: string, p: Promise<unknown>, cb: Cb, ok: (v: never) => unknown[] = () => [0]) => {
    p.then(
      (v) => cb(...ok(v as never)),
      (err) => cb(failed(op, err)),
    );
  };
  return {
    getattr: (path: unknown, cb: Cb) => done('getattr', ops.getattr(path as string), cb, (a: Attr) => [0, wireStat(a)]),
    // Replaced per instance below (fuse-native would drop the file handle).
    fgetattr: (path: unknown, cb: Cb) => done('getattr', ops.getattr(path as string), cb, (a: Attr) => [0, wireStat(a)]),
    access: (path: unknown, mode: unknown, cb: Cb) => done('access', ops.access(path as string, mode as number), cb),
    statfs: (path: unknown, cb: Cb) => done('statfs', ops.statfs(path as string), cb, (s: StatFs) => [0, s]),
    readdir: (path: unknown, cb: Cb) =>
      done('readdir', ops.readdir(path as string), cb, (l: { names: string[]; attrs: Attr[] }) => [0, l.names, l.attrs]),
    readlink: (path: unknown, cb: Cb) => done('readlink', ops.readlink(path as string), cb, (t: string) => [0, t]),
    // open, release and flush are left out on purpose: libfuse then answers them itself, without
    // a round trip to JS, and every read and write arrives with file handle 0, which FsOps
    // resolves by path. create must make the file, so its handle is closed at once.
    // (libfuse 2 passes create's flags only through fuse_file_info, which fuse-native drops.)
    create: (path: unknown, mode: unknown, cb: Cb) =>
      done(
        'create',
        ops.create(path as string, mode as number, 2 /* O_RDWR */).then((fh) => ops.release(path as string, fh)),
        cb,
        () => [0, 0],
      ),
    read: (path: unknown, fh: unknown, buf: unknown, len: unknown, pos: unknown, cb: Cb) =>
      ops.read(path as string, fh as number, buf as Buffer, len as number, pos as number).then(
        (n) => cb(n),
        (err) => cb(failed('read', err)),
      ),
    write: (path: unknown, fh: unknown, buf: unknown, len: unknown, pos: unknown, cb: Cb) =>
      ops.write(path as string, fh as number, buf as Buffer, len as number, pos as number).then(
        (n) => cb(n),
        (err) => cb(failed('write', err)),
      ),
    fsync: (path: unknown, datasync: unknown, fh: unknown, cb: Cb) =>
      done('fsync', ops.fsync(path as string, fh as number, Boolean(datasync)), cb),
    truncate: (path: unknown, size: unknown, cb: Cb) => done('truncate', ops.truncate(path as string, size as number), cb),
    ftruncate: (path: unknown, fh: unknown, size: unknown, cb: Cb) =>
      done('ftruncate', ops.ftruncate(path as string, fh as number, size as number), cb),
    mknod: (path: unknown, mode: unknown, dev: unknown, cb: Cb) =>
      done('mknod', ops.mknod(path as string, mode as number, dev as number), cb),
    mkdir: (path: unknown, mode: unknown, cb: Cb) => done('mkdir', ops.mkdir(path as string, mode as number), cb),
    unlink: (path: unknown, cb: Cb) => done('unlink', ops.unlink(path as string), cb),
    rmdir: (path: unknown, cb: Cb) => done('rmdir', ops.rmdir(path as string), cb),
    symlink: (target: unknown, path: unknown, cb: Cb) => done('symlink', ops.symlink(target as string, path as string), cb),
    link: (existing: unknown, path: unknown, cb: Cb) => done('link', ops.link(existing as string, path as string), cb),
    rename: (from: unknown, to: unknown, cb: Cb) => done('rename', ops.rename(from as string, to as string), cb),
    chmod: (path: unknown, mode: unknown, cb: Cb) => done('chmod', ops.chmod(path as string, mode as number), cb),
    chown: (path: unknown, uid: unknown, gid: unknown, cb: Cb) =>
      done('chown', ops.chown(path as string, uid as number, gid as number), cb),
    utimens: (path: unknown, atime: unknown, mtime: unknown, cb: Cb) =>
      done('utimens', ops.utimens(path as string, msTime(atime as number), msTime(mtime as number)), cb),
    setxattr: (path: unknown, name: unknown, value: unknown, _pos: unknown, flags: unknown, cb: Cb) =>
      done('setxattr', ops.setxattr(path as string, name as string, Buffer.from(value as Buffer), flags as number), cb),
    getxattr: (path: unknown, name: unknown, _pos: unknown, cb: Cb) =>
      done('getxattr', ops.getxattr(path as string, name as string), cb, (v: Buffer) => [0, v]),
    listxattr: (path: unknown, cb: Cb) => done('listxattr', ops.listxattr(path as string), cb, (l: string[]) => [0, l]),
    removexattr: (path: unknown, name: unknown, cb: Cb) =>
      done('removexattr', ops.removexattr(path as string, name as string), cb),
  };
}

/**
 * Mount options, each for a reason:
 * - attr/entry/negative timeouts: the kernel caches attributes and lookups instead of asking
 *   on every stat; safe because every change goes through this mount, so the kernel sees it.
 * - auto_cache: keep file pages cached across opens unless size or mtime changed (not
 *   kernel_cache: libfuse 2 gives each hard link its own node, so a write through one name
 *   must invalidate the pages cached under the other).
 * - use_ino: show our inode numbers (virtual or persistent) instead of libfuse's own.
 * - big_writes + max_read/max_write: 128 KiB requests instead of 4 KiB ones.
 * - no hard_remove: libfuse 2 can only reach a file by path, so an unlinked file that is still
 *   open is renamed to .fuse_hidden* until closed (reads, writes and fstat keep working).
 * - default_permissions: the kernel checks mode bits, as on any local filesystem.
 */
function mountOptions(o: MountOptions): Record<string, unknown> {
  const extra = [
    'use_ino',
    'big_writes',
    'auto_cache',
    'max_write=131072',
    // Always explicit: fuse-native drops a 0, and libfuse's default is 1 s, not "off".
    `attr_timeout=${o.attrTimeout}`,
    `entry_timeout=${o.entryTimeout}`,
    `negative_timeout=${o.negativeTimeout}`,
  ];
  return {
    timeout: false, // a copy-up of a large file may take longer than fuse-native's 15 s default
    force: false,
    mkdir: false,
    debug: o.debug ?? false,
    defaultPermissions: true,
    maxRead: 131072,
    // fuse-native has no switch for these; they ride along in a string option (libfuse splits on commas).
    fsname: [o.fsName.replace(/[,\s]/g, '_'), ...extra, ...(o.allowOther ? ['allow_other'] : [])].join(','),
    subtype: 'overpack',
  };
}

let unmountPatched = false;

function patchUnmount(Fuse: FuseNativeClass): void {
  if (unmountPatched) return;
  unmountPatched = true;
  // fuse-native's close() shells out to `fusermount -uz`; use ours (fusermount3, then umount).
  Fuse.unmount = (mnt: string, cb: (err: Error | null) => void) => {
    unmountPath(mnt, false)
      .then((r) => (r.ok ? r : unmountPath(mnt, true)))
      .then((r) => cb(r.ok ? null : new Error(r.message)), cb);
  };
}

export const fuseNativeBinding: FuseBinding = {
  name: 'fuse-native',
  available(): boolean {
    try {
      loadFuseNative();
      return true;
    } catch {
      return false;
    }
  },
  async mount(mountPoint: string, ops: FsOps, options: MountOptions): Promise<MountedFs> {
    const Fuse = loadFuseNative();
    patchUnmount(Fuse);
    const fuse = new Fuse(mountPoint, adaptOps(ops), mountOptions(options));
    // fuse-native routes fgetattr to getattr(path) and drops the handle; keep it, so fstat of
    // an unlinked or renamed open file still answers.
    (fuse as unknown as Record<string, unknown>)._op_fgetattr = (signal: Cb, path: string, fh: number) => {
      ops.fgetattr(path, fh).then(
        (a) => signal(0, statArray(a)),
        (err) => signal(failed('fgetattr', err), new Uint32Array(18)),
      );
    };
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
    let unmounting: Promise<void> | undefined;
    return {
      mountPoint,
      unmount(): Promise<void> {
        unmounting ??= new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
        return unmounting;
      },
    };
  },
};
