/**
 * A Layer is one read-only view of a tree: a directory on disk (`DirLayer`) or the image
 * embedded in a bundle (`runtime/image`). The overlay reads its lower through this interface
 * only, so any tree that can answer these calls can sit under the writable upper.
 *
 * Paths are FUSE-style: absolute within the layer, `/` is the layer's root, no trailing slash.
 */
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type EntryStat, type FileSpan } from '../vfs/index.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface DirEntry {
  name: string;
  type: EntryType;
}

/** An open file of a layer, read with positioned reads. */
export interface LayerFile {
  read(buf: Buffer, offset: number, length: number, position: number): Promise<number>;
  /**
   * Where the file's bytes lie in a plain descriptor, when they do (a file on disk, a verified
   * file of an image): reads can then be answered in the kernel, bypassing JS.
   */
  readonly span?: FileSpan;
  /**
   * Makes bytes [position, position + length) safe to take through `span` (an image checks
   * the pieces they lie in); read() does it itself. Absent: nothing to do.
   */
  prepare?(position: number, length: number): Promise<void>;
  /**
   * SEEK_DATA / SEEK_HOLE for a file with no descriptor to ask (an image knows its holes):
   * the new offset, or an FsError (ENXIO past the end). Absent: data runs to the end.
   */
  seek?(offset: number, whence: number): number;
  close(): Promise<void>;
}

export interface Layer {
  /** What this layer is, for messages ("directory /srv/app", "image app.run"). */
  readonly description: string;
  /** True when nothing changes the layer while it is served (an image); a directory may change under us. */
  readonly immutable?: boolean;
  /** stat without following a final symlink; null when the path does not exist. */
  lstat(path: string): Promise<EntryStat | null>;
  /** Entries of a directory, without `.` and `..`. */
  readdir(path: string): Promise<DirEntry[]>;
  /** Optional: entries of a directory with the lstat of each, in one pass (an image reads its records once). */
  statChildren?(path: string): Promise<Array<{ name: string; stat: EntryStat }>>;
  readlink(path: string): Promise<string>;
  open(path: string): Promise<LayerFile>;
  listXattrs(path: string): Promise<string[]>;
  /** null when the attribute is not set. */
  getXattr(path: string, name: string): Promise<Buffer | null>;
  /**
   * Copy a regular file's data to `dest` (a new file on disk). A directory layer uses the
   * kernel's copy (reflink or copy_file_range); other layers stream through `open`.
   */
  copyFileTo(path: string, dest: string): Promise<void>;
}

export function entryType(mode: number): EntryType {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return 'file';
    case S_IFDIR:
      return 'dir';
    case S_IFLNK:
      return 'symlink';
    default:
      return 'other';
  }
}
