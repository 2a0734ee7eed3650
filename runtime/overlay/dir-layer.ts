/** A directory on disk seen as a read-only Layer (the usual lower). */
import fs, { promises as fsp, constants as fsc } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import * as xattr from 'fs-xattr';
import { LongPaths } from './long-paths.js';
import { entryType, type DirEntry, type Layer, type LayerFile } from './layer.js';
import { type EntryStat } from '../vfs/index.js';

/** From a BigInt lstat: the only kind of stat in Node that keeps nanoseconds exactly. */
export function toEntryStat(st: BigIntStats): EntryStat {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    nlink: Number(st.nlink),
    ino: Number(st.ino),
    dev: Number(st.dev),
    rdev: Number(st.rdev),
    blocks: Number(st.blocks),
    blksize: Number(st.blksize),
    atimeMs: Number(st.atimeNs) / 1e6,
    mtimeMs: Number(st.mtimeNs) / 1e6,
    ctimeMs: Number(st.ctimeNs) / 1e6,
    atimeNs: st.atimeNs,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  };
}

/** lstat that keeps nanoseconds; null when missing. */
export function lstatExact(real: string): EntryStat | null {
  const st = fs.lstatSync(real, { bigint: true, throwIfNoEntry: false });
  return st ? toEntryStat(st) : null;
}

/** xattr calls that fail because the filesystem or entry has none are "no attributes". */
export function isNoXattr(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENODATA' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOATTR';
}

/**
 * An xattr this user may not set or remove here (security.* and trusted.* need privileges; a
 * filesystem may take none): copies go on without it, their data kept.
 */
export function isXattrRefused(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EPERM' || code === 'ENOTSUP';
}

// xattrs are read and written with fs-xattr's synchronous calls only: its asynchronous ones
// (0.4.0) never free their native work, which leaked ~1 KB per FUSE write (the kernel asks for
// security.capability on every write), and a local getxattr is cheaper than a threadpool hop.
export async function listXattrsAt(real: string): Promise<string[]> {
  try {
    return xattr.listAttributesSync(real);
  } catch (err) {
    if (isNoXattr(err)) return [];
    throw err;
  }
}

export async function getXattrAt(real: string, name: string): Promise<Buffer | null> {
  try {
    return xattr.getAttributeSync(real, name);
  } catch (err) {
    if (isNoXattr(err)) return null;
    throw err;
  }
}

/** Files below this size are copied up without leaving the main thread. */
const SYNC_COPY_BYTES = 1024 * 1024;

export class DirLayer implements Layer {
  readonly description: string;
  constructor(readonly root: string) {
    this.description = `directory ${root}`;
  }

  /** The lower is never changed through us, so its long-path anchors stay valid. */
  private readonly longPaths = new LongPaths();

  real(path: string): string {
    return this.longPaths.reach(path === '/' ? this.root : this.root + path);
  }

  /** Synchronous inside: a metadata lookup on a local directory is faster than a threadpool hop. */
  async lstat(path: string): Promise<EntryStat | null> {
    try {
      return lstatExact(this.real(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    }
  }

  /** Synchronous too: one getdents on a local directory costs less than the hop to a thread. */
  async readdir(path: string): Promise<DirEntry[]> {
    const ents = fs.readdirSync(this.real(path), { withFileTypes: true });
    return ents.map((d) => ({
      name: d.name,
      type: d.isDirectory() ? 'dir' : d.isFile() ? 'file' : d.isSymbolicLink() ? 'symlink' : 'other',
    }));
  }

  readlink(path: string): Promise<string> {
    return fsp.readlink(this.real(path));
  }

  async open(path: string): Promise<LayerFile> {
    // Raw descriptors, opened, read and closed synchronously for the same reason as the
    // overlay's own reads (operations.ts): every file a program reads costs an open and a close.
    const fd = fs.openSync(this.real(path), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    return {
      span: { fd, base: 0, size: null },
      read: async (buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
      close: async () => fs.closeSync(fd),
    };
  }

  async listXattrs(path: string): Promise<string[]> {
    // fs-xattr follows symlinks; a symlink's own xattrs are not reachable through it.
    const st = await this.lstat(path);
    if (!st || entryType(st.mode) === 'symlink') return [];
    return listXattrsAt(this.real(path));
  }

  async getXattr(path: string, name: string): Promise<Buffer | null> {
    const st = await this.lstat(path);
    if (!st || entryType(st.mode) === 'symlink') return null;
    return getXattrAt(this.real(path), name);
  }

  async copyFileTo(path: string, dest: string): Promise<void> {
    // COPYFILE_FICLONE: reflink where the filesystem can, else copy_file_range in the kernel.
    // Small files are copied synchronously (cheaper than the hop to a thread); a large one
    // goes to the threadpool, so the mount keeps answering other requests meanwhile.
    const real = this.real(path);
    const flags = fsc.COPYFILE_EXCL | fsc.COPYFILE_FICLONE;
    if (fs.lstatSync(real).size < SYNC_COPY_BYTES) fs.copyFileSync(real, dest, flags);
    else await fsp.copyFile(real, dest, flags);
  }
}
