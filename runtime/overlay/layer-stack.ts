/**
 * The layer stack: resolves merged paths over a read-only lower `Layer` and the writable
 * `UpperDir`, and performs the upper-side steps every operation is built from (copy-up,
 * whiteouts, opaque directories). It keeps a cache of what each merged directory looks like;
 * the cache stays exact because every change to the upper goes through the UpperDir (copy-ups are staged there too), and every
 * change of a directory's shape is told here (afterCreate, forgetDir, the marker methods).
 */
import { promises as fsp } from 'node:fs';
import { FsError } from '../vfs/index.js';
import { entryType, type Layer } from './layer.js';
import { childOf, nameOf, parentOf, S_IFDIR, S_IFMT, type EntryStat } from '../vfs/index.js';
import { UpperDir } from './upper-dir.js';
import { OPAQUE_MARKER, isReserved, whitedOutName } from './whiteout.js';

/** What a merged directory is made of. */
interface DirInfo {
  /** The directory exists in the upper. */
  upper: boolean;
  /** The upper directory carries the opaque marker: nothing of the lower shows beneath it. */
  opaque: boolean;
  /** The lower has this directory and it is visible (no whiteout, no opaque ancestor). */
  lower: boolean;
  /** Names hidden by `.wh.<name>` files in the upper directory. */
  whiteouts: Set<string>;
}

/** One merged entry: the upper's and the (visible) lower's view of the same path. */
export interface Node {
  path: string;
  upper: EntryStat | null;
  /** Only looked up when the upper has nothing there or has a directory (merge). */
  lower: EntryStat | null;
}

export function isDir(st: EntryStat): boolean {
  return (st.mode & S_IFMT) === S_IFDIR;
}

/** A layer's time as nanoseconds: exact where the layer has them, else from milliseconds. */
function exactTime(ns: bigint | undefined, ms: number): bigint {
  return ns ?? BigInt(Math.round(ms * 1e6));
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

export class LayerStack {
  private readonly dirs = new Map<string, DirInfo>();
  /** Copy-ups in flight, so two requests for one path share a single copy. */
  private readonly copying = new Map<string, Promise<void>>();
  readonly upper: UpperDir;

  constructor(readonly lower: Layer, upperRoot: string) {
    this.upper = new UpperDir(upperRoot);
  }

  /** Prepares the upper: creates it and an empty scratch dir (dropping leftovers of a crash). */
  async init(): Promise<void> {
    await this.upper.init();
    this.dirs.clear();
  }

  /** Synchronous: see DirLayer.lstat. */
  private async lstatUpper(path: string): Promise<EntryStat | null> {
    return this.upper.lstat(path);
  }

  private async readUpperMarkers(path: string): Promise<{ opaque: boolean; whiteouts: Set<string> }> {
    const whiteouts = new Set<string>();
    let opaque = false;
    for (const name of this.upper.markers(path)) {
      if (name === OPAQUE_MARKER) opaque = true;
      const hidden = whitedOutName(name);
      if (hidden !== null) whiteouts.add(hidden);
    }
    return { opaque, whiteouts };
  }

  /** The merged directory at `path`, or null when there is none (missing or not a directory). */
  async dirInfo(path: string): Promise<DirInfo | null> {
    const cached = this.dirs.get(path);
    if (cached) return cached;
    let info: DirInfo | null;
    if (path === '/') {
      const markers = await this.readUpperMarkers('/');
      info = { upper: true, opaque: markers.opaque, lower: true, whiteouts: markers.whiteouts };
    } else {
      const parent = await this.dirInfo(parentOf(path));
      if (!parent) return null;
      const name = nameOf(path);
      const upper = parent.upper ? await this.lstatUpper(path) : null;
      if (upper && !isDir(upper)) return null;
      const lowerVisible = parent.lower && !parent.opaque && !parent.whiteouts.has(name);
      const lower = lowerVisible ? await this.lower.lstat(path) : null;
      const lowerIsDir = lower !== null && isDir(lower);
      if (upper) {
        const markers = await this.readUpperMarkers(path);
        info = { upper: true, opaque: markers.opaque, lower: lowerIsDir, whiteouts: markers.whiteouts };
      } else if (lowerIsDir) {
        info = { upper: false, opaque: false, lower: true, whiteouts: new Set() };
      } else {
        info = null;
      }
    }
    if (info) this.dirs.set(path, info);
    return info;
  }

  /** Forgets what is cached about `path` and everything beneath it. */
  private invalidateTree(path: string): void {
    this.upper.forget(path);
    this.dirs.delete(path);
    const prefix = path + '/';
    for (const key of this.dirs.keys()) if (key.startsWith(prefix)) this.dirs.delete(key);
  }

  /**
   * The entries of directory `path` with their lstat, when they all come from an immutable
   * lower (an image) and the upper has nothing there: then only a change made through this
   * stack can alter them. Null otherwise.
   */
  async lowerOnlyChildren(path: string): Promise<Array<{ name: string; stat: EntryStat }> | null> {
    if (this.lower.immutable !== true || this.lower.statChildren === undefined) return null;
    const info = await this.dirInfo(path);
    if (info === null || info.upper || !info.lower) return null;
    return (await this.lower.statChildren(path)).filter((c) => !isReserved(c.name));
  }

  /** The merged entry at `path`, or null. Reserved names never resolve. */
  async lookup(path: string): Promise<Node | null> {
    if (path === '/') {
      const upper = await this.lstatUpper('/');
      const lower = await this.lower.lstat('/');
      return { path, upper, lower };
    }
    const name = nameOf(path);
    if (isReserved(name)) return null;
    const parent = await this.dirInfo(parentOf(path));
    if (!parent) return null;
    const upper = parent.upper ? await this.lstatUpper(path) : null;
    let lower: EntryStat | null = null;
    if ((!upper || isDir(upper)) && parent.lower && !parent.opaque && !parent.whiteouts.has(name)) {
      lower = await this.lower.lstat(path);
      if (upper && lower && !isDir(lower)) lower = null;
    }
    if (!upper && !lower) return null;
    return { path, upper, lower };
  }

  async require(op: string, path: string): Promise<Node> {
    const node = await this.lookup(path);
    if (!node) throw new FsError('ENOENT', op, path);
    return node;
  }

  /** Whether the lower has a visible entry at `path` (so removing it needs a whiteout). */
  async lowerHas(path: string): Promise<boolean> {
    const parent = await this.dirInfo(parentOf(path));
    if (!parent || !parent.lower || parent.opaque || parent.whiteouts.has(nameOf(path))) return false;
    return (await this.lower.lstat(path)) !== null;
  }

  /** The merged listing of a directory: names with their entry types. */
  async list(path: string): Promise<Array<{ name: string; type: ReturnType<typeof entryType>; upper: boolean }>> {
    const info = await this.dirInfo(path);
    if (!info) throw new FsError('ENOTDIR', 'readdir', path);
    const out: Array<{ name: string; type: ReturnType<typeof entryType>; upper: boolean }> = [];
    const seen = new Set<string>();
    if (info.upper) {
      for (const d of this.upper.entries(path)) {
        if (isReserved(d.name)) continue;
        seen.add(d.name);
        const type = d.isDirectory() ? 'dir' : d.isFile() ? 'file' : d.isSymbolicLink() ? 'symlink' : 'other';
        out.push({ name: d.name, type, upper: true });
      }
    }
    if (info.lower && !info.opaque) {
      for (const d of await this.lower.readdir(path)) {
        if (seen.has(d.name) || info.whiteouts.has(d.name) || isReserved(d.name)) continue;
        out.push({ name: d.name, type: d.type, upper: false });
      }
    }
    return out;
  }

  async isEmptyDir(path: string): Promise<boolean> {
    return (await this.list(path)).length === 0;
  }

  // ---- upper-side mutations -------------------------------------------------------------

  /** Gives the staged upper entry `tmp` the lower entry's owner, mode, xattrs and times. */
  private async copyMetadata(src: EntryStat, lowerPath: string, tmp: string): Promise<void> {
    const symlink = entryType(src.mode) === 'symlink';
    const xattrs: Array<[string, Buffer]> = [];
    if (!symlink) {
      for (const name of await this.lower.listXattrs(lowerPath)) {
        const value = await this.lower.getXattr(lowerPath, name);
        if (value !== null) xattrs.push([name, value]);
      }
    }
    this.upper.applyMetadata(tmp, {
      uid: src.uid, gid: src.gid, mode: src.mode, symlink, xattrs,
      atime: exactTime(src.atimeNs, src.atimeMs), mtime: exactTime(src.mtimeNs, src.mtimeMs),
    });
  }

  /** Makes sure directory `path` exists in the upper (copying its metadata from the lower). */
  async ensureUpperDir(path: string): Promise<void> {
    const info = await this.dirInfo(path);
    if (!info) throw new FsError('ENOENT', 'copy-up', path);
    if (info.upper) return;
    await this.once(path, async () => {
      await this.ensureUpperDir(parentOf(path));
      const st = await this.lower.lstat(path);
      if (!st) throw new FsError('ENOENT', 'copy-up', path);
      // Assembled in the scratch dir and renamed into place, so it appears complete or not at all.
      const tmp = this.upper.stageDir();
      await this.copyMetadata(st, path, tmp);
      try {
        this.upper.place(tmp, path);
      } catch (err) {
        this.upper.dropStaged(tmp);
        if (code(err) !== 'EEXIST' && code(err) !== 'ENOTEMPTY') throw err;
      }
      info.upper = true;
      info.whiteouts = new Set();
    });
  }

  private async once(path: string, work: () => Promise<void>): Promise<void> {
    const running = this.copying.get(path);
    if (running) return running;
    const p = work().finally(() => this.copying.delete(path));
    this.copying.set(path, p);
    return p;
  }

  /**
   * Copy-up: makes the entry at `path` exist in the upper with the lower's data and metadata.
   * Files and symlinks are built in the scratch dir and renamed into place (atomic: a crash
   * leaves either no upper copy or a complete one); symlinks are copied, never followed.
   */
  async copyUp(path: string): Promise<EntryStat> {
    const node = await this.require('copy-up', path);
    if (node.upper) return node.upper;
    const lower = node.lower!;
    if (isDir(lower)) {
      await this.ensureUpperDir(path);
    } else {
      await this.once(path, async () => {
        await this.ensureUpperDir(parentOf(path));
        const type = entryType(lower.mode);
        let tmp: string;
        if (type === 'symlink') {
          tmp = this.upper.stageSymlink(await this.lower.readlink(path));
        } else if (type === 'file') {
          tmp = this.upper.tmpName();
          await this.lower.copyFileTo(path, tmp);
        } else {
          // A fifo, socket or device node: the node itself (no data to copy).
          tmp = this.upper.stageNode(lower.mode, lower.rdev);
        }
        try {
          await this.copyMetadata(lower, path, tmp);
          this.upper.place(tmp, path);
        } catch (err) {
          this.upper.dropStaged(tmp);
          throw err;
        }
      });
    }
    const copied = await this.lstatUpper(path);
    if (!copied) throw new FsError('EIO', 'copy-up', path, 'upper copy vanished');
    return copied;
  }

  /**
   * Copies a whole directory tree up: what rename of a lower directory needs (the caller then
   * marks the moved directory opaque, so nothing of the lower shows through its new name).
   */
  async copyUpTree(path: string): Promise<void> {
    await this.ensureUpperDir(path);
    for (const entry of await this.list(path)) {
      const child = childOf(path, entry.name);
      if (entry.type === 'dir') await this.copyUpTree(child);
      else if (!entry.upper) await this.copyUp(child);
    }
  }

  async writeWhiteout(path: string): Promise<void> {
    const dir = parentOf(path);
    await this.ensureUpperDir(dir);
    this.upper.writeWhiteout(dir, nameOf(path));
    const info = await this.dirInfo(dir);
    info?.whiteouts.add(nameOf(path));
    if (this.dirs.has(path)) this.invalidateTree(path); // only a directory has cached state
  }

  /** Removes the whiteout for `path` if there is one; returns whether there was. */
  async clearWhiteout(path: string): Promise<boolean> {
    const dir = parentOf(path);
    const info = await this.dirInfo(dir);
    const name = nameOf(path);
    if (!info || !info.whiteouts.has(name)) return false;
    this.upper.removeWhiteout(dir, name);
    info.whiteouts.delete(name);
    return true;
  }

  async makeOpaque(path: string): Promise<void> {
    this.upper.markOpaque(path);
    this.invalidateTree(path);
  }

  /** Directories moved into the scratch dir by removeUpperDir and still being emptied. */
  private readonly removing = new Set<Promise<void>>();

  /**
   * Removes upper directory `path`, which holds nothing the merged view shows (only markers,
   * since the caller found the merged directory empty). One that is not empty is renamed into
   * the scratch dir, so the name is free at once, and emptied there in the background: emptying
   * it in place (a directory full of whiteouts is what `rm -rf` of a lower directory leaves)
   * made the request wait for every one of them (bench/README, figures behind the code). A
   * crash leaves it to the next mount, which empties the scratch dir; `settle()` waits for it.
   */
  async removeUpperDir(path: string): Promise<void> {
    if (!this.upper.rmdirIfEmpty(path)) {
      const tmp = this.upper.moveToScratch(path);
      const p: Promise<void> = fsp
        .rm(tmp, { recursive: true, force: true })
        .catch(() => undefined)
        .finally(() => this.removing.delete(p));
      this.removing.add(p);
    }
    this.invalidateTree(path);
  }

  /** Waits for the background work still touching the upper (before it is finalized). */
  async settle(): Promise<void> {
    while (this.removing.size > 0) await Promise.all([...this.removing]);
    this.upper.closeAll();
  }

  /** Empties an upper directory of its markers (a merged-empty dir holds only those). */
  async clearMarkers(path: string): Promise<void> {
    await this.upper.clearMarkers(path);
    this.invalidateTree(path);
  }

  /** After creating `path` in the upper: the new entry replaces whatever the lower had there. */
  async afterCreate(path: string, createdDir: boolean): Promise<void> {
    const hadWhiteout = (await this.dirInfo(parentOf(path)))?.whiteouts.has(nameOf(path)) ?? false;
    if (createdDir && (hadWhiteout || (await this.lowerHasRaw(path)))) await this.makeOpaque(path);
    if (hadWhiteout) await this.clearWhiteout(path);
    if (createdDir) this.invalidateTree(path);
  }

  /** Whether the lower has any entry at `path` that the upper's parent may see or has hidden. */
  private async lowerHasRaw(path: string): Promise<boolean> {
    const parent = await this.dirInfo(parentOf(path));
    if (!parent || !parent.lower || parent.opaque) return false;
    return (await this.lower.lstat(path)) !== null;
  }

  /** Records that `path` (a directory) changed shape: removed, renamed or replaced. */
  forgetDir(path: string): void {
    this.invalidateTree(path);
  }

  /** Synchronous, like the reads and writes through the descriptor (see operations.ts). */
  async openUpper(path: string, flags: number, mode?: number): Promise<number> {
    return this.upper.open(path, flags, mode);
  }

  /** Creates `path` in the upper with exactly `mode` (its parent is already there). */
  async createUpper(path: string, flags: number, mode: number): Promise<number> {
    return this.upper.create(path, flags, mode);
  }
}
