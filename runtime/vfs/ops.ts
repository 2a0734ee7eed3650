/**
 * The contract between a filesystem and a FUSE binding. A filesystem (the overlay engine)
 * implements `FsOps`: path-based, promise-returning, throwing `FsError` for POSIX errors. A
 * binding (runtime/fuse) serves those operations on a mountpoint. Neither side knows the
 * other's internals; both import this.
 */
import type { EntryStat } from './entry.js';
import type { TimeSpec } from '../native/syscalls.js';

export type { TimeSpec };

/**
 * Attributes reported to the kernel; `ino` is the number users see (with `use_ino`).
 * `shared`: another name can change this entry's content and attributes through the mount (a
 * hard link the filesystem writes through), so a binding must not let the kernel cache them.
 * `writable`: opening the entry for writing costs nothing (no copy is made first).
 */
export type Attr = EntryStat & { shared?: boolean; writable?: boolean };

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/** One directory entry as readdir reports it: the inode number and type bits that `ls -i` and d_type show. */
export interface DirListing {
  names: string[];
  /** Same length as names: `ino` and `mode` (only the type bits are needed). */
  attrs: Array<Pick<Attr, 'ino' | 'mode'>>;
}

/**
 * A file's bytes inside a descriptor: byte `i` of the file is byte `base + i` of `fd`, for
 * `i < size` (null: up to the descriptor's own end, a file on disk).
 */
export interface FileSpan {
  fd: number;
  base: number;
  size: number | null;
}

/** chown's "leave unchanged" for a uid or gid: (uid_t)-1, as both bindings receive it. */
export const ID_UNCHANGED = 0xffffffff;

export interface FsOps {
  getattr(path: string): Promise<Attr>;
  /** getattr through an open handle: works after the path was unlinked or renamed. */
  fgetattr(path: string, fh: number): Promise<Attr>;
  access(path: string, mode: number): Promise<void>;
  statfs(path: string): Promise<StatFs>;
  readdir(path: string): Promise<DirListing>;
  readlink(path: string): Promise<string>;
  /** Returns a file handle number (> 0). `flags` are open(2) flags. */
  open(path: string, flags: number): Promise<number>;
  create(path: string, mode: number, flags: number): Promise<number>;
  read(path: string, fh: number, buf: Buffer, length: number, position: number): Promise<number>;
  /**
   * Optional: where the file's bytes lie in a plain descriptor, for a binding that can answer
   * a read of `length` bytes at `position` in the kernel; null sends it through `read`. Valid
   * for that read, until the caller's next await.
   */
  readFd?(path: string, fh: number, position: number, length: number): Promise<FileSpan | null>;
  write(path: string, fh: number, buf: Buffer, length: number, position: number): Promise<number>;
  /**
   * Optional, for a binding that reads and writes files itself: the descriptor whose bytes
   * are exactly the file's at `path` through handle `fh` (an upper file), and whether writes
   * may go to it; null when reads and writes must come here. A binding may keep using it, by
   * node or handle, until `watchDescriptors`' callback retires it.
   */
  directDescriptor?(path: string, fh: number): { fd: number; writable: boolean } | null;
  /** Optional: `retired(fd)` is called, synchronously, before a descriptor directDescriptor gave is closed or stops being that file's. */
  watchDescriptors?(retired: (fd: number) => void): void;
  /**
   * Optional, for a binding that lets the kernel read and write a file itself (FUSE
   * passthrough): the file at `path` made writable (copied up), and a descriptor of it, valid
   * until the caller's next await. `backingStackDepth()`: how many stacked filesystems (such as
   * overlayfs) lie under those descriptors' files, 0 on a plain one.
   */
  passthroughDescriptor?(path: string): Promise<number>;
  backingStackDepth?(): number;
  /**
   * Optional: the entries of directory `path` (without `.` and `..`) with the attributes
   * getattr would give, when they can change only through a later call of this interface (an
   * image directory no upper layer has touched); null when they may change otherwise. A
   * binding may answer lookups in it from this listing until it begins any call that may
   * change the tree.
   */
  unchangingListing?(path: string): Promise<{ names: string[]; attrs: Attr[] } | null>;
  flush(path: string, fh: number): Promise<void>;
  fsync(path: string, fh: number, datasync: boolean): Promise<void>;
  release(path: string, fh: number): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  ftruncate(path: string, fh: number, size: number): Promise<void>;
  mknod(path: string, mode: number, rdev: number): Promise<void>;
  mkdir(path: string, mode: number): Promise<void>;
  unlink(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  link(existing: string, path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  /** A uid or gid of ID_UNCHANGED leaves that one as it is. */
  chown(path: string, uid: number, gid: number): Promise<void>;
  /** Times in nanoseconds since the epoch, or 'now', or 'omit' (leave unchanged). */
  utimens(path: string, atime: TimeSpec, mtime: TimeSpec): Promise<void>;
  /** utimens through a handle: for a file that has lost its name. Optional. */
  futimens?(path: string, fh: number, atime: TimeSpec, mtime: TimeSpec): Promise<void>;
  /** fallocate(2) modes (0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE, ...) on a file. */
  fallocate(path: string, fh: number, mode: number, offset: number, length: number): Promise<void>;
  /** lseek(2) with SEEK_DATA or SEEK_HOLE (the kernel handles the others itself); returns the offset. */
  lseek(path: string, fh: number, offset: number, whence: number): Promise<number>;
  setxattr(path: string, name: string, value: Buffer, flags: number): Promise<void>;
  /** Throws ENODATA when the attribute is not set. */
  getxattr(path: string, name: string): Promise<Buffer>;
  listxattr(path: string): Promise<string[]>;
  removexattr(path: string, name: string): Promise<void>;
}
