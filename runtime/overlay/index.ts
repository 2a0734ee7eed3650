/** The overlay engine: layers, the upper, the operations, commit (no FUSE: runtime/mount serves it). */
export { OverlayError, type OverlayErrorCode } from './errors.js';
export { FsError, type EntryStat } from '../vfs/index.js';
export { type OverlayAction, type FinalizeResult, OVERLAY_ACTIONS } from './finalize.js';
export { type InodeMode, INODE_MODES } from './inodes.js';
export { DirLayer } from './dir-layer.js';
export type { Layer, LayerFile, DirEntry, EntryType } from './layer.js';
export { OPAQUE_MARKER, WHITEOUT_PREFIX, WORK_DIR } from './whiteout.js';
export { commitUpper, commitUpperAtomic, describeCommit, recoverCommit, commitWorkDir, CommitError, type CommitSummary, type CommitOptions } from './commit.js';
