/**
 * The launch timeline of a bundle: runs a command N times (after one warm-up) with
 * OVERPACK_TRACE=1 and prints, per mark of the runtime ([1]) and of the app's Node ([2]), the
 * median time since the spawn, with the step from the mark before. Medians per mark, so the
 * steps of one line need not add up exactly.
 *   node dist/bench/launch-trace.js 21 ./hello.run
 */
import { spawnSync } from 'node:child_process';

const [n = '11', ...argv] = process.argv.slice(2);
if (argv.length === 0) {
  process.stderr.write('usage: node dist/bench/launch-trace.js RUNS COMMAND [ARGS...]\n');
  process.exit(2);
}
const rows = new Map<string, number[]>();
const add = (k: string, v: number) => rows.set(k, [...(rows.get(k) ?? []), v]);
for (let i = 0; i <= Number(n); i++) {
  const t0 = performance.timeOrigin + performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { env: { ...process.env, OVERPACK_TRACE: '1' }, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  const t1 = performance.timeOrigin + performance.now();
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  if (i === 0) continue;
  const pids: string[] = [];
  for (const line of r.stderr.split('\n')) {
    const m = /^overpack-trace (\d+) ([\d.]+) \+([\d.]+) (.*)$/.exec(line);
    if (!m) continue;
    if (!pids.includes(m[1]!)) {
      pids.push(m[1]!);
      add(`[${pids.length}] process start`, Number(m[2]) - Number(m[3]) - t0);
    }
    add(`[${pids.indexOf(m[1]!) + 1}] ${m[4]}`, Number(m[2]) - t0);
  }
  add('caller sees the exit', t1 - t0);
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
let prev = 0;
for (const [k, v] of [...rows].map(([k, v]) => [k, median(v)] as const).sort((a, b) => a[1] - b[1])) {
  process.stdout.write(`${v.toFixed(1).padStart(7)} ms  (+${(v - prev).toFixed(1).padStart(5)})  ${k}\n`);
  prev = v;
}
