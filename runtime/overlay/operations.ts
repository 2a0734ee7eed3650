/**
 * The overlay's filesystem operations (`FsOps`), binding-agnostic: each takes a merged path,
 * works out what the upper and lower hold there through the `LayerStack`, and answers as a
 * POSIX filesystem would. Reads come from whichever layer holds the entry; anything that
 * changes an entry copies it up first.
 */
import fs, { constants as fsc } from 'node:fs';
import type { Attr, DirListing, FileSpan, FsOps, StatFs, TimeSpec } from '../vfs/index.js';
import { seek, SEEK_DATA } from '../native/syscalls.js';
import { FsError, ID_UNCHANGED } from '../vfs/index.js';
import { toEntryStat } from './dir-layer.js';
import { InodeStore } from './inodes.js';
import { entryType, type LayerFile } from './layer.js';
import { childOf, nameOf, parentOf, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type EntryStat } from '../vfs/index.js';
import { isDir, LayerStack, type Node } from './layer-stack.js';
import { isReserved } from './whiteout.js';

type Handle = { kind: 'upper'; fd: number } | { kind: 'lower'; file: LayerFile };

const TYPE_BITS = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, other: 0 } as const;
const WRITE_INTENT = fsc.O_WRONLY | fsc.O_RDWR | fsc.O_TRUNC;

// Data goes straight to the descriptors the UpperDir opened (every other change to the upper is
// one of its methods). Calls on the backing files (open, close, read, write, metadata) are
// synchronous on purpose; only copy-up's data copy runs in the threadpool. They never touch
// our own mount (the upper and lower are outside it), they are small (one FUSE request,
// <= 1 MiB, mostly page cache), and a trip through libuv's threadpool costs more than the
// call itself: it tripled the time of a stream of 4 KiB writes. fuse-overlayfs serves
// requests the same way.
async function fdRead(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return fs.readSync(fd, buf, 0, length, position);
}
async function fdWrite(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return fs.writeSync(fd, buf, 0, length, position);
}
async function fdClose(fd: number): Promise<void> {
  fs.closeSync(fd);
}

function refuseReserved(op: string, path: string): void {
  if (isReserved(nameOf(path))) throw new FsError('EPERM', op, path, 'names starting with .wh. are reserved by the overlay');
}

/** Descriptors kept open for handle-less I/O (see `byPath`). */
const MAX_PATH_HANDLES = 256;

function closeHandle(h: Handle): Promise<void> {
  return (h.kind === 'upper' ? fdClose(h.fd) : h.file.close()).catch(() => undefined);
}

export class OverlayOps implements FsOps {
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  /**
   * Handle-less I/O: a binding may skip open/release (with fuse-native each is a round trip to
   * JS) and pass file handle 0; reads and writes then find their file by path here. Kept in
   * least-recently-used order and bounded; renames carry entries along, anything that changes
   * which layer holds a path drops its entry.
   */
  private readonly byPath = new Map<string, Handle & { writable: boolean }>();
  /** Openings in progress for `byPath`, one per path. */
  private readonly opening = new Map<string, Promise<Handle>>();
  /** Told of every upper descriptor before it is closed or leaves `byPath` (see directDescriptor). */
  private retired: ((fd: number) => void) | null = null;

  constructor(readonly stack: LayerStack, readonly inodes: InodeStore) {
    if (stack.lower.immutable === true) this.unchangingListing = (path) => this.listUnchanging(path);
  }

  /** At unmount: closes every open handle and waits for background work on the upper. */
  async closeAll(): Promise<void> {
    const all = [...this.handles.values(), ...this.byPath.values()];
    for (const h of all) this.announceRetired(h);
    this.handles.clear();
    this.byPath.clear();
    await Promise.all(all.map(closeHandle));
    await this.stack.settle();
  }

  /**
   * The path's descriptor for handle-less I/O. Requests for one file can arrive together (the
   * kernel's writeback sends a file's dirty pages as parallel WRITEs, reads ahead with parallel
   * READs): they share one opening, and a descriptor that another request may still be using
   * is closed only after the current turn of the event loop (see retire), never under it.
   */
  private async pathHandle(path: string, write: boolean): Promise<Handle> {
    for (;;) {
      const cached = this.byPath.get(path);
      if (cached && (cached.writable || !write)) {
        this.byPath.delete(path);
        this.byPath.set(path, cached);
        return cached;
      }
      const running = this.opening.get(path);
      if (running) {
        // Whatever it opens may serve us too (a writable one serves a read); if it fails, we
        // try ourselves and get our own answer.
        await running.catch(() => undefined);
        continue;
      }
      const opening = this.openPathHandle(path, write);
      this.opening.set(path, opening);
      try {
        return await opening;
      } finally {
        if (this.opening.get(path) === opening) this.opening.delete(path);
      }
    }
  }

  private async openPathHandle(path: string, write: boolean): Promise<Handle> {
    let h: Handle & { writable: boolean };
    if (write) {
      await this.stack.copyUp(path);
      h = { kind: 'upper', fd: await this.openForKernel(path, fsc.O_RDWR), writable: true };
    } else {
      const node = await this.stack.require('read', path);
      h = node.upper
        ? { kind: 'upper', fd: await this.stack.openUpper(path, fsc.O_RDONLY), writable: false }
        : { kind: 'lower', file: await this.stack.lower.open(path), writable: false };
    }
    // A read-only or lower descriptor this one replaces may be in use by a request of this turn.
    const replaced = this.byPath.get(path);
    if (replaced) {
      this.byPath.delete(path);
      this.retire(replaced);
    }
    this.byPath.set(path, h);
    if (this.byPath.size > MAX_PATH_HANDLES) {
      const [oldest, old] = this.byPath.entries().next().value as [string, Handle];
      this.byPath.delete(oldest);
      this.retire(old);
    }
    return h;
  }

  /**
   * Closes a descriptor that left the cache once the requests of this turn are done with it:
   * every use of an upper descriptor is a synchronous call made right after it was handed out
   * (the binding's READ reply included), so none outlives the turn. Closing it at once let a
   * parallel request write through a closed descriptor (EBADF, which SQLite reported as "disk
   * I/O error" under the writeback cache), or through its number reused by another file.
   */
  private retire(h: Handle): void {
    this.announceRetired(h);
    setImmediate(() => void closeHandle(h));
  }

  private announceRetired(h: Handle): void {
    if (h.kind === 'upper') this.retired?.(h.fd);
  }

  watchDescriptors(retired: (fd: number) => void): void {
    this.retired = retired;
  }

  /**
   * The upper descriptor reads and writes of `path` through `fh` go to, for a binding that
   * answers them itself: a handle's own, or the cached one of handle-less I/O. Lower files
   * never (an image's bytes are compressed and checked here).
   */
  /**
   * See FsOps.unchangingListing: the directories LayerStack.lowerOnlyChildren finds. Only
   * offered over an immutable lower (an image): over a directory nothing is ever unchanging,
   * and a binding that sees no such method asks nothing at each directory lookup.
   */
  readonly unchangingListing?: (path: string) => Promise<{ names: string[]; attrs: Attr[] } | null>;

  private async listUnchanging(path: string): Promise<{ names: string[]; attrs: Attr[] } | null> {
    const children = await this.stack.lowerOnlyChildren(path);
    if (children === null) return null;
    const names = children.map((c) => c.name);
    const attrs = children.map((c) => ({ ...c.stat, ino: this.inodes.get(childOf(path, c.name)) }));
    return { names, attrs };
  }

  directDescriptor(path: string, fh: number): { fd: number; writable: boolean } | null {
    if (fh !== 0) {
      const h = this.handles.get(fh);
      // A handle's writes go to its own descriptor whatever its mode (as write() does here).
      return h?.kind === 'upper' ? { fd: h.fd, writable: true } : null;
    }
    const h = this.byPath.get(path);
    return h?.kind === 'upper' ? { fd: h.fd, writable: h.writable } : null;
  }

  async passthroughDescriptor(path: string): Promise<number> {
    const h = await this.pathHandle(path, true);
    if (h.kind !== 'upper') throw new FsError('EIO', 'open', path, 'no upper copy after the copy-up');
    return h.fd;
  }

  backingStackDepth(): number {
    return this.stack.upper.stackDepth();
  }

  /**
   * An upper file opened for the kernel's handle-less I/O: always read-write where the mode
   * allows it (the kernel reads pages of a file it writes, to fill a partial page under the
   * writeback cache), never O_APPEND (the kernel gives every write its offset, the end of the
   * file for an O_APPEND caller; an O_APPEND descriptor would ignore that offset).
   */
  private async openForKernel(path: string, flags: number): Promise<number> {
    const f = flags & ~fsc.O_APPEND;
    if ((f & 3) === fsc.O_RDONLY) return this.stack.openUpper(path, f);
    try {
      return await this.stack.openUpper(path, (f & ~3) | fsc.O_RDWR);
    } catch (err) {
      // A write-only mode (0200) and a server that is not root: writes still work.
      if ((err as { code?: string }).code !== 'EACCES') throw err;
      return this.stack.openUpper(path, (f & ~3) | fsc.O_WRONLY);
    }
  }

  /** Forget path-keyed descriptors at `path` (and beneath it, for directories). */
  private dropPathHandles(path: string, tree: boolean): void {
    const h = this.byPath.get(path);
    if (h) {
      this.byPath.delete(path);
      this.retire(h);
    }
    if (!tree) return;
    const prefix = path + '/';
    for (const [p, x] of this.byPath) {
      if (p.startsWith(prefix)) {
        this.byPath.delete(p);
        this.retire(x);
      }
    }
  }

  private movePathHandles(from: string, to: string): void {
    this.dropPathHandles(to, true);
    const prefix = from + '/';
    for (const [p, h] of [...this.byPath]) {
      if (p === from || p.startsWith(prefix)) {
        this.byPath.delete(p);
        this.byPath.set(to + p.slice(from.length), h);
      }
    }
  }

  private attrOf(path: string, node: Node): Attr {
    const st = (node.upper ?? node.lower)!;
    // Only upper files can be hard links written through the mount: a lower file is copied up
    // (and so unlinked from its lower twins) before any change.
    const hardLinked = node.upper !== null && !isDir(node.upper) && node.upper.nlink > 1;
    const attr: Attr = { ...st, ino: this.inodes.get(path, hardLinked ? node.upper!.ino : undefined) };
    if (hardLinked) attr.shared = true;
    if (node.upper) attr.writable = true;
    // A directory present in both layers has no meaningful link count; 1 tells tools like
    // find(1) not to use it for leaf optimisation.
    if (node.upper && node.lower && isDir(node.upper)) attr.nlink = 1;
    return attr;
  }

  async getattr(path: string): Promise<Attr> {
    return this.attrOf(path, await this.stack.require('getattr', path));
  }

  async fgetattr(path: string, fh: number): Promise<Attr> {
    const h = fh === 0 ? this.byPath.get(path) : this.handles.get(fh);
    if (h?.kind === 'upper') {
      // Through the descriptor: still answers after the name was unlinked or renamed.
      const st = toEntryStat(fs.fstatSync(h.fd, { bigint: true }));
      const node = await this.stack.lookup(path);
      const ino = node ? this.attrOf(path, node).ino : this.inodes.get(path);
      return { ...st, ino, ...(st.nlink > 1 && !isDir(st) ? { shared: true } : {}) };
    }
    return this.getattr(path);
  }

  async access(path: string, mode: number): Promise<void> {
    void mode; // permission bits are checked by the kernel (default_permissions)
    await this.stack.require('access', path);
  }

  async statfs(path: string): Promise<StatFs> {
    void path;
    const s = await this.stack.upper.statfs();
    return {
      bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail,
      files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255,
    };
  }

  async readdir(path: string): Promise<DirListing> {
    const entries = await this.stack.list(path);
    const names: string[] = [];
    const attrs: DirListing['attrs'] = [];
    // Hard-linked upper files share one inode number; learning it takes a stat, done only for
    // upper regular files (few) so `ls -i` and `stat` agree.
    const upperFiles = entries.filter((e) => e.upper && e.type === 'file');
    const linkInos = new Map<string, number>();
    for (const e of upperFiles) {
      const st = this.stack.upper.links(childOf(path, e.name));
      if (st && st.nlink > 1) linkInos.set(e.name, st.ino);
    }
    // Fifos, sockets and devices: their type bits come from a stat (listings only say 'other').
    const otherModes = new Map<string, number>();
    for (const e of entries) {
      if (e.type !== 'other') continue;
      const node = await this.stack.lookup(childOf(path, e.name));
      const st = node && (node.upper ?? node.lower);
      if (st) otherModes.set(e.name, st.mode & S_IFMT);
    }
    // libfuse's high-level API leaves `.` and `..` to the filesystem.
    names.push('.', '..');
    attrs.push({ ino: this.inodes.get(path), mode: S_IFDIR }, { ino: this.inodes.get(parentOf(path)), mode: S_IFDIR });
    for (const e of entries) {
      names.push(e.name);
      attrs.push({ ino: this.inodes.get(childOf(path, e.name), linkInos.get(e.name)), mode: otherModes.get(e.name) ?? TYPE_BITS[e.type] });
    }
    return { names, attrs };
  }

  async readlink(path: string): Promise<string> {
    const node = await this.stack.require('readlink', path);
    if (node.upper) {
      if (entryType(node.upper.mode) !== 'symlink') throw new FsError('EINVAL', 'readlink', path);
      return this.stack.upper.readlink(path);
    }
    if (entryType(node.lower!.mode) !== 'symlink') throw new FsError('EINVAL', 'readlink', path);
    return this.stack.lower.readlink(path);
  }

  private addHandle(h: Handle): number {
    const n = this.nextHandle++;
    this.handles.set(n, h);
    return n;
  }

  async open(path: string, flags: number): Promise<number> {
    const node = await this.stack.require('open', path);
    const openFlags = flags & ~(fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOCTTY);
    // Write intent copies up at open, as kernel overlayfs does: every handle that may write
    // points at the upper copy, and read-only handles opened later see the same file.
    if (node.upper || flags & WRITE_INTENT) {
      if (!node.upper) await this.copyUp(path);
      return this.addHandle({ kind: 'upper', fd: await this.openForKernel(path, openFlags) });
    }
    return this.addHandle({ kind: 'lower', file: await this.stack.lower.open(path) });
  }

  async create(path: string, mode: number, flags: number): Promise<number> {
    refuseReserved('create', path);
    const parent = await this.stack.require('create', parentOf(path));
    if (!isDir((parent.upper ?? parent.lower)!)) throw new FsError('ENOTDIR', 'create', path);
    await this.stack.ensureUpperDir(parentOf(path));
    const openFlags = (flags & ~(fsc.O_EXCL | fsc.O_NOCTTY)) | fsc.O_CREAT | ((flags & 3) !== 0 ? 0 : fsc.O_RDWR) // O_ACCMODE is 3;
    // Exactly the mode the caller asked for: the kernel already applied their umask.
    const fd = await this.stack.createUpper(path, openFlags, mode);
    await this.stack.afterCreate(path, false);
    this.inodes.forget(path, false);
    return this.addHandle({ kind: 'upper', fd });
  }

  private handle(op: string, path: string, fh: number): Handle {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('EBADF', op, path);
    return h;
  }

  async read(path: string, fh: number, buf: Buffer, length: number, position: number): Promise<number> {
    const h = fh === 0 ? await this.pathHandle(path, false) : this.handle('read', path, fh);
    return h.kind === 'upper' ? fdRead(h.fd, buf, length, position) : h.file.read(buf, 0, length, position);
  }

  async readFd(path: string, fh: number, position: number, length: number): Promise<FileSpan | null> {
    const h = fh === 0 ? await this.pathHandle(path, false) : this.handle('read', path, fh);
    if (h.kind === 'upper') return { fd: h.fd, base: 0, size: null };
    if (!h.file.span) return null;
    await h.file.prepare?.(position, length);
    return h.file.span;
  }

  async write(path: string, fh: number, buf: Buffer, length: number, position: number): Promise<number> {
    const h = fh === 0 ? await this.pathHandle(path, true) : this.handle('write', path, fh);
    const fd = h.kind === 'upper' ? h.fd : (await this.privateCopy(fh, h.file)).fd;
    return fdWrite(fd, buf, length, position);
  }

  /**
   * A write through a lower file's handle: only the binding's handle of a file that lost its
   * name while the kernel held it (unlinked before its first write reached us: under the
   * writeback cache the kernel sends dirty pages later, after the app's unlink). As on any
   * filesystem, the unlinked file stays writable for whoever holds it: its data is copied to a
   * nameless file in the upper's scratch dir, which takes the handle's place.
   */
  private async privateCopy(fh: number, file: LayerFile): Promise<Handle & { kind: 'upper' }> {
    const fd = this.stack.upper.namelessFile();
    try {
      const chunk = Buffer.allocUnsafe(1 << 20);
      for (let pos = 0; ; ) {
        const n = await file.read(chunk, 0, chunk.length, pos);
        if (n <= 0) break;
        fs.writeSync(fd, chunk, 0, n, pos);
        pos += n;
      }
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    const h = { kind: 'upper' as const, fd };
    this.handles.set(fh, h);
    void file.close().catch(() => undefined);
    return h;
  }

  async flush(path: string, fh: number): Promise<void> {
    if (fh !== 0) this.handle('flush', path, fh);
  }

  async fsync(path: string, fh: number, datasync: boolean): Promise<void> {
    // Without a handle: data written through an evicted descriptor is still in the upper file.
    const h = fh === 0 ? ((await this.stack.lookup(path))?.upper ? await this.pathHandle(path, true) : null) : this.handle('fsync', path, fh);
    if (!h) return;
    if (h.kind !== 'upper') return;
    await new Promise<void>((resolve, reject) =>
      (datasync ? fs.fdatasync : fs.fsync)(h.fd, (err) => (err ? reject(err) : resolve())),
    );
  }

  async release(path: string, fh: number): Promise<void> {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    void path;
    this.announceRetired(h);
    if (h.kind === 'upper') await fdClose(h.fd);
    else await h.file.close();
  }

  async truncate(path: string, size: number): Promise<void> {
    await this.copyUp(path);
    this.stack.upper.truncate(path, size);
  }

  async ftruncate(path: string, fh: number, size: number): Promise<void> {
    if (fh === 0) return this.truncate(path, size);
    const h = this.handle('ftruncate', path, fh);
    // A lower handle that is asked to change is one kept for a file that lost its name (see write).
    this.stack.upper.ftruncate(h.kind === 'upper' ? h.fd : (await this.privateCopy(fh, h.file)).fd, size);
  }

  async futimens(path: string, fh: number, atime: TimeSpec, mtime: TimeSpec): Promise<void> {
    const h = this.handle('futimens', path, fh);
    // A lower file that lost its name before any change: nobody can see its times but through
    // the handle, whose stat is the lower's; nothing to keep.
    if (h.kind === 'upper') this.stack.upper.futimens(h.fd, atime, mtime);
  }

  async mknod(path: string, mode: number, rdev: number): Promise<void> {
    refuseReserved('mknod', path);
    if ((mode & S_IFMT) === S_IFREG) {
      await this.release(path, await this.create(path, mode, fsc.O_WRONLY));
      return;
    }
    // A fifo, socket or device node; devices need the privilege the kernel asks of mknod(2).
    const parent = await this.stack.require('mknod', parentOf(path));
    if (!isDir((parent.upper ?? parent.lower)!)) throw new FsError('ENOTDIR', 'mknod', path);
    if (await this.stack.lookup(path)) throw new FsError('EEXIST', 'mknod', path);
    await this.stack.ensureUpperDir(parentOf(path));
    this.stack.upper.mknod(path, mode, rdev);
    await this.stack.afterCreate(path, false);
    this.inodes.forget(path, false);
  }

  async mkdir(path: string, mode: number): Promise<void> {
    refuseReserved('mkdir', path);
    if (await this.stack.lookup(path)) throw new FsError('EEXIST', 'mkdir', path);
    await this.stack.ensureUpperDir(parentOf(path));
    this.stack.upper.mkdir(path, mode);
    await this.stack.afterCreate(path, true);
    this.inodes.forget(path, true);
  }

  async unlink(path: string): Promise<void> {
    const node = await this.stack.require('unlink', path);
    const st = (node.upper ?? node.lower)!;
    if (isDir(st)) throw new FsError('EISDIR', 'unlink', path);
    const lowerHas = await this.stack.lowerHas(path);
    this.dropPathHandles(path, false);
    if (node.upper) this.stack.upper.unlink(path);
    if (lowerHas) await this.stack.writeWhiteout(path);
    this.inodes.forget(path, false);
  }

  async rmdir(path: string): Promise<void> {
    if (path === '/') throw new FsError('EBUSY', 'rmdir', path);
    const node = await this.stack.require('rmdir', path);
    if (!isDir((node.upper ?? node.lower)!)) throw new FsError('ENOTDIR', 'rmdir', path);
    if (!(await this.stack.isEmptyDir(path))) throw new FsError('ENOTEMPTY', 'rmdir', path);
    const lowerHas = await this.stack.lowerHas(path);
    if (node.upper) await this.stack.removeUpperDir(path);
    this.stack.forgetDir(path);
    if (lowerHas) await this.stack.writeWhiteout(path);
    this.inodes.forget(path, true);
  }

  async symlink(target: string, path: string): Promise<void> {
    refuseReserved('symlink', path);
    if (await this.stack.lookup(path)) throw new FsError('EEXIST', 'symlink', path);
    await this.stack.ensureUpperDir(parentOf(path));
    this.stack.upper.symlink(target, path);
    await this.stack.afterCreate(path, false);
    this.inodes.forget(path, false);
  }

  async link(existing: string, path: string): Promise<void> {
    refuseReserved('link', path);
    const src = await this.stack.require('link', existing);
    if (isDir((src.upper ?? src.lower)!)) throw new FsError('EPERM', 'link', existing);
    if (await this.stack.lookup(path)) throw new FsError('EEXIST', 'link', path);
    const before = this.attrOf(existing, src).ino;
    const upper = await this.copyUp(existing);
    await this.stack.ensureUpperDir(parentOf(path));
    this.stack.upper.link(existing, path);
    await this.stack.afterCreate(path, false);
    // Both names keep the number the existing one had.
    this.inodes.forget(path, false);
    this.inodes.alias(upper.ino, before);
  }

  async rename(from: string, to: string): Promise<void> {
    refuseReserved('rename', to);
    if (from === to) return;
    if (to.startsWith(from + '/')) throw new FsError('EINVAL', 'rename', from, 'cannot move a directory into itself');
    const src = await this.stack.require('rename', from);
    const srcIsDir = isDir((src.upper ?? src.lower)!);
    const dst = await this.stack.lookup(to);
    if (dst) {
      const dstIsDir = isDir((dst.upper ?? dst.lower)!);
      if (srcIsDir && !dstIsDir) throw new FsError('ENOTDIR', 'rename', to);
      if (!srcIsDir && dstIsDir) throw new FsError('EISDIR', 'rename', to);
      if (dstIsDir && !(await this.stack.isEmptyDir(to))) throw new FsError('ENOTEMPTY', 'rename', to);
    } else {
      const parent = await this.stack.require('rename', parentOf(to));
      if (!isDir((parent.upper ?? parent.lower)!)) throw new FsError('ENOTDIR', 'rename', to);
    }
    const srcInLower = await this.stack.lowerHas(from);
    const dstInLower = dst !== null && (await this.stack.lowerHas(to));
    // Everything that moves must be in the upper first: a lower directory moves with its
    // whole tree (no EXDEV for users), a lower file or symlink is copied up.
    if (srcIsDir) await this.stack.copyUpTree(from);
    else await this.copyUp(from);
    await this.stack.ensureUpperDir(parentOf(to));
    if (dst?.upper && srcIsDir) await this.stack.clearMarkers(to); // rename(2) needs the target empty
    this.stack.upper.rename(from, to);
    if (srcIsDir) {
      this.stack.forgetDir(from);
      this.stack.forgetDir(to);
    }
    const hadWhiteout = await this.stack.clearWhiteout(to);
    // A moved directory must not show the lower's entries of its new name.
    if (srcIsDir && (dstInLower || hadWhiteout || srcInLower)) await this.stack.makeOpaque(to);
    if (srcInLower) await this.stack.writeWhiteout(from);
    this.inodes.rename(from, to, srcIsDir);
    this.movePathHandles(from, to);
  }

  /** Every metadata change starts with a copy-up; returns the upper copy and its stat. */
  /** Copy-up that also retires a descriptor still reading the lower copy. */
  private async copyUp(path: string): Promise<EntryStat> {
    const cached = this.byPath.get(path);
    if (cached?.kind === 'lower') this.dropPathHandles(path, false);
    return this.stack.copyUp(path);
  }

  async chmod(path: string, mode: number): Promise<void> {
    const st = await this.copyUp(path);
    if (entryType(st.mode) === 'symlink') throw new FsError('EOPNOTSUPP', 'chmod', path);
    this.stack.upper.chmod(path, mode);
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    await this.copyUp(path);
    // -1 (as unsigned 32-bit) means "leave unchanged".
    this.stack.upper.chown(path, uid === ID_UNCHANGED ? -1 : uid, gid === ID_UNCHANGED ? -1 : gid);
  }

  async utimens(path: string, atime: TimeSpec, mtime: TimeSpec): Promise<void> {
    await this.copyUp(path);
    this.stack.upper.utimens(path, atime, mtime);
  }

  async fallocate(path: string, fh: number, mode: number, offset: number, length: number): Promise<void> {
    const h = fh === 0 ? await this.pathHandle(path, true) : this.handle('fallocate', path, fh);
    if (h.kind !== 'upper') throw new FsError('EBADF', 'fallocate', path, 'opened read-only');
    this.stack.upper.fallocate(h.fd, mode, offset, length);
  }

  /**
   * SEEK_DATA / SEEK_HOLE. An upper or on-disk lower file answers from its descriptor, an
   * image file from what it knows of its holes; other files hold data to their end.
   */
  async lseek(path: string, fh: number, offset: number, whence: number): Promise<number> {
    const h = fh === 0 ? await this.pathHandle(path, false) : this.handle('lseek', path, fh);
    const fd = h.kind === 'upper' ? h.fd : h.file.span?.size === null ? h.file.span.fd : -1;
    if (fd >= 0) return seek(fd, offset, whence);
    if (h.kind !== 'upper' && h.file.seek) return h.file.seek(offset, whence);
    const size = (await this.getattr(path)).size;
    if (offset >= size) throw new FsError('ENXIO', 'lseek', path);
    return whence === SEEK_DATA ? offset : size;
  }

  /** The upper copy to change an xattr on. fs-xattr follows symlinks, so links are refused
   * (Linux refuses user.* xattrs on symlinks too). */
  private async xattrUpper(op: string, path: string): Promise<void> {
    const node = await this.stack.require(op, path);
    if (entryType((node.upper ?? node.lower)!.mode) === 'symlink') throw new FsError('EPERM', op, path);
    await this.copyUp(path);
  }

  async setxattr(path: string, name: string, value: Buffer, flags: number): Promise<void> {
    void flags;
    await this.xattrUpper('setxattr', path);
    this.stack.upper.setXattr(path, name, value);
  }

  async getxattr(path: string, name: string): Promise<Buffer> {
    const node = await this.stack.require('getxattr', path);
    const st = (node.upper ?? node.lower)!;
    let value: Buffer | null = null;
    if (entryType(st.mode) !== 'symlink') {
      value = node.upper ? await this.stack.upper.getXattr(path, name) : await this.stack.lower.getXattr(path, name);
    }
    if (value === null) throw new FsError('ENODATA', 'getxattr', path);
    return value;
  }

  async listxattr(path: string): Promise<string[]> {
    const node = await this.stack.require('listxattr', path);
    const st = (node.upper ?? node.lower)!;
    if (entryType(st.mode) === 'symlink') return [];
    if (node.upper) return this.stack.upper.listXattrs(path);
    return this.stack.lower.listXattrs(path);
  }

  async removexattr(path: string, name: string): Promise<void> {
    await this.xattrUpper('removexattr', path);
    this.stack.upper.removeXattr(path, name);
  }
}
