/**
 * The upper: the writable directory under the overlay, and the one place that touches it. Every
 * change the overlay makes to the upper is a method here (entries, metadata, xattrs, the
 * whiteout and opaque markers of whiteout.ts, the scratch directory for atomic copy-ups), so
 * the upper's on-disk format lives in one module. Paths are merged paths (`/a/b`); a path too
 * long for one system call is reached through a directory descriptor (long-paths.ts).
 *
 * Calls are synchronous on purpose: see operations.ts.
 */
import fs, { promises as fsp, constants as fsc, type Dirent } from 'node:fs';
import * as xattr from 'fs-xattr';
import { getXattrAt, isXattrRefused, listXattrsAt, lstatExact } from './dir-layer.js';
import { childOf, type EntryStat } from '../vfs/index.js';
import { LongPaths } from './long-paths.js';
import { fallocate, mknod, utimens, type TimeSpec } from '../native/syscalls.js';
import { isReserved, OPAQUE_MARKER, WORK_DIR, whiteoutName } from './whiteout.js';

/** statfs(2)'s f_type of overlayfs. */
const OVERLAYFS_MAGIC = 0x794c7630;

/** What a copy-up gives its staged entry (see applyMetadata). */
export interface StagedMetadata {
  uid: number;
  gid: number;
  mode: number;
  symlink: boolean;
  xattrs: Array<[string, Buffer]>;
  atime: TimeSpec;
  mtime: TimeSpec;
}

export class UpperDir {
  readonly workDir: string;
  private readonly longPaths = new LongPaths();
  private tmpSeq = 0;

  constructor(readonly root: string) {
    this.workDir = `${root}/${WORK_DIR}`;
  }

  /** The file for merged path `path`, as a string every system call takes. */
  path(path: string): string {
    return this.longPaths.reach(this.raw(path));
  }

  private raw(path: string): string {
    return path === '/' ? this.root : this.root + path;
  }

  /** Creates the upper and an empty scratch dir (dropping leftovers of a crash). */
  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true });
    await fsp.rm(this.workDir, { recursive: true, force: true });
    await fsp.mkdir(this.workDir, { mode: 0o700 });
  }

  /** A fresh name in the scratch dir: things are assembled there, then renamed into place. */
  tmpName(): string {
    return `${this.workDir}/${process.pid}.${++this.tmpSeq}`;
  }

  /** A new file in the scratch dir that has no name (made, then unlinked): its read-write descriptor. */
  namelessFile(): number {
    const tmp = this.tmpName();
    const fd = fs.openSync(tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    fs.unlinkSync(tmp);
    return fd;
  }

  /** `path` moved or went away: forget descriptors held for reaching beneath it. */
  forget(path: string): void {
    this.longPaths.forget(this.raw(path));
  }

  closeAll(): void {
    this.longPaths.closeAll();
  }

  // ---- reading -----------------------------------------------------------------------------

  /** null when missing, or when a component on the way is not a directory. */
  lstat(path: string): EntryStat | null {
    try {
      return lstatExact(this.path(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    }
  }

  names(path: string): string[] {
    return fs.readdirSync(this.path(path));
  }

  entries(path: string): Dirent[] {
    return fs.readdirSync(this.path(path), { withFileTypes: true });
  }

  readlink(path: string): Promise<string> {
    return fsp.readlink(this.path(path));
  }

  /** The upper's own inode number and link count (hard links), or null. */
  links(path: string): { ino: number; nlink: number } | null {
    const st = fs.lstatSync(this.path(path), { throwIfNoEntry: false });
    return st ? { ino: st.ino, nlink: st.nlink } : null;
  }

  listXattrs(path: string): Promise<string[]> {
    return listXattrsAt(this.path(path));
  }

  getXattr(path: string, name: string): Promise<Buffer | null> {
    return getXattrAt(this.path(path), name);
  }

  /** 1 when the upper directory lies on overlayfs (a container's root, say), else 0. */
  stackDepth(): number {
    return fs.statfsSync(this.root).type === OVERLAYFS_MAGIC ? 1 : 0;
  }

  statfs(): Promise<fs.StatsFs> {
    return fsp.statfs(this.root);
  }

  /** Never follows a final symlink. */
  open(path: string, flags: number, mode = 0o666): number {
    return fs.openSync(this.path(path), flags | fsc.O_NOFOLLOW, mode);
  }

  /** Creates (or opens) file `path` with exactly `mode`: the process umask must not alter it. */
  create(path: string, flags: number, mode: number): number {
    const fd = this.open(path, flags | fsc.O_CREAT, mode & 0o7777);
    fs.fchmodSync(fd, mode & 0o7777);
    return fd;
  }

  /** Changes through a descriptor this upper opened (data is read and written by the caller). */
  ftruncate(fd: number, size: number): void {
    fs.ftruncateSync(fd, size);
  }

  futimens(fd: number, atime: TimeSpec, mtime: TimeSpec): void {
    utimens(`/proc/self/fd/${fd}`, atime, mtime);
  }

  // ---- entries ------------------------------------------------------------------------------

  /** Exactly `mode`: the process umask must not alter what the caller asked for. */
  mkdir(path: string, mode: number): void {
    const real = this.path(path);
    fs.mkdirSync(real, mode & 0o7777);
    fs.chmodSync(real, mode & 0o7777);
  }

  /** A fifo, socket or device node, with exactly `mode`'s permission bits. */
  mknod(path: string, mode: number, rdev: number): void {
    const real = this.path(path);
    mknod(real, mode, rdev);
    fs.chmodSync(real, mode & 0o7777);
  }

  symlink(target: string, path: string): void {
    fs.symlinkSync(target, this.path(path));
  }

  link(existing: string, path: string): void {
    fs.linkSync(this.path(existing), this.path(path));
  }

  rename(from: string, to: string): void {
    fs.renameSync(this.path(from), this.path(to));
  }

  // ---- staging: copy-ups are assembled in the scratch dir, then placed or dropped -----------

  /** A new directory in the scratch dir (0700 until its metadata is applied): its scratch path. */
  stageDir(): string {
    const tmp = this.tmpName();
    fs.mkdirSync(tmp, { mode: 0o700 });
    return tmp;
  }

  /** A new symlink in the scratch dir: its scratch path. */
  stageSymlink(target: string): string {
    const tmp = this.tmpName();
    fs.symlinkSync(target, tmp);
    return tmp;
  }

  /** A new fifo, socket or device node in the scratch dir: its scratch path. */
  stageNode(mode: number, rdev: number): string {
    const tmp = this.tmpName();
    mknod(tmp, mode, rdev);
    return tmp;
  }

  /**
   * Gives a staged entry an owner, permission bits, xattrs and times (a symlink only owner and
   * times: Linux keeps neither bits nor user xattrs on one). An unprivileged user cannot give
   * files away, so EPERM on the owner leaves the copy theirs; an xattr the upper's filesystem
   * refuses is skipped.
   */
  applyMetadata(tmp: string, meta: StagedMetadata): void {
    try {
      fs.lchownSync(tmp, meta.uid, meta.gid);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    }
    if (!meta.symlink) {
      fs.chmodSync(tmp, meta.mode & 0o7777);
      for (const [name, value] of meta.xattrs) {
        try {
          xattr.setAttributeSync(tmp, name, value);
        } catch (err) {
          if (!isXattrRefused(err)) throw err;
        }
      }
    }
    utimens(tmp, meta.atime, meta.mtime);
  }

  /** Puts an entry assembled in the scratch dir at `path`. */
  place(tmp: string, path: string): void {
    fs.renameSync(tmp, this.path(path));
  }

  /** Drops a staged entry that will not be placed. */
  dropStaged(tmp: string): void {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  unlink(path: string): void {
    fs.unlinkSync(this.path(path));
  }

  /** Removes directory `path`; returns false when it still holds something (markers). */
  rmdirIfEmpty(path: string): boolean {
    try {
      fs.rmdirSync(this.path(path));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      return false;
    }
  }

  /** Moves `path` into the scratch dir; returns where it went. */
  moveToScratch(path: string): string {
    const tmp = this.tmpName();
    fs.renameSync(this.path(path), tmp);
    return tmp;
  }

  // ---- metadata -----------------------------------------------------------------------------

  chmod(path: string, mode: number): void {
    fs.chmodSync(this.path(path), mode & 0o7777);
  }

  /** -1 leaves that id unchanged. */
  chown(path: string, uid: number, gid: number): void {
    fs.lchownSync(this.path(path), uid, gid);
  }

  truncate(path: string, size: number): void {
    fs.truncateSync(this.path(path), size);
  }

  utimens(path: string, atime: TimeSpec, mtime: TimeSpec): void {
    utimens(this.path(path), atime, mtime);
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    fallocate(fd, mode, offset, length);
  }

  setXattr(path: string, name: string, value: Buffer): void {
    xattr.setAttributeSync(this.path(path), name, value);
  }

  removeXattr(path: string, name: string): void {
    xattr.removeAttributeSync(this.path(path), name);
  }

  // ---- markers (see whiteout.ts) ------------------------------------------------------------

  /** The names in directory `path` that are markers: `.wh.<name>` whiteouts and the opaque marker. */
  markers(path: string): string[] {
    return this.names(path).filter(isReserved);
  }

  writeWhiteout(dir: string, name: string): void {
    fs.closeSync(fs.openSync(this.path(childOf(dir, whiteoutName(name))), 'w', 0o600));
  }

  removeWhiteout(dir: string, name: string): void {
    fs.rmSync(this.path(childOf(dir, whiteoutName(name))), { force: true });
  }

  markOpaque(dir: string): void {
    fs.closeSync(fs.openSync(this.path(childOf(dir, OPAQUE_MARKER)), 'w', 0o600));
  }

  /** Empties directory `dir` of its markers (a merged-empty directory holds only those). */
  async clearMarkers(dir: string): Promise<void> {
    const real = this.path(dir);
    for (const name of await fsp.readdir(real)) {
      if (isReserved(name)) await fsp.rm(`${real}/${name}`, { recursive: true, force: true });
    }
  }
}
