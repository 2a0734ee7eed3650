/**
 * The fuse3 binding's server: one libfuse session on Node's main thread (the addon reads
 * requests when libuv reports the device readable and calls `dispatch`), each request handed
 * to its handler (fuse3-handlers.ts) and answered exactly once, a throw as an errno. Replies
 * may come later than the request (after asynchronous I/O); meanwhile other requests keep
 * flowing, and close waits for the unanswered.
 */
import type { MountOptions } from './binding.js';
import type { FsOps } from '../vfs/index.js';
import type { OverpackAddon, Req } from '../native/addon.js';
import { failureErrno } from './failure.js';
import { Fuse3Context } from './fuse3-context.js';
import { handle } from './fuse3-handlers.js';
import { RequestStats } from './fuse3-stats.js';
import { MAX_WRITE, MOUNT_OWN_CALLERS, MOUNT_PASSTHROUGH, MOUNT_STACKED, MOUNT_WRITEBACK, num, OP, OP_NAMES, PASSTHROUGH_ON, UNCHANGING_OPS, type Wire } from './fuse3-wire.js';

export class Fuse3Server {
  private readonly c: Fuse3Context;
  private pending = 0;
  private drained: (() => void) | null = null;
  private endedResolve!: () => void;
  /** Resolves when the kernel side is gone (unmounted from outside, or by us). */
  readonly ended = new Promise<void>((resolve) => (this.endedResolve = resolve));
  private readonly writeback: boolean;
  private readonly allowOther: boolean;
  private readonly stats = RequestStats.fromEnv();
  /** Keeps the process alive while mounted, even after the kernel side went away, until close(). */
  private keepAlive: NodeJS.Timeout | null = null;

  constructor(private readonly fuse: OverpackAddon, ops: FsOps, options: MountOptions) {
    this.c = new Fuse3Context(fuse, ops, options);
    this.writeback = options.writeback ?? false;
    this.allowOther = options.allowOther ?? false;
  }

  start(mountPoint: string, args: string[]): void {
    this.c.session = this.fuse.mount(mountPoint, args, (op: number, req: Req, ...a: unknown[]) => this.dispatch(op, req, a), MAX_WRITE, this.mountFlags());
    this.keepAlive = setInterval(() => undefined, 1 << 30);
  }

  private mountFlags(): number {
    if (this.writeback) return MOUNT_WRITEBACK;
    if (!this.c.passthrough) return 0;
    return MOUNT_PASSTHROUGH | ((this.c.ops.backingStackDepth?.() ?? 0) > 0 ? MOUNT_STACKED : 0) | (this.allowOther ? 0 : MOUNT_OWN_CALLERS);
  }

  /** Stops serving: waits (bounded) for unanswered requests, then closes the session. */
  async close(): Promise<void> {
    if (!this.c.session) return;
    if (this.pending > 0) {
      await Promise.race([
        new Promise<void>((resolve) => (this.drained = resolve)),
        new Promise<void>((resolve) => setTimeout(resolve, 10_000).unref()),
      ]);
    }
    const s = this.c.session;
    this.c.session = null;
    const direct = this.stats ? this.fuse.directCounts(s) : null;
    const lent = this.stats ? this.fuse.lentCounts(s) : null;
    const passthrough = this.stats ? this.fuse.passthroughState(s) : null;
    this.fuse.close(s);
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.stats?.print(direct, lent, passthrough);
    this.endedResolve();
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
      if (t0) this.stats!.record(op, t0);
      this.c.nodes.forget(num(a, 0), num(a, 1));
      return;
    }
    if (op === OP.EXIT) {
      this.endedResolve();
      return;
    }
    const lending = this.c.lending;
    // An OPEN that JS sees under passthrough copies the file up and lets the kernel write it
    // with no WRITE reaching us: it changes the tree as a WRITE would.
    const changes = lending !== null && (!UNCHANGING_OPS.has(op) || (op === OP.OPEN && num(a, 2) === PASSTHROUGH_ON));
    if (changes) lending.beginChange();
    this.pending++;
    let work: Promise<void>;
    try {
      work = handle(this.c, op, req, a);
    } catch (err) {
      work = Promise.reject(err);
    }
    work.then(
      () => {
        if (t0) this.stats!.record(op, t0);
        if (changes) lending.endChange();
        this.settled();
      },
      (err: unknown) => {
        this.fuse.replyErr(req, failureErrno(OP_NAMES[op] ?? `op ${op}`, err));
        if (t0) this.stats!.record(op, t0);
        if (changes) lending.endChange();
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
}
