/**
 * Files that lose their name (unlink, rename over them) while the kernel still holds them:
 * with zero-message opens we cannot tell whether they are open, so each keeps a handle of its
 * own until the kernel forgets it, and reads, writes and fstat through open descriptors keep
 * working, as on any local filesystem.
 */
import { constants as fsc } from 'node:fs';
import type { Attr } from '../vfs/index.js';
import { FsError, S_IFREG } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import type { FsNode } from './node-table.js';

/** Before `name` under `parent` (at `p`) loses its name: its node, if the kernel holds one, keeps a handle. */
export async function keepIfKnown(c: Fuse3Context, parent: FsNode, name: string, p: string): Promise<void> {
  const child = c.nodes.peekChild(parent, name);
  if (!child || child.nlookup <= 0 || child.type !== S_IFREG || child.keptFh) return;
  const attr = await c.ops.getattr(p).catch(() => null);
  if (!attr) return;
  child.openedAttr = attr;
  child.keptFh = await c.ops.open(p, attr.writable ? fsc.O_RDWR : fsc.O_RDONLY).catch(() => 0);
}

/** File handle 0 (zero-message open) on a node that lost its name means the handle it kept. */
export function fhFor(n: FsNode, fh: number): number {
  return fh === 0 && n.keptFh && n.parent === null ? n.keptFh : fh;
}

/**
 * fstat of a file whose name is gone: the kernel asks without a file handle (GETATTR_FH is
 * only set for its own internal refreshes), so answer through the handle the node kept,
 * or with what the file looked like when it lost its name.
 */
export async function unlinkedAttr(c: Fuse3Context, n: FsNode, p: string): Promise<Attr> {
  if (n.keptFh) {
    try {
      return { ...(await c.ops.fgetattr(p, n.keptFh)), nlink: 0 };
    } catch {
      /* a lower file's handle cannot stat itself; fall through */
    }
  }
  if (n.openedAttr) return { ...n.openedAttr, nlink: 0 };
  throw new FsError('ENOENT', 'getattr', p, 'unlinked and no longer open');
}
