/**
 * What every layer, the engine and the bindings say of an entry: its mode bits, its attributes
 * and its path (FUSE-style: absolute within the tree, `/` is its root, no trailing slash).
 */

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** The attributes the overlay needs of an entry; a subset of fs.Stats with times in ms. */
export interface EntryStat {
  mode: number; // type and permission bits, as st_mode
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number; // the layer's own inode number (used to group hard links)
  dev: number;
  rdev: number;
  blocks: number;
  blksize: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** The same times exact to the nanosecond, where the layer has them (a directory on disk). */
  atimeNs?: bigint;
  mtimeNs?: bigint;
  ctimeNs?: bigint;
}

/** FUSE path helpers: `/a/b` → parent `/a`, name `b`. */
export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}
export function nameOf(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}
export function childOf(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
