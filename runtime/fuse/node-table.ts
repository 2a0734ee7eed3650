/**
 * The kernel's view of the tree for the libfuse 3 binding: node id → node, each node under its
 * parent by name, with the lookup counts the kernel holds, turning a node id into the path the
 * engine (FsOps) speaks in.
 */
import type { Attr } from '../vfs/index.js';
import { childOf, S_IFDIR } from '../vfs/index.js';

export const ROOT_ID = 1;

/** One inode the kernel knows (or a directory on the way to one), named by its place in the tree. */
export class FsNode {
  nlookup = 0;
  /** The file type bits (S_IFMT) the kernel was told: it refuses a node that changes type (EIO). */
  type = 0;
  children: Map<string, FsNode> | null = null;
  /** The last listing sent for this directory, for READDIR requests that continue it. */
  listing: Listing | null = null;
  /**
   * Entries in the last listing sent whole: the kernel's next request, past its end, is
   * answered empty without listing the directory again (every listing ends with one).
   */
  listedWhole = -1;
  /** In a listing lent to the addon (fuse3-lending.ts): kept, whatever the count, until taken back. */
  lent = false;
  /** The attributes when the file lost its name while the kernel held it (for fstat). */
  openedAttr: Attr | null = null;
  /** A handle taken when the file lost its name while the kernel still knew it (fuse3-unlinked.ts). */
  keptFh = 0;
  private cachedPath: string | null = null;
  private cachedAt = -1;

  constructor(readonly id: number, public parent: FsNode | null, public name: string) {}

  /** The path, recomputed only after a rename moved something (`generation` changed). */
  path(generation: number): string {
    if (this.cachedAt === generation && this.cachedPath !== null) return this.cachedPath;
    const p = this.parent === null ? (this.id === ROOT_ID ? '/' : `/.overpack-unlinked-${this.id}`) : childOf(this.parent.path(generation), this.name);
    this.cachedPath = p;
    this.cachedAt = generation;
    return p;
  }
}

/** A directory's names as listed at offset 0, with the inode number and type READDIR needs. */
export interface Listing {
  names: string[];
  attrs: Float64Array;
}

/**
 * The kernel's view of the tree: node id → node, each node under its parent by name. A node
 * lives while the kernel holds lookups on it (LOOKUP, CREATE, MKDIR, ... and READDIRPLUS
 * entries count one each; FORGET gives them back) or while it has living children.
 * Unlinked nodes are detached: reachable by id (open files keep working through their
 * handles) but no longer by path.
 */
export class NodeTable {
  private readonly byId = new Map<number, FsNode>();
  private nextId = 2;
  /** Bumped by every rename, so cached paths are recomputed. */
  generation = 0;
  readonly root = new FsNode(ROOT_ID, null, '');

  /** `dropped` hears of every node the table lets go (to close what it kept). */
  constructor(private readonly dropped: (n: FsNode) => void) {
    this.root.nlookup = 1;
    this.root.type = S_IFDIR;
    this.byId.set(ROOT_ID, this.root);
  }

  get(id: number): FsNode | undefined {
    return this.byId.get(id);
  }

  peekChild(parent: FsNode, name: string): FsNode | undefined {
    return parent.children?.get(name);
  }

  /**
   * The node for `name` under `parent`, counting one lookup; created when missing. A child
   * of another type is a node whose entry was replaced meanwhile: it is detached and a new
   * node stands for the new entry (the kernel would refuse a node that changes type).
   */
  lookUp(parent: FsNode, name: string, type: number): FsNode {
    let n = parent.children?.get(name);
    if (n && n.type !== type) {
      this.detach(parent, name);
      n = undefined;
    }
    if (!n) {
      n = new FsNode(this.nextId++, parent, name);
      n.type = type;
      (parent.children ??= new Map()).set(name, n);
      this.byId.set(n.id, n);
    }
    n.nlookup++;
    return n;
  }

  /** The node for `name` under `parent`, as lookUp, counting no lookup: it is lent (kept until unlend). */
  lend(parent: FsNode, name: string, type: number): FsNode {
    const n = this.lookUp(parent, name, type);
    n.nlookup--;
    n.lent = true;
    return n;
  }

  /** A lent node taken back, with the `lookups` the addon answered for it. */
  unlend(n: FsNode, lookups: number): void {
    n.lent = false;
    n.nlookup += lookups;
    this.maybeDrop(n);
  }

  forget(id: number, count: number): void {
    const n = this.byId.get(id);
    if (!n || id === ROOT_ID) return;
    n.nlookup -= count;
    this.maybeDrop(n);
  }

  private maybeDrop(n: FsNode): void {
    if (n.nlookup > 0 || n.lent || n.id === ROOT_ID || (n.children !== null && n.children.size > 0)) return;
    this.byId.delete(n.id);
    if (n.keptFh) this.dropped(n);
    const parent = n.parent;
    if (parent && parent.children?.get(n.name) === n) {
      parent.children.delete(n.name);
      this.maybeDrop(parent);
    }
  }

  /** `name` under `parent` was removed: its node stays reachable by id until forgotten. */
  detach(parent: FsNode, name: string): void {
    const n = parent.children?.get(name);
    if (!n) return;
    parent.children!.delete(name);
    n.parent = null;
    this.generation++;
    this.maybeDrop(n);
    this.maybeDrop(parent);
  }

  move(parent: FsNode, name: string, newParent: FsNode, newName: string): void {
    const n = parent.children?.get(name);
    this.detach(newParent, newName);
    if (!n) return;
    parent.children!.delete(name);
    n.parent = newParent;
    n.name = newName;
    (newParent.children ??= new Map()).set(newName, n);
    this.generation++;
    this.maybeDrop(parent);
  }
}
