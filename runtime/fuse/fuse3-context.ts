/**
 * What every handler of the fuse3 binding works with: the addon and its session, the engine
 * (`FsOps`), the kernel's nodes (`node-table.ts`), the mount's timeouts, the buffers READ
 * answers from, and the replies that carry attributes.
 */
import { constants as osc } from 'node:os';
import type { MountOptions } from './binding.js';
import type { Attr, FsOps } from '../vfs/index.js';
import { S_IFMT } from '../vfs/index.js';
import type { OverpackAddon, Req, Session } from '../native/addon.js';
import { NodeTable, type FsNode } from './node-table.js';
import { Lending } from './fuse3-lending.js';
import { ATTR_FIELDS, packAttr, READ_BUFFER_BYTES, READ_BUFFERS_KEPT } from './fuse3-wire.js';

const { ERANGE } = osc.errno;

export class Fuse3Context {
  /** A node the table lets go closes the handle it kept (see fuse3-unlinked.ts). */
  readonly nodes = new NodeTable((n) => void this.ops.release(n.path(this.nodes.generation), n.keptFh).catch(() => undefined));
  /** The libfuse session while mounted (the server sets it). */
  session: Session | null = null;
  /** One entry's attributes, packed for the reply that carries them (the addon copies them). */
  readonly scratch = new Float64Array(ATTR_FIELDS);
  readonly entryT: number;
  readonly attrT: number;
  readonly negT: number;

  /**
   * READs and WRITEs of upper files answered by the addon (fuse3_direct.c) once the engine
   * named their descriptor; `OVERPACK_FUSE_DIRECT=0` sends every one through JS.
   */
  readonly direct: boolean;

  /**
   * FUSE passthrough asked for at INIT (fuse3_passthrough.c, MountOptions.passthrough): the
   * kernel then reads and writes upper files itself. The addon asks only with CAP_SYS_ADMIN;
   * the writeback cache excludes it.
   */
  readonly passthrough: boolean;

  /** Directory listings lent to the addon, which then answers LOOKUPs in them (fuse3-lending.ts). */
  readonly lending: Lending | null;

  constructor(readonly fuse: OverpackAddon, readonly ops: FsOps, options: MountOptions) {
    this.lending = Lending.enabled(ops) ? new Lending(this) : null;
    this.direct = process.env.OVERPACK_FUSE_DIRECT !== '0' && ops.directDescriptor !== undefined && ops.watchDescriptors !== undefined;
    if (this.direct) ops.watchDescriptors!((fd) => this.session && fuse.forgetDirect(this.session, fd));
    this.passthrough = options.passthrough === true && !options.writeback && ops.passthroughDescriptor !== undefined && ops.directDescriptor !== undefined;
    this.entryT = options.entryTimeout;
    this.attrT = options.attrTimeout;
    this.negT = options.negativeTimeout;
  }

  /**
   * Buffers for READ answers, reused: a fresh 128 KiB-1 MiB Buffer per request made every read
   * fault in new pages (and charge them to the cgroup) and fed the garbage collector (what it
   * cost: bench/README, one-off measurements). replyBuf copies the data out before it returns,
   * so a buffer is free again as soon as its request is answered. Several reads can be waiting
   * at once (each awaits its handle), hence a small stack, not one buffer.
   */
  private readonly readBuffers: Buffer[] = [];

  takeReadBuffer(size: number): Buffer {
    if (size > READ_BUFFER_BYTES) return Buffer.allocUnsafe(size);
    return this.readBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  }

  giveReadBuffer(buf: Buffer): void {
    if (buf.length === READ_BUFFER_BYTES && this.readBuffers.length < READ_BUFFERS_KEPT) this.readBuffers.push(buf);
  }

  /**
   * Each name of a hard-linked file is its own node, so a change through one name is not seen
   * in the kernel's cached attributes of the others: those (`shared`) are never cached.
   */
  attrTimeout(attr: Attr): number {
    return attr.shared ? 0 : this.attrT;
  }

  /** The entry `name` under `parent`, with its attributes: the kernel counts one lookup. */
  replyNewEntry(req: Req, parent: FsNode, name: string, attr: Attr): void {
    this.replyEntryOf(req, this.nodes.lookUp(parent, name, attr.mode & S_IFMT), attr);
  }

  /** The entry of node `n`, whose lookup is already counted. */
  replyEntryOf(req: Req, n: FsNode, attr: Attr): void {
    packAttr(attr, this.scratch);
    // An interrupted caller never received the entry: give the lookup back.
    if (this.fuse.replyEntry(req, n.id, this.scratch, this.entryT, this.attrTimeout(attr)) !== 0) this.nodes.forget(n.id, 1);
  }

  replyAttr(req: Req, attr: Attr): void {
    packAttr(attr, this.scratch);
    this.fuse.replyAttr(req, this.scratch, this.attrTimeout(attr));
  }

  /** getxattr/listxattr: size 0 asks for the length only; a too small buffer is ERANGE. */
  replySized(req: Req, value: Buffer, size: number): void {
    if (size === 0) this.fuse.replyXattrSize(req, value.length);
    else if (value.length > size) this.fuse.replyErr(req, ERANGE);
    else this.fuse.replyBuf(req, value, value.length);
  }

  /** Drops the kernel's cached attributes of node `id`. */
  invalInode(id: number): void {
    if (this.session) this.fuse.invalInode(this.session, id);
  }

  /**
   * After a READ or WRITE of node `n` through kernel handle `fh` was answered here: let the
   * addon answer the next ones itself when the engine names the descriptor they go to. Not
   * for a handle the node kept when it lost its name (`used` differs from `fh`).
   */
  offerDirect(n: FsNode, path: string, fh: number, used: number): void {
    if (!this.direct || !this.session || fh !== used) return;
    const d = this.ops.directDescriptor!(path, fh);
    if (d) this.fuse.directFd(this.session, n.id, fh, d.fd, d.writable);
  }

  /** Node `id` has no security.capability: the addon answers the kernel's next asks itself. */
  noCapability(id: number): void {
    if (this.session) this.fuse.noCapability(this.session, id);
  }
}
