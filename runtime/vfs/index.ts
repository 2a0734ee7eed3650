/** The neutral contract the engine, the image and the FUSE bindings share (see each file). */
export { FsError, toErrno, type Errno } from './errors.js';
export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, childOf, nameOf, parentOf, type EntryStat } from './entry.js';
export type { Attr, DirListing, FileSpan, FsOps, StatFs, TimeSpec } from './ops.js';
