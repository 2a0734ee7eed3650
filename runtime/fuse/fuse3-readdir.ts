/**
 * READDIR and READDIRPLUS for the fuse3 binding. Names are listed at offset 0 and kept on the
 * node until the next offset 0, so a listing read in several requests keeps its offsets while
 * the directory changes (a removed name may still be listed, as POSIX allows; a name is never
 * skipped). READDIRPLUS attributes are not kept: each request stats the entries it can hold,
 * fresh, and gives each a node id (counting one lookup) only after the last await, so no
 * concurrent change can slip between the attributes and the node they describe.
 */
import type { Req } from '../native/addon.js';
import { childOf, S_IFMT } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import { node, stable } from './fuse3-paths.js';
import { ATTR_FIELDS, MIN_DIRENT, MIN_DIRENTPLUS, packAttr } from './fuse3-wire.js';
import type { FsNode, Listing } from './node-table.js';

export async function readdir(c: Fuse3Context, req: Req, id: number, size: number, offset: number, plus: boolean): Promise<void> {
  const dir = node(c, id);
  if (offset > 0 && !dir.listing && offset >= dir.listedWhole && dir.listedWhole >= 0) {
    c.fuse.replyDir(req, size, offset, [], new Float64Array(0), new Float64Array(0), plus, c.entryT, c.attrT);
    return;
  }
  dir.listedWhole = -1;
  if (offset === 0 || !dir.listing) dir.listing = await stable(c, dir, (p) => list(c, p));
  const { names, attrs } = dir.listing;
  // Only the entries one reply can hold are sent (and, for READDIRPLUS, stat'ed): a reply
  // costs the same in a directory of ten entries or of a hundred thousand.
  const count = Math.max(0, Math.min(names.length - offset, Math.floor(size / (plus ? MIN_DIRENTPLUS : MIN_DIRENT)) + 1));
  const windowNames = names.slice(offset, offset + count);
  let window = attrs.subarray(offset * ATTR_FIELDS, (offset + count) * ATTR_FIELDS);
  const ids = new Float64Array(plus ? count : 0);
  let nodes: Array<FsNode | null> = [];
  if (plus) {
    const fresh = await stable(c, dir, (p) =>
      Promise.all(windowNames.map((name) => (name === '.' || name === '..' ? null : c.ops.getattr(childOf(p, name)).catch(() => null)))),
    );
    // From here on nothing awaits: ids, attributes and the reply go out together.
    window = window.slice();
    nodes = fresh.map((attr, k) => {
      // Hard links are left to LOOKUP, whose reply does not let the kernel cache them.
      if (!attr || c.attrTimeout(attr) === 0) return null;
      packAttr(attr, window, k);
      const n = c.nodes.lookUp(dir, windowNames[k]!, attr.mode & S_IFMT);
      ids[k] = n.id;
      return n;
    });
  }
  const added = c.fuse.replyDir(req, size, offset, windowNames, window, ids, plus, c.entryT, c.attrT);
  // Entries that did not fit were not seen by the kernel: give their lookups back.
  for (let k = added; k < nodes.length; k++) if (nodes[k]) c.nodes.forget(nodes[k]!.id, 1);
  if (offset + added >= names.length) {
    dir.listing = null;
    dir.listedWhole = names.length;
  }
}

/** A directory's names with the inode number and type each READDIR entry carries. */
async function list(c: Fuse3Context, dirPath: string): Promise<Listing> {
  const { names, attrs } = await c.ops.readdir(dirPath);
  const packed = new Float64Array(names.length * ATTR_FIELDS);
  for (let i = 0; i < names.length; i++) {
    packed[i * ATTR_FIELDS] = attrs[i]!.ino;
    packed[i * ATTR_FIELDS + 1] = attrs[i]!.mode;
  }
  return { names, attrs: packed };
}
