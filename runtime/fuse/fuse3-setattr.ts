/** SETATTR for the fuse3 binding: mode, owner, size and times, in that order, then the new attributes. */
import type { Req } from '../native/addon.js';
import { FsError, ID_UNCHANGED } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import { checkType, handlePath, isUnlinked, node, pathOf } from './fuse3-paths.js';
import { unlinkedAttr } from './fuse3-unlinked.js';
import type { FsNode } from './node-table.js';
import {
  requestedTime, SET_ATIME, SET_ATIME_NOW, SET_GID, SET_MODE, SET_MTIME, SET_MTIME_NOW, SET_SIZE, SET_UID,
} from './fuse3-wire.js';

/** `toSet`: fuse_lowlevel.h's bits; `v`: mode, uid, gid, size, then atime and mtime as seconds and nanoseconds; `fh` -1 without a handle. */
export async function setattr(c: Fuse3Context, req: Req, id: number, toSet: number, v: Float64Array, fh: number): Promise<void> {
  const ops = c.ops;
  const n = node(c, id);
  if (isUnlinked(n) && !(toSet & (SET_MODE | SET_UID | SET_GID))) return setattrUnlinked(c, req, n, toSet, v);
  const p = fh >= 0 ? handlePath(c, id) : pathOf(c, id);
  if (toSet & SET_MODE) await ops.chmod(p, v[0]!);
  if (toSet & (SET_UID | SET_GID)) await ops.chown(p, toSet & SET_UID ? v[1]! : ID_UNCHANGED, toSet & SET_GID ? v[2]! : ID_UNCHANGED);
  if (toSet & SET_SIZE) await (fh >= 0 ? ops.ftruncate(p, fh, v[3]!) : ops.truncate(p, v[3]!));
  if (toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) {
    const atime = requestedTime(toSet, SET_ATIME, SET_ATIME_NOW, v[4]!, v[5]!);
    const mtime = requestedTime(toSet, SET_MTIME, SET_MTIME_NOW, v[6]!, v[7]!);
    await ops.utimens(p, atime, mtime);
  }
  const attr = fh >= 0 ? await ops.fgetattr(p, fh) : await ops.getattr(p);
  checkType(c, node(c, id), attr);
  c.replyAttr(req, attr);
}

/**
 * Size and times of a file that lost its name while the kernel held it, through the handle it
 * kept. Under the writeback cache the kernel owns a file's mtime and ctime while it has dirty
 * pages and sends them at close or fsync, often after the app unlinked the file; failing
 * that SETATTR made the app's close() fail with EIO.
 */
async function setattrUnlinked(c: Fuse3Context, req: Req, n: FsNode, toSet: number, v: Float64Array): Promise<void> {
  const p = n.path(c.nodes.generation);
  if (!n.keptFh) throw new FsError('ENOENT', 'setattr', p, 'unlinked and no longer open');
  if (toSet & SET_SIZE) await c.ops.ftruncate(p, n.keptFh, v[3]!);
  if (toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW) && c.ops.futimens) {
    const atime = requestedTime(toSet, SET_ATIME, SET_ATIME_NOW, v[4]!, v[5]!);
    const mtime = requestedTime(toSet, SET_MTIME, SET_MTIME_NOW, v[6]!, v[7]!);
    await c.ops.futimens(p, n.keptFh, atime, mtime);
  }
  const attr = await unlinkedAttr(c, n, p);
  checkType(c, n, attr);
  c.replyAttr(req, attr);
}
