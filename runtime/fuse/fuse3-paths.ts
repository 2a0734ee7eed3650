/**
 * From the kernel's node ids to the engine's paths, for the fuse3 binding's handlers: the node
 * a request names, its path, and work on a path that holds while the node is renamed or
 * unlinked meanwhile.
 */
import type { Attr } from '../vfs/index.js';
import { FsError, S_IFMT } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import { ROOT_ID, type FsNode } from './node-table.js';

export function node(c: Fuse3Context, id: number): FsNode {
  const n = c.nodes.get(id);
  if (!n) throw new FsError('ESTALE', 'node', `#${id}`, 'the kernel asked for a node it had forgotten');
  return n;
}

/** The path of a node that still has a name; an unlinked one answers ENOENT. */
export function pathOf(c: Fuse3Context, id: number): string {
  const n = node(c, id);
  if (isUnlinked(n)) throw new FsError('ENOENT', 'path', `#${id}`, 'unlinked');
  return n.path(c.nodes.generation);
}

/** For requests that carry a file handle: they work on unlinked files too (by handle). */
export function handlePath(c: Fuse3Context, id: number): string {
  return node(c, id).path(c.nodes.generation);
}

/** Whether the node lost its name while the kernel held it (the root never does). */
export function isUnlinked(n: FsNode): boolean {
  return n.parent === null && n.id !== ROOT_ID;
}

/** Attributes of another type than the node's belong to whatever replaced it: not this node's. */
export function checkType(c: Fuse3Context, n: FsNode, attr: Attr): void {
  if ((attr.mode & S_IFMT) !== n.type) throw new FsError('ESTALE', 'getattr', n.path(c.nodes.generation), 'the entry was replaced');
}

/** Runs `fn` on the node's path until the node was not moved or unlinked meanwhile. */
export async function stable<T>(c: Fuse3Context, n: FsNode, fn: (path: string) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const p = n.path(c.nodes.generation);
    const r = await fn(p);
    if (n.path(c.nodes.generation) === p || attempt === 4) return r;
  }
}

/**
 * For writes by path: one that failed or landed while its node was renamed or unlinked is
 * made again under the node's new path or kept handle (a positioned write may be repeated).
 * Under the writeback cache the kernel sends a file's pages after the app wrote them, so a
 * rename by another process can come between; the app would see the failure only as EIO at
 * close.
 */
export async function following<T>(c: Fuse3Context, n: FsNode, fn: (path: string) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const p = n.path(c.nodes.generation);
    const parent = n.parent;
    let r: T;
    try {
      r = await fn(p);
    } catch (err) {
      if ((n.path(c.nodes.generation) === p && n.parent === parent) || attempt === 4) throw err;
      continue;
    }
    if ((n.path(c.nodes.generation) === p && n.parent === parent) || attempt === 4) return r;
  }
}
