/** The neutral contract the engine, the image and the FUSE bindings share (see each file). */
export { FsError, toErrno, type Errno } from './errors.js';
export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, childOf, nameOf, parentOf, type EntryStat } from './entry.js';
export { ID_UNCHANGED, type Attr, type DirListing, type FileSpan, type FsOps, type StatFs, type TimeSpec } from './ops.js';
