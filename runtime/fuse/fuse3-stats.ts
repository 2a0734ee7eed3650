/** OVERPACK_FUSE_STATS=1: the fuse3 binding's request counts and mean time to answer per operation, printed at close. */
import { OP_NAMES } from './fuse3-wire.js';

const PASSTHROUGH_MODES = ['off (zero-message opens)', 'on', 'refused by the kernel'];

export class RequestStats {
  private readonly byOp = new Map<number, { n: number; ns: bigint }>();

  /** Counting costs a clock read per request: only when asked for. */
  static fromEnv(): RequestStats | null {
    return process.env.OVERPACK_FUSE_STATS === '1' ? new RequestStats() : null;
  }

  /** Request `op`, received at `t0` (process.hrtime.bigint()), is answered. */
  record(op: number, t0: bigint): void {
    const e = this.byOp.get(op) ?? { n: 0, ns: 0n };
    e.n++;
    e.ns += process.hrtime.bigint() - t0;
    this.byOp.set(op, e);
  }

  /**
   * `direct`: the READs and WRITEs the addon answered itself; `lent`: the LOOKUPs it answered
   * from lent listings, with an entry and with "no such entry" (neither counted above);
   * `passthrough`: its mode and the opens passed through (their reads and writes reach nobody).
   */
  print(direct: [number, number] | null, lent: [number, number] | null, passthrough: [number, number] | null): void {
    const rows = [...this.byOp].sort((x, y) => y[1].n - x[1].n);
    const total = rows.reduce((sum, [, e]) => sum + e.n, 0);
    const lines = rows.map(([op, e]) => `  ${(OP_NAMES[op] ?? String(op)).padEnd(12)} ${String(e.n).padStart(9)}  ${(Number(e.ns / BigInt(e.n)) / 1000).toFixed(1).padStart(8)} µs`);
    process.stderr.write(`overpack: FUSE requests (fuse3): ${total}\n  op               count  mean time to answer\n${lines.join('\n')}\n`);
    if (direct) process.stderr.write(`  answered by the addon itself: ${direct[0]} READ, ${direct[1]} WRITE, ${lent ? lent[0] + lent[1] : 0} LOOKUP (${lent ? lent[1] : 0} of them "no such entry")\n`);
    if (passthrough) process.stderr.write(`  passthrough: ${PASSTHROUGH_MODES[passthrough[0]] ?? passthrough[0]}, ${passthrough[1]} opens passed through to the upper file\n`);
  }
}
