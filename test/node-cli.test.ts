/**
 * The `node` a bundled app finds on its PATH is Node itself: the same command lines give the
 * same output and status as the real `node` of the same version (the bundle is built with the
 * Node running this test), run from inside the app and directly on a plain copy of it.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, isolatedEnv, mountsUnder, forceUnmount, tempDir } from './helpers.js';

/** Each case: arguments, optional stdin, optional NODE_OPTIONS, and what of the result to compare. */
const CASES: Array<{ args: string[]; input?: string; nodeOptions?: string; only?: 'status+pass' }> = [
  { args: ['-p', 'process.version'] },
  { args: ['--print', '1 + 1'] },
  { args: ['-e', 'console.log(process.argv.slice(1))', 'a', 'b'] },
  { args: ['--input-type=module', '-e', 'console.log(typeof import.meta.url)'] },
  { args: ['-r', './pre.cjs', '-e', 'console.log(globalThis.pre)'] },
  { args: ['--check', 'bad.js'] },
  { args: ['--check', 'good.js'] },
  { args: ['--max-old-space-size=100', '-e', 'console.log(require("v8").getHeapStatistics().heap_size_limit < 200e6)'] },
  { args: ['-'], input: 'console.log("from stdin", process.argv.length)' },
  { args: [], input: 'console.log("no arguments at all")' },
  { args: ['--', 'good.js', 'x'] },
  { args: ['--no-such-option'] },
  { args: ['--test', 'one.test.js'], only: 'status+pass' },
  { args: ['-e', 'console.log(globalThis.pre)'], nodeOptions: '--require ./pre.cjs' },
];

const FILES: Record<string, string> = {
  'pre.cjs': 'globalThis.pre = "preloaded";\n',
  'bad.js': 'let x = ;\n',
  'good.js': 'console.log("good", process.argv.slice(2));\n',
  'one.test.js': "require('node:test')('passes', () => {});\n",
  'flagged.js': '#!/usr/bin/env -S node --max-old-space-size=100\nconsole.log(require("v8").getHeapStatistics().heap_size_limit < 200e6, process.execArgv);\n',
  // The app: runs every case with the `node` on its PATH, then a shebang script and fork().
  'app.js': `
const { spawnSync, fork } = require('node:child_process');
const cases = JSON.parse(process.env.CASES);
const out = cases.map((c) => {
  const env = { ...process.env };
  if (c.nodeOptions) env.NODE_OPTIONS = c.nodeOptions;
  const r = spawnSync('node', c.args, { input: c.input ?? '', encoding: 'utf8', env, cwd: __dirname });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
});
const shebang = spawnSync('./flagged.js', { encoding: 'utf8', cwd: __dirname });
out.push({ status: shebang.status, stdout: shebang.stdout, stderr: shebang.stderr });
const child = fork(require('node:path').join(__dirname, 'good.js'), ['forked'], { execArgv: ['--max-old-space-size=100'], stdio: 'pipe' });
let forked = '';
child.stdout.on('data', (d) => (forked += d));
child.on('exit', (code) => {
  out.push({ status: code, stdout: forked, stderr: '' });
  process.stdout.write(JSON.stringify({ dir: __dirname, results: out }));
});
`,
};

describe("the node on a bundled app's PATH", () => {
  const base = tempDir('node-cli');
  const app = path.join(base, 'app');
  const plain = path.join(base, 'plain');
  const home = path.join(base, 'home');
  const bundle = path.join(base, 'nodecli.run');
  before(() => {
    for (const dir of [app, plain]) {
      fs.mkdirSync(dir, { recursive: true });
      for (const [name, text] of Object.entries(FILES)) fs.writeFileSync(path.join(dir, name), text, { mode: name === 'flagged.js' ? 0o755 : 0o644 });
    }
    fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'nodecli', version: '1.0.0', entrypoint: 'app.js', overlay: { onExit: 'discard' } }));
    const b = spawnSync(process.execPath, [CLI, 'build', app, '-o', bundle, '--node', process.execPath], { encoding: 'utf8' });
    assert.equal(b.status, 0, b.stderr);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
    fs.rmSync(base, { recursive: true, force: true });
  });

  /** The results with the directory the files were in written as APP, and test timings dropped. */
  const normalize = (results: Array<{ status: number | null; stdout: string; stderr: string }>, dir: string) =>
    results.map((r, i) => {
      const only = CASES[i]?.only;
      if (only === 'status+pass') return { status: r.status, pass: /^# pass (\d+)$/m.exec(r.stdout)?.[1] };
      return { status: r.status, stdout: r.stdout.replaceAll(dir, 'APP'), stderr: r.stderr.replaceAll(dir, 'APP') };
    });

  it('gives the output and status of the real node for options, -p, -e, -r, --check, --test, stdin, NODE_OPTIONS, shebang flags and fork()', () => {
    const env: NodeJS.ProcessEnv = { ...isolatedEnv(home), CASES: JSON.stringify(CASES) };
    fs.mkdirSync(home, { recursive: true });
    const r = spawnSync(bundle, [], { encoding: 'utf8', env, cwd: base, timeout: 120000 });
    assert.equal(r.status, 0, r.stderr);
    const inBundle = JSON.parse(r.stdout) as { dir: string; results: Array<{ status: number | null; stdout: string; stderr: string }> };
    // The real node, on a plain copy of the same files, from the same kind of process tree.
    const directEnv = { ...env, PATH: `${path.dirname(process.execPath)}:${env.PATH ?? ''}` }; // this very node first
    const direct = spawnSync(process.execPath, [path.join(plain, 'app.js')], { encoding: 'utf8', env: directEnv, cwd: base, timeout: 120000 });
    assert.equal(direct.status, 0, direct.stderr);
    const real = JSON.parse(direct.stdout) as typeof inBundle;
    const expected = normalize(real.results, real.dir);
    assert.deepEqual(normalize(inBundle.results, inBundle.dir), expected);
    assert.match(JSON.stringify(expected), /preloaded/);
    assert.equal(expected.length, CASES.length + 2);
  });
});
