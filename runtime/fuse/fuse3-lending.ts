/**
 * Directory listings lent to the addon (fuse3_entries.c), which then answers LOOKUPs under
 * them without a trip to JS: a name listed with its entry, any other with a cached "no such
 * entry". Node's module resolution asks thousands of these at start-up, most for names that
 * do not exist, and a fresh mount of an image answers every one.
 *
 * Only a directory the engine says cannot change behind our back is lent (`unchangingListing`:
 * an image directory the upper has no counterpart of), and every listing is taken back
 * before any request that may change the tree is handled (`beginChange`; the set of requests
 * that cannot is UNCHANGING_OPS). A listing is made from the engine's answers across awaits,
 * so it is lent only if no change began (or was still running) meanwhile. The nodes of a lent
 * listing stay in the node table until taken back, and the lookups the addon answered are
 * then added to their counts (FORGETs meanwhile take from the addon's count first), so the
 * kernel's counts stay exact. `OVERPACK_FUSE_LEND=0` answers every LOOKUP in JS.
 */
import { S_IFDIR, S_IFMT, type FsOps } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import type { FsNode } from './node-table.js';
import { ATTR_FIELDS, packAttr } from './fuse3-wire.js';

/** A bigger directory is left to JS: lending it costs a stat of every entry, up front. */
const MAX_LENT_ENTRIES = 10_000;

/**
 * Lending ahead: until the tree first changes, the subdirectories of a lent listing are lent
 * too, one per turn of the event loop (requests are answered in between), breadth first,
 * up to this many entries in all. A fresh mount's first lookups walk down a few levels of
 * an unchanged image (node_modules/x/lib/...); each directory's first lookup then reaches
 * the addon instead of JS. After a change, listings are lent only where looked up: every
 * change takes them all back, and a tree being written would be lent over and over.
 */
const AHEAD_ENTRIES = 20_000;

export class Lending {
  private readonly lentDirs = new Set<FsNode>();
  private readonly lentNodes = new Set<FsNode>();
  private readonly offering = new Set<FsNode>();
  /** Directories found too big to lend: not listed again at every lookup. */
  private readonly tooBig = new Set<FsNode>();
  /**
   * Directories the engine would not lend (the upper has them): not asked again at every lookup
   * in them until the tree changes (a lookup in a directory offers it, see fuse3-handlers.ts).
   */
  private notLendable = new WeakSet<FsNode>();
  /** Requests begun that may change the tree, and those of them not answered yet. */
  private changesBegun = 0;
  private changesRunning = 0;
  /** Entries lent now, and the directories waiting to be lent ahead. */
  private lentEntries = 0;
  private ahead: FsNode[] = [];
  private aheadScheduled = false;

  static enabled(ops: FsOps): boolean {
    return process.env.OVERPACK_FUSE_LEND !== '0' && ops.unchangingListing !== undefined;
  }

  constructor(private readonly c: Fuse3Context) {}

  /** A request that may change the tree begins: every listing is taken back first. */
  beginChange(): void {
    this.changesBegun++;
    this.changesRunning++;
    if (this.lentDirs.size > 0) this.reclaimAll();
  }

  endChange(): void {
    this.changesRunning--;
  }

  /** Lends `dir`'s listing if the engine says it cannot change behind our back; never throws. */
  async offer(dir: FsNode): Promise<void> {
    const { c } = this;
    if (this.changesRunning > 0 || this.lentDirs.has(dir) || this.offering.has(dir) || this.tooBig.has(dir) || this.notLendable.has(dir) || dir.type !== S_IFDIR) return;
    const since = this.changesBegun;
    this.offering.add(dir);
    try {
      const path = dir.path(c.nodes.generation);
      const listing = await c.ops.unchangingListing!(path);
      if (listing === null) {
        if (this.changesBegun === since) this.notLendable.add(dir);
        return;
      }
      const { names, attrs } = listing;
      if (names.length > MAX_LENT_ENTRIES) {
        this.tooBig.add(dir);
        return;
      }
      // From here on nothing awaits: the listing is lent as the engine gave it, or not at all.
      const session = c.session;
      if (session === null || this.changesBegun !== since || this.changesRunning > 0 || c.nodes.get(dir.id) !== dir) return;
      // Hard links are left to JS, whose replies never let the kernel cache them.
      if (attrs.some((a) => a.shared === true)) return;
      const packed = new Float64Array(names.length * ATTR_FIELDS);
      const ids = new Float64Array(names.length);
      const nodes = names.map((name, i) => {
        packAttr(attrs[i]!, packed, i);
        const n = c.nodes.lend(dir, name, attrs[i]!.mode & S_IFMT);
        ids[i] = n.id;
        return n;
      });
      if (c.fuse.lendDir(session, dir.id, names, ids, packed, c.entryT, c.attrT, c.negT) !== 0) {
        for (const n of nodes) c.nodes.unlend(n, 0);
        return;
      }
      this.lentDirs.add(dir);
      for (const n of nodes) this.lentNodes.add(n);
      this.lentEntries += nodes.length;
      if (this.changesBegun === 0) for (const n of nodes) if (n.type === S_IFDIR) this.ahead.push(n);
      this.scheduleAhead();
    } catch {
      // Not lent: its lookups keep coming to JS.
    } finally {
      this.offering.delete(dir);
    }
  }

  private scheduleAhead(): void {
    if (this.aheadScheduled || this.ahead.length === 0) return;
    this.aheadScheduled = true;
    setImmediate(() => {
      this.aheadScheduled = false;
      void this.lendAhead();
    });
  }

  private async lendAhead(): Promise<void> {
    if (this.changesBegun > 0 || this.lentEntries >= AHEAD_ENTRIES) {
      this.ahead = [];
      return;
    }
    const dir = this.ahead.shift();
    // Still in the table and lent (a listing taken back meanwhile took its nodes with it).
    if (dir && this.c.nodes.get(dir.id) === dir && this.lentNodes.has(dir)) await this.offer(dir);
    this.scheduleAhead();
  }

  /** Every listing taken back from the addon, with the lookups it answered added to the nodes. */
  private reclaimAll(): void {
    const { c } = this;
    const held = new Map<number, number>();
    if (c.session !== null) {
      const counts = c.fuse.reclaimEntries(c.session);
      for (let i = 0; i + 1 < counts.length; i += 2) held.set(counts[i]!, counts[i + 1]!);
    }
    const nodes = [...this.lentNodes];
    this.lentNodes.clear();
    this.lentDirs.clear();
    this.lentEntries = 0;
    this.ahead = [];
    this.notLendable = new WeakSet();
    for (const n of nodes) c.nodes.unlend(n, held.get(n.id) ?? 0);
  }
}
