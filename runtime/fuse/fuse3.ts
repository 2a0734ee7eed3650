/**
 * The libfuse 3 binding: our own N-API addon (`lowlevel/overpack_fuse3.c`) over libfuse's
 * low-level, inode-based API, served on Node's main thread (no thread hop per request: the
 * addon reads requests when libuv reports the device readable and calls `dispatch` below).
 *
 * The kernel speaks in node ids; the engine (`FsOps`) speaks in paths: `node-table.ts` maps
 * one to the other, `fuse3-wire.ts` holds the addon's request and reply layout. The protocol
 * work that makes this binding fast is here:
 * - READDIRPLUS: a listing carries every entry's attributes, so a walk costs one request per
 *   directory instead of one LOOKUP per entry;
 * - no OPENDIR/RELEASEDIR (answered ENOSYS once, see the addon) and so the kernel caches each
 *   directory's listing until it changes through this mount;
 * - no OPEN/RELEASE either (ENOSYS once): files are read and written by path with file
 *   handle 0, kept cached by the kernel across opens;
 * - entry, attribute and negative timeouts in every reply; FLUSH and ACCESS never reach JS;
 * - a READ of a file on disk is answered from its descriptor in the addon (spliced into the
 *   device), so file data never enters JS; other layers fill a reused buffer.
 * Replies may come later than the request (after asynchronous I/O); meanwhile other requests
 * keep flowing. Every request is answered exactly once, and unmount waits for the unanswered.
 */
import { constants as fsc } from 'node:fs';
import { constants as osc } from 'node:os';
import type { FuseBinding, MountedFs, MountOptions } from './binding.js';
import type { Attr, FsOps } from '../vfs/index.js';
import { failureErrno } from './failure.js';
import { unmountPath } from './unmount.js';
import { loadAddon, type OverpackAddon, type Req, type Session } from '../native/addon.js';
import { FsError } from '../vfs/index.js';
import { childOf, S_IFMT, S_IFREG } from '../vfs/index.js';
import { FsNode, NodeTable, ROOT_ID, type Listing } from './node-table.js';
import {
  ATTR_FIELDS, B, F, MAX_WRITE, MOUNT_WRITEBACK, MIN_DIRENT, MIN_DIRENTPLUS, N, OP, packAttr, READ_BUFFER_BYTES, READ_BUFFERS_KEPT,
  RENAME_EXCHANGE, RENAME_NOREPLACE, requestedTime, S, SET_ATIME, SET_ATIME_NOW, SET_GID, SET_MODE, SET_MTIME,
  SET_MTIME_NOW, SET_SIZE, SET_UID, type Wire,
} from './fuse3-wire.js';

export { FUSE3_ADDON, LIBFUSE3 } from '../native/addon.js';

const { ENOENT, EEXIST, EINVAL, ERANGE, ENOTCONN, ENODATA } = osc.errno;
const CAPS_XATTR = 'security.capability';

class Fuse3Server {
  private readonly nodes = new NodeTable((n) => void this.ops.release(n.path(this.nodes.generation), n.kept).catch(() => undefined));
  private session: Session | null = null;
  private readonly scratch = new Float64Array(ATTR_FIELDS);
  private pending = 0;
  private drained: (() => void) | null = null;
  private endedResolve!: () => void;
  /** Resolves when the kernel side is gone (unmounted from outside, or by us). */
  readonly ended = new Promise<void>((resolve) => (this.endedResolve = resolve));
  private readonly entryT: number;
  private readonly attrT: number;
  private readonly negT: number;
  private readonly writeback: boolean;

  constructor(private readonly fuse: OverpackAddon, private readonly ops: FsOps, options: MountOptions) {
    this.entryT = options.entryTimeout;
    this.attrT = options.attrTimeout;
    this.negT = options.negativeTimeout;
    this.writeback = options.writeback ?? false;
  }

  /**
   * Buffers for READ answers, reused: a fresh 128 KiB-1 MiB Buffer per request made every read
   * fault in new pages (and charge them to the cgroup) and fed the garbage collector; on a cold
   * 256 MiB read that was a fifth of the serving thread's time. replyBuf copies the data out
   * before it returns, so a buffer is free again as soon as its request is answered. Several
   * reads can be waiting at once (each awaits its handle), hence a small stack, not one buffer.
   */
  private readonly readBuffers: Buffer[] = [];
  private readonly emptyRead = Buffer.alloc(0);

  private takeReadBuffer(size: number): Buffer {
    if (size > READ_BUFFER_BYTES) return Buffer.allocUnsafe(size);
    return this.readBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  }

  private giveReadBuffer(buf: Buffer): void {
    if (buf.length === READ_BUFFER_BYTES && this.readBuffers.length < READ_BUFFERS_KEPT) this.readBuffers.push(buf);
  }

  /** Keeps the process alive while mounted, even after the kernel side went away, until close(). */
  private keepAlive: NodeJS.Timeout | null = null;

  start(mountPoint: string, args: string[]): void {
    this.session = this.fuse.mount(mountPoint, args, (op: number, req: Req, ...a: unknown[]) => this.dispatch(op, req, a), MAX_WRITE, this.writeback ? MOUNT_WRITEBACK : 0);
    this.keepAlive = setInterval(() => undefined, 1 << 30);
  }

  /** Stops serving: waits (bounded) for unanswered requests, then closes the session. */
  async close(): Promise<void> {
    if (!this.session) return;
    if (this.pending > 0) {
      await Promise.race([
        new Promise<void>((resolve) => (this.drained = resolve)),
        new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref()),
      ]);
    }
    const s = this.session;
    this.session = null;
    this.fuse.close(s);
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.printStats();
    this.endedResolve();
  }

  private node(id: number): FsNode {
    const n = this.nodes.get(id);
    if (!n) throw new FsError('ESTALE', 'node', `#${id}`, 'the kernel asked for a node it had forgotten');
    return n;
  }

  /** The path of a node that still has a name; an unlinked one answers ENOENT. */
  private pathOf(id: number): string {
    const n = this.node(id);
    if (n.parent === null && n.id !== ROOT_ID) throw new FsError('ENOENT', 'path', `#${id}`, 'unlinked');
    return n.path(this.nodes.generation);
  }

  /** For requests that carry a file handle: they work on unlinked files too (by handle). */
  private handlePath(id: number): string {
    return this.node(id).path(this.nodes.generation);
  }

  /** OVERPACK_FUSE_STATS=1: per-operation request counts and time to answer, printed at close. */
  private readonly stats = process.env.OVERPACK_FUSE_STATS === '1' ? new Map<number, { n: number; ns: bigint }>() : null;

  private record(op: number, t0: bigint): void {
    const e = this.stats!.get(op) ?? { n: 0, ns: 0n };
    e.n++;
    e.ns += process.hrtime.bigint() - t0;
    this.stats!.set(op, e);
  }

  private printStats(): void {
    if (!this.stats) return;
    const rows = [...this.stats].sort((x, y) => y[1].n - x[1].n);
    const total = rows.reduce((sum, [, e]) => sum + e.n, 0);
    const lines = rows.map(([op, e]) => `  ${(OP_NAMES[op] ?? String(op)).padEnd(12)} ${String(e.n).padStart(9)}  ${(Number(e.ns / BigInt(e.n)) / 1000).toFixed(1).padStart(8)} µs`);
    process.stderr.write(`overpack: FUSE requests (fuse3): ${total}\n  op               count  mean time to answer\n${lines.join('\n')}\n`);
  }

  private dispatch(op: number, req: Req, a: Wire): void {
    if (this.stats && op !== OP.EXIT) {
      const t0 = process.hrtime.bigint();
      this.dispatchOne(op, req, a, t0);
    } else {
      this.dispatchOne(op, req, a, 0n);
    }
  }

  private dispatchOne(op: number, req: Req, a: Wire, t0: bigint): void {
    if (op === OP.FORGET) {
      if (t0) this.record(op, t0);
      this.nodes.forget(N(a, 0), N(a, 1));
      return;
    }
    if (op === OP.EXIT) {
      this.endedResolve();
      return;
    }
    this.pending++;
    let work: Promise<void>;
    try {
      work = this.handle(op, req, a);
    } catch (err) {
      work = Promise.reject(err);
    }
    work.then(
      () => {
        if (t0) this.record(op, t0);
        this.settled();
      },
      (err: unknown) => {
        this.fuse.replyErr(req, failureErrno(OP_NAMES[op] ?? `op ${op}`, err));
        if (t0) this.record(op, t0);
        this.settled();
      },
    );
  }

  private settled(): void {
    if (--this.pending === 0 && this.drained) {
      this.drained();
      this.drained = null;
    }
  }

  /** Each case answers its request as its last step; a throw before that becomes an errno. */
  private async handle(op: number, req: Req, a: Wire): Promise<void> {
    const f = this.fuse;
    const ops = this.ops;
    switch (op) {
      case OP.LOOKUP: {
        const parent = this.node(N(a, 0));
        const name = S(a, 1);
        let attr: Attr;
        try {
          attr = await this.stable(parent, (p) => ops.getattr(childOf(p, name)));
        } catch (err) {
          if ((err as { errno?: number }).errno !== ENOENT) throw err;
          // A cached miss: the kernel will not ask again for negative_timeout seconds.
          f.replyEntry(req, 0, this.scratch, this.negT, 0);
          return;
        }
        this.replyNewEntry(req, parent, name, attr);
        return;
      }
      case OP.GETATTR: {
        const node = this.node(N(a, 0));
        const fh = N(a, 1);
        const attr = await this.stable(node, (p) =>
          fh > 0 ? ops.fgetattr(p, fh) : node.parent === null && node.id !== ROOT_ID ? this.unlinkedAttr(node, p) : fh === 0 ? ops.fgetattr(p, 0) : ops.getattr(p),
        );
        this.checkType(node, attr);
        packAttr(attr, this.scratch);
        f.replyAttr(req, this.scratch, this.attrTimeout(attr));
        return;
      }
      case OP.SETATTR:
        return this.setattr(req, N(a, 0), N(a, 1), F(a, 2), N(a, 3) < 0 ? -1 : this.fhFor(this.node(N(a, 0)), N(a, 3)));
      case OP.READLINK:
        f.replyReadlink(req, await ops.readlink(this.pathOf(N(a, 0))));
        return;
      case OP.MKNOD:
      case OP.MKDIR:
      case OP.SYMLINK: {
        const parent = this.node(N(a, 0));
        const name = S(a, 1);
        const p = childOf(parent.path(this.nodes.generation), name);
        if (op === OP.MKNOD) await ops.mknod(p, N(a, 2), N(a, 3));
        else if (op === OP.MKDIR) await ops.mkdir(p, N(a, 2));
        else await ops.symlink(S(a, 2), p);
        this.replyNewEntry(req, parent, name, await ops.getattr(p));
        return;
      }
      case OP.UNLINK:
      case OP.RMDIR: {
        const parent = this.node(N(a, 0));
        const name = S(a, 1);
        const p = childOf(parent.path(this.nodes.generation), name);
        await this.keepIfKnown(parent, name, p);
        if (op === OP.UNLINK) await ops.unlink(p);
        else await ops.rmdir(p);
        this.nodes.detach(parent, name);
        f.replyErr(req, 0);
        return;
      }
      case OP.RENAME: {
        const parent = this.node(N(a, 0));
        const name = S(a, 1);
        const newParent = this.node(N(a, 2));
        const newName = S(a, 3);
        const flags = N(a, 4);
        const from = childOf(parent.path(this.nodes.generation), name);
        const to = childOf(newParent.path(this.nodes.generation), newName);
        if (flags & RENAME_EXCHANGE) {
          f.replyErr(req, EINVAL);
          return;
        }
        if (flags & RENAME_NOREPLACE) {
          const exists = await ops.getattr(to).then(() => true, () => false);
          if (exists) {
            f.replyErr(req, EEXIST);
            return;
          }
        }
        await this.keepIfKnown(newParent, newName, to);
        await ops.rename(from, to);
        this.nodes.move(parent, name, newParent, newName);
        f.replyErr(req, 0);
        return;
      }
      case OP.LINK: {
        const existing = this.pathOf(N(a, 0));
        const newParent = this.node(N(a, 1));
        const newName = S(a, 2);
        const p = childOf(newParent.path(this.nodes.generation), newName);
        await ops.link(existing, p);
        // The existing name is its own kernel node: its cached link count (and, after a
        // copy-up, its whole attributes) are stale now.
        if (this.session) this.fuse.invalInode(this.session, N(a, 0));
        this.replyNewEntry(req, newParent, newName, await ops.getattr(p));
        return;
      }
      case OP.OPEN:
        // ENOSYS once, and the kernel stops sending OPEN and RELEASE (zero-message open): every
        // file is then open with keep_cache, and reads and writes arrive with file handle 0,
        // which the engine serves by path from its own cache of descriptors. Upper hard links
        // stay coherent because their attributes are never cached (the kernel's automatic
        // invalidation drops their pages when a read sees a new mtime). Unlinked files that are
        // still open keep working through keepIfKnown.
        f.replyErr(req, osc.errno.ENOSYS);
        return;
      case OP.CREATE: {
        const parent = this.node(N(a, 0));
        const name = S(a, 1);
        const p = childOf(parent.path(this.nodes.generation), name);
        // The file is made (with the caller's mode and flags) and our handle closed at once:
        // with zero-message opens the kernel never sends RELEASE, so the file is used by path
        // with handle 0 like every other.
        await ops.release(p, await ops.create(p, N(a, 2), N(a, 3)));
        const attr = await ops.getattr(p);
        const n = this.nodes.lookUp(parent, name, attr.mode & S_IFMT);
        packAttr(attr, this.scratch);
        if (f.replyCreate(req, n.id, this.scratch, this.entryT, this.attrTimeout(attr), 0, 0) !== 0) this.nodes.forget(n.id, 1);
        return;
      }
      case OP.READ: {
        const size = N(a, 1);
        const node = this.node(N(a, 0));
        const path = node.path(this.nodes.generation);
        const fh = this.fhFor(node, N(a, 3));
        // A file on disk is answered from its descriptor in C (spliced, see replyFd): the data
        // never enters JS. Nothing may run between getting the descriptor and replying.
        const offset = N(a, 2);
        const span = ops.readFd ? await ops.readFd(path, fh, offset, size) : null;
        if (span !== null) {
          // A span inside a bigger file (an image) ends where the file does, not at its EOF.
          const n = span.size === null ? size : Math.max(0, Math.min(size, span.size - offset));
          if (n === 0) f.replyBuf(req, this.emptyRead, 0);
          else f.replyFd(req, span.fd, n, span.base + offset);
          return;
        }
        const buf = this.takeReadBuffer(size);
        try {
          const n = await ops.read(path, fh, buf, size, N(a, 2));
          f.replyBuf(req, buf, n);
        } finally {
          this.giveReadBuffer(buf);
        }
        return;
      }
      case OP.WRITE: {
        const data = B(a, 1);
        const node = this.node(N(a, 0));
        f.replyWrite(req, await this.following(node, (p) => ops.write(p, this.fhFor(node, N(a, 3)), data, data.length, N(a, 2))));
        return;
      }
      case OP.RELEASE:
        // Only if the kernel ever sends one (zero-message opens make it stop).
        await ops.release(this.node(N(a, 0)).path(this.nodes.generation), N(a, 1));
        f.replyErr(req, 0);
        return;
      case OP.FSYNC:
        {
          const node = this.node(N(a, 0));
          await ops.fsync(node.path(this.nodes.generation), this.fhFor(node, N(a, 2)), N(a, 1) !== 0);
        }
        f.replyErr(req, 0);
        return;
      case OP.READDIR:
      case OP.READDIRPLUS:
        return this.readdir(req, N(a, 0), N(a, 1), N(a, 2), op === OP.READDIRPLUS);
      case OP.STATFS: {
        const s = await ops.statfs(this.pathOf(N(a, 0)));
        const v = new Float64Array([s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.fsid, s.flag, s.namemax]);
        f.replyStatfs(req, v);
        return;
      }
      case OP.SETXATTR:
        await ops.setxattr(this.pathOf(N(a, 0)), S(a, 1), B(a, 2), N(a, 3));
        f.replyErr(req, 0);
        return;
      case OP.GETXATTR: {
        const name = S(a, 1);
        let value: Buffer;
        try {
          value = await ops.getxattr(this.pathOf(N(a, 0)), name);
        } catch (err) {
          // Asked before every write: remember "none" so the addon answers the next ones itself.
          if (name === CAPS_XATTR && (err as { errno?: number }).errno === ENODATA && this.session) this.fuse.noCapability(this.session, N(a, 0));
          throw err;
        }
        return this.replySized(req, value, N(a, 2));
      }
      case OP.LISTXATTR: {
        const names = await ops.listxattr(this.pathOf(N(a, 0)));
        return this.replySized(req, Buffer.from(names.map((n) => `${n}\0`).join(''), 'utf8'), N(a, 1));
      }
      case OP.REMOVEXATTR:
        await ops.removexattr(this.pathOf(N(a, 0)), S(a, 1));
        f.replyErr(req, 0);
        return;
      case OP.FALLOCATE: {
        const node = this.node(N(a, 0));
        await ops.fallocate(node.path(this.nodes.generation), this.fhFor(node, N(a, 4)), N(a, 1), N(a, 2), N(a, 3));
        f.replyErr(req, 0);
        return;
      }
      case OP.LSEEK: {
        const node = this.node(N(a, 0));
        f.replyLseek(req, await ops.lseek(node.path(this.nodes.generation), this.fhFor(node, N(a, 3)), N(a, 1), N(a, 2)));
        return;
      }
      default:
        f.replyErr(req, osc.errno.ENOSYS);
    }
  }

  /** Attributes of another type than the node's belong to whatever replaced it: not this node's. */
  private checkType(node: FsNode, attr: Attr): void {
    if ((attr.mode & S_IFMT) !== node.type) throw new FsError('ESTALE', 'getattr', node.path(this.nodes.generation), 'the entry was replaced');
  }

  /**
   * A regular file about to lose its name while the kernel still holds it (it may be open:
   * with zero-message opens we cannot tell) keeps a handle of its own until the kernel forgets
   * it, so reads, writes and fstat through open descriptors keep working after unlink or
   * rename-over, as on any local filesystem.
   */
  private async keepIfKnown(parent: FsNode, name: string, p: string): Promise<void> {
    const child = this.nodes.peekChild(parent, name);
    if (!child || child.nlookup <= 0 || child.type !== S_IFREG || child.kept) return;
    const attr = await this.ops.getattr(p).catch(() => null);
    if (!attr) return;
    child.openedAttr = attr;
    child.kept = await this.ops.open(p, attr.writable ? fsc.O_RDWR : fsc.O_RDONLY).catch(() => 0);
  }

  /** File handle 0 (zero-message open) on a node that lost its name means the handle it kept. */
  private fhFor(node: FsNode, fh: number): number {
    return fh === 0 && node.kept && node.parent === null ? node.kept : fh;
  }

  /**
   * fstat of a file whose name is gone: the kernel asks without a file handle (GETATTR_FH is
   * only set for its own internal refreshes), so answer through the handle the node kept,
   * or with what the file looked like when it lost its name.
   */
  private async unlinkedAttr(node: FsNode, p: string): Promise<Attr> {
    if (node.kept) {
      try {
        return { ...(await this.ops.fgetattr(p, node.kept)), nlink: 0 };
      } catch {
        /* a lower file's handle cannot stat itself; fall through */
      }
    }
    if (node.openedAttr) return { ...node.openedAttr, nlink: 0 };
    throw new FsError('ENOENT', 'getattr', p, 'unlinked and no longer open');
  }

  private replyNewEntry(req: Req, parent: FsNode, name: string, attr: Attr): void {
    const n = this.nodes.lookUp(parent, name, attr.mode & S_IFMT);
    packAttr(attr, this.scratch);
    // An interrupted caller never received the entry: give the lookup back.
    if (this.fuse.replyEntry(req, n.id, this.scratch, this.entryT, this.attrTimeout(attr)) !== 0) this.nodes.forget(n.id, 1);
  }

  /**
   * Each name of a hard-linked file is its own node, so a change through one name is not seen
   * in the kernel's cached attributes of the others: those (`shared`) are never cached.
   */
  private attrTimeout(attr: Attr): number {
    return attr.shared ? 0 : this.attrT;
  }

  /** getxattr/listxattr: size 0 asks for the length only; a too small buffer is ERANGE. */
  private replySized(req: Req, value: Buffer, size: number): void {
    if (size === 0) this.fuse.replyXattrSize(req, value.length);
    else if (value.length > size) this.fuse.replyErr(req, ERANGE);
    else this.fuse.replyBuf(req, value, value.length);
  }

  private async setattr(req: Req, id: number, toSet: number, v: Float64Array, fh: number): Promise<void> {
    const ops = this.ops;
    const node = this.node(id);
    if (node.parent === null && node.id !== ROOT_ID && !(toSet & (SET_MODE | SET_UID | SET_GID))) return this.setattrUnlinked(req, node, toSet, v);
    const p = fh >= 0 ? this.handlePath(id) : this.pathOf(id);
    if (toSet & SET_MODE) await ops.chmod(p, v[0]!);
    if (toSet & (SET_UID | SET_GID)) await ops.chown(p, toSet & SET_UID ? v[1]! : 0xffffffff, toSet & SET_GID ? v[2]! : 0xffffffff);
    if (toSet & SET_SIZE) await (fh >= 0 ? ops.ftruncate(p, fh, v[3]!) : ops.truncate(p, v[3]!));
    if (toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) {
      const atime = requestedTime(toSet, SET_ATIME, SET_ATIME_NOW, v[4]!, v[5]!);
      const mtime = requestedTime(toSet, SET_MTIME, SET_MTIME_NOW, v[6]!, v[7]!);
      await ops.utimens(p, atime, mtime);
    }
    const attr = fh >= 0 ? await ops.fgetattr(p, fh) : await ops.getattr(p);
    this.checkType(this.node(id), attr);
    packAttr(attr, this.scratch);
    this.fuse.replyAttr(req, this.scratch, this.attrTimeout(attr));
  }

  /**
   * Size and times of a file that lost its name while the kernel held it, through the handle it
   * kept. Under the writeback cache the kernel owns a file's mtime and ctime while it has dirty
   * pages and sends them at close or fsync, often after the app unlinked the file; failing
   * that SETATTR made the app's close() fail with EIO.
   */
  private async setattrUnlinked(req: Req, node: FsNode, toSet: number, v: Float64Array): Promise<void> {
    const p = node.path(this.nodes.generation);
    if (!node.kept) throw new FsError('ENOENT', 'setattr', p, 'unlinked and no longer open');
    if (toSet & SET_SIZE) await this.ops.ftruncate(p, node.kept, v[3]!);
    if (toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW) && this.ops.futimens) {
      const atime = requestedTime(toSet, SET_ATIME, SET_ATIME_NOW, v[4]!, v[5]!);
      const mtime = requestedTime(toSet, SET_MTIME, SET_MTIME_NOW, v[6]!, v[7]!);
      await this.ops.futimens(p, node.kept, atime, mtime);
    }
    const attr = await this.unlinkedAttr(node, p);
    this.checkType(node, attr);
    packAttr(attr, this.scratch);
    this.fuse.replyAttr(req, this.scratch, this.attrTimeout(attr));
  }

  /**
   * Names are listed at offset 0 and kept on the node until the next offset 0, so a listing
   * read in several requests keeps its offsets while the directory changes (a removed name
   * may still be listed, as POSIX allows; a name is never skipped). READDIRPLUS attributes are not kept: each request stats the entries it
   * can hold, fresh, and gives each a node id (counting one lookup) only after the last await,
   * so no concurrent change can slip between the attributes and the node they describe.
   */
  private async readdir(req: Req, id: number, size: number, offset: number, plus: boolean): Promise<void> {
    const dir = this.node(id);
    if (offset > 0 && !dir.listing && offset >= dir.listedWhole && dir.listedWhole >= 0) {
      this.fuse.replyDir(req, size, offset, [], new Float64Array(0), new Float64Array(0), plus, this.entryT, this.attrT);
      return;
    }
    dir.listedWhole = -1;
    if (offset === 0 || !dir.listing) dir.listing = await this.stable(dir, (p) => this.list(p));
    const { names, attrs } = dir.listing;
    // Only the entries one reply can hold are sent (and, for READDIRPLUS, stat'ed): a reply
    // costs the same in a directory of ten entries or of a hundred thousand.
    const count = Math.max(0, Math.min(names.length - offset, Math.floor(size / (plus ? MIN_DIRENTPLUS : MIN_DIRENT)) + 1));
    const windowNames = names.slice(offset, offset + count);
    let window = attrs.subarray(offset * ATTR_FIELDS, (offset + count) * ATTR_FIELDS);
    const ids = new Float64Array(plus ? count : 0);
    let nodes: Array<FsNode | null> = [];
    if (plus) {
      const fresh = await this.stable(dir, (p) =>
        Promise.all(windowNames.map((name) => (name === '.' || name === '..' ? null : this.ops.getattr(childOf(p, name)).catch(() => null)))),
      );
      // From here on nothing awaits: ids, attributes and the reply go out together.
      window = window.slice();
      nodes = fresh.map((attr, k) => {
        // Hard links are left to LOOKUP, whose reply does not let the kernel cache them.
        if (!attr || this.attrTimeout(attr) === 0) return null;
        packAttr(attr, window, k);
        const n = this.nodes.lookUp(dir, windowNames[k]!, attr.mode & S_IFMT);
        ids[k] = n.id;
        return n;
      });
    }
    const added = this.fuse.replyDir(req, size, offset, windowNames, window, ids, plus, this.entryT, this.attrT);
    // Entries that did not fit were not seen by the kernel: give their lookups back.
    for (let k = added; k < nodes.length; k++) if (nodes[k]) this.nodes.forget(nodes[k]!.id, 1);
    if (offset + added >= names.length) {
      dir.listing = null;
      dir.listedWhole = names.length;
    }
  }

  /** Runs `fn` on the node's path until the node was not moved or unlinked meanwhile. */
  private async stable<T>(node: FsNode, fn: (path: string) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const p = node.path(this.nodes.generation);
      const r = await fn(p);
      if (node.path(this.nodes.generation) === p || attempt === 4) return r;
    }
  }

  /**
   * For writes by path: one that failed or landed while its node was renamed or unlinked is
   * made again under the node's new path or kept handle (a positioned write may be repeated).
   * Under the writeback cache the kernel sends a file's pages after the app wrote them, so a
   * rename by another process can come between; the app would see the failure only as EIO at
   * close.
   */
  private async following<T>(node: FsNode, fn: (path: string) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const p = node.path(this.nodes.generation);
      const parent = node.parent;
      let r: T;
      try {
        r = await fn(p);
      } catch (err) {
        if ((node.path(this.nodes.generation) === p && node.parent === parent) || attempt === 4) throw err;
        continue;
      }
      if ((node.path(this.nodes.generation) === p && node.parent === parent) || attempt === 4) return r;
    }
  }

  private async list(dirPath: string): Promise<Listing> {
    const { names, attrs } = await this.ops.readdir(dirPath);
    const packed = new Float64Array(names.length * ATTR_FIELDS);
    for (let i = 0; i < names.length; i++) {
      packed[i * ATTR_FIELDS] = attrs[i]!.ino;
      packed[i * ATTR_FIELDS + 1] = attrs[i]!.mode;
    }
    return { names, attrs: packed };
  }
}

const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]));

/** libfuse 3 mount options: each for a reason (see the module comment and the README). */
function mountArgs(o: MountOptions): string[] {
  // default_permissions first: the kernel's permission checks must survive any fsname.
  const opts = ['default_permissions', 'subtype=overpack', `fsname=${o.fsName.replace(/[,\s\\]/g, '_').slice(0, 1024)}`];
  if (o.allowOther) opts.push('allow_other');
  const args = ['overpack', '-o', opts.join(',')];
  if (o.debug) args.push('-d');
  return args;
}

export const fuse3Binding: FuseBinding = {
  name: 'fuse3',
  available(): boolean {
    try {
      loadAddon();
      return true;
    } catch {
      return false;
    }
  },
  async mount(mountPoint: string, ops: FsOps, options: MountOptions): Promise<MountedFs> {
    const server = new Fuse3Server(loadAddon(), ops, options);
    server.start(mountPoint, mountArgs(options));
    let unmounting: Promise<void> | undefined;
    let gone = false;
    void server.ended.then(() => (gone = true));
    return {
      mountPoint,
      unmount(): Promise<void> {
        unmounting ??= (async () => {
          if (!gone) {
            // Detach from a child process, so this loop keeps answering while the kernel
            // finishes; lazily if something still has files open inside.
            let r = await unmountPath(mountPoint, false);
            if (!r.ok) r = await unmountPath(mountPoint, true);
            if (!r.ok) throw Object.assign(new Error(r.message), { errno: ENOTCONN });
          }
          await server.close();
        })();
        return unmounting;
      },
    };
  },
};
