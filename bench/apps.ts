/**
 * The apps the bench bundles: hello-worlds, and real JS tools (eslint, tsc, prettier) with
 * their dependencies only, each prepared once in the bench's data directory. eslint and tsc are
 * taken from the bench tree (hard links), prettier, which the tree lacks, is installed on its
 * own so that the tree the workloads read stays as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { sh, type BenchContext } from './common.js';

/** Small apps: a Node hello-world and a shell hello-world, each with its manifest. */
export function helloApps(ctx: BenchContext): { node: string; shell: string } {
  const base = path.join(ctx.data, 'hello');
  const node = path.join(base, 'hello-node');
  const shell = path.join(base, 'hello-shell');
  fs.mkdirSync(node, { recursive: true });
  fs.mkdirSync(shell, { recursive: true });
  fs.writeFileSync(path.join(node, 'hello.js'), "console.log('hello');\n");
  fs.writeFileSync(path.join(node, 'overpack.json'), JSON.stringify({ name: 'bench-hello-node', version: '1', entrypoint: 'hello.js' }));
  fs.writeFileSync(path.join(shell, 'hello.sh'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
  fs.writeFileSync(path.join(shell, 'overpack.json'), JSON.stringify({ name: 'bench-hello-shell', version: '1', entrypoint: 'hello.sh' }));
  return { node, shell };
}

/**
 * An app of one package of the benchmark tree and its dependencies only, hard-linked: the
 * packages reachable from its package.json through dependencies (and installed optional
 * and peer dependencies), resolved the way Node does (nested node_modules first, then up).
 */
function treeApp(ctx: BenchContext, name: string, pkg: string, entrypoint: string): string {
  const app = path.join(ctx.data, `${name}-app`);
  if (fs.existsSync(path.join(app, '.complete'))) return app;
  ctx.log(`preparing the ${name} app (${pkg} and its dependencies from the tree; once)`);
  fs.rmSync(app, { recursive: true, force: true });
  const top = path.join(ctx.tree, 'node_modules');
  const found = new Set<string>();
  const resolve = (from: string, name: string): string | null => {
    for (let dir = from; dir.startsWith(ctx.tree); dir = path.dirname(dir)) {
      const candidate = path.join(dir, 'node_modules', name);
      if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
      if (dir === ctx.tree) break;
    }
    return null;
  };
  const visit = (pkgDir: string) => {
    if (found.has(pkgDir)) return;
    found.add(pkgDir);
    const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    const deps = { ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies };
    for (const name of Object.keys(deps)) {
      const dep = resolve(pkgDir, name);
      if (dep) visit(dep);
    }
  };
  visit(path.join(top, pkg));
  for (const dir of [...found].sort()) {
    const dest = path.join(app, path.relative(ctx.tree, dir));
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    if (!fs.existsSync(dest)) sh(`cp -al ${JSON.stringify(dir)} ${JSON.stringify(dest)}`);
  }
  fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: `bench-${name}`, version: '1', entrypoint }));
  fs.writeFileSync(path.join(app, '.complete'), '');
  return app;
}

export function eslintApp(ctx: BenchContext): string {
  return treeApp(ctx, 'eslint', 'eslint', 'node_modules/eslint/bin/eslint.js');
}

export function tscApp(ctx: BenchContext): string {
  return treeApp(ctx, 'tsc', 'typescript', 'node_modules/typescript/bin/tsc');
}

/** prettier 3, installed from the registry into an app of its own (once). */
export function prettierApp(ctx: BenchContext): string {
  const app = path.join(ctx.data, 'prettier-app');
  if (fs.existsSync(path.join(app, '.complete'))) return app;
  ctx.log('preparing the prettier app (npm install prettier@3; once)');
  fs.rmSync(app, { recursive: true, force: true });
  fs.mkdirSync(app, { recursive: true });
  sh('npm init -y >/dev/null && npm install --no-audit --no-fund prettier@3 >/dev/null 2>&1', app);
  fs.rmSync(path.join(app, 'package-lock.json'), { force: true });
  fs.writeFileSync(path.join(app, 'overpack.json'), JSON.stringify({ name: 'bench-prettier', version: '1', entrypoint: 'node_modules/prettier/bin/prettier.cjs' }));
  fs.writeFileSync(path.join(app, '.complete'), '');
  return app;
}

/**
 * A directory to lint and format in: one source file and eslint's flat config (a few of the
 * recommended rules, no plugins), the same for the bundles and the direct runs.
 */
export function sourceDir(ctx: BenchContext): { dir: string; file: string } {
  const dir = path.join(ctx.work, 'source');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'eslint.config.js'),
    "module.exports = [{ rules: { 'no-unused-vars': 'error', 'no-undef': 'error', eqeqeq: 'error', 'prefer-const': 'error' } }];\n",
  );
  const lines = ['/* global console */', "'use strict';", ''];
  for (let i = 0; i < 40; i++) {
    lines.push(`function step${i}(items, limit) {`, `  const out = [];`, `  for (const item of items) {`, `    if (item.size === limit) out.push({ name: item.name, index: ${i} });`, `  }`, `  return out;`, `}`, '');
  }
  lines.push(`console.log(${Array.from({ length: 40 }, (_, i) => `step${i}([], ${i}).length`).join(' + ')});`, '');
  fs.writeFileSync(path.join(dir, 'sample.js'), lines.join('\n'));
  return { dir, file: 'sample.js' };
}
