/**
 * Interleaved wall times of a few commands (a fresh mount each: OVERPACK_LINGER=0, a scratch
 * home under /var/tmp), in a shuffled order each round, with medians and the median of each
 * command's paired difference from the first: on a shared machine only differences within one
 * run mean anything.
 *   node dist/bench/launch-ab.js 31 ./eslint-raw.run --version -- ./eslint.run --version
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [reps = '21', ...rest] = process.argv.slice(2);
const cmds = rest.join(' ').split(' -- ').map((s) => s.trim().split(/\s+/)).filter((c) => c[0]);
if (cmds.length < 2) {
  process.stderr.write('usage: node dist/bench/launch-ab.js RUNS CMD [ARGS...] -- CMD [ARGS...] [-- ...]\n');
  process.exit(2);
}
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'overpack-ab-'));
const env = { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, 'cache'), XDG_DATA_HOME: path.join(home, 'data'), OVERPACK_LINGER: '0', NO_COLOR: '1' };
const run = (argv: string[]): number => {
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e6;
};
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
try {
  for (const c of cmds) run(c), run(c); // the caches (runtime, plain node) made, pages warm
  const times = cmds.map((): number[] => []);
  let seed = 42;
  for (let r = 0; r < Number(reps); r++) {
    const order = [...cmds.keys()];
    for (let i = order.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const j = seed % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const i of order) times[i]!.push(run(cmds[i]!));
  }
  cmds.forEach((c, i) => process.stdout.write(`${median(times[i]!).toFixed(1).padStart(7)} ms median, min ${Math.min(...times[i]!).toFixed(1)}  ${c.join(' ')}\n`));
  for (let i = 1; i < cmds.length; i++) process.stdout.write(`[${i}] - [0], paired: median ${median(times[i]!.map((v, k) => v - times[0]![k]!)).toFixed(1)} ms\n`);
} finally {
  fs.rmSync(home, { recursive: true, force: true });
}
