/**
 * BLAKE3's addon for a target: `@napi-rs/blake-hash` publishes one prebuilt package per
 * platform, and npm installs only the host's. Another target's comes from the registry with
 * `npm pack`, cached under `$XDG_CACHE_HOME/overpack/prebuilt/<package>@<pinned version>/`.
 * The version is the one the installed `@napi-rs/blake-hash` pins; not every platform got
 * every release (linux-arm64-gnu stops at 1.3.4 while 1.3.6 pins it), so when the pinned one
 * does not exist the newest earlier release of the same major is taken, with a warning (the
 * runtime uses only `blake3()` and `Blake3Hasher`, unchanged across 1.x).
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import type { Target } from '../../runtime/native/targets.js';
import { overpackCache } from '../../runtime/paths/xdg.js';
import { OverpackError } from '../../runtime/errors/overpack-error.js';

const require = createRequire(import.meta.url);

export class PrebuiltError extends OverpackError {
  constructor(message: string, readonly target: Target) {
    super('PREBUILT', 'fetch-prebuilt', null, message);
  }
}

function packageName(target: Target): string {
  return `@napi-rs/blake-hash-${target}-gnu`;
}

function fileName(target: Target): string {
  return `blake.${target}-gnu.node`;
}

/** The version of the platform package that the installed @napi-rs/blake-hash asks for. */
function pinnedVersion(target: Target): string {
  const meta = require('@napi-rs/blake-hash/package.json') as { version: string; optionalDependencies?: Record<string, string> };
  return meta.optionalDependencies?.[packageName(target)] ?? meta.version;
}

function installed(target: Target, version: string): string | null {
  try {
    const dir = path.dirname(require.resolve(`${packageName(target)}/package.json`));
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string };
    const file = path.join(dir, fileName(target));
    return meta.version === version && fs.existsSync(file) ? file : null;
  } catch {
    return null;
  }
}

/** npm itself: the CLI running this build (npm_execpath), else `npm` on PATH. */
function npmCommand(): [string, string[]] {
  const cli = process.env.npm_execpath;
  if (cli && /npm-cli\.js$/.test(cli)) return [process.execPath, [cli]];
  return ['npm', []];
}

function npm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const [cmd, pre] = npmCommand();
  const run = spawnSync(cmd, [...pre, ...args], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout ?? '', stderr: run.error?.message ?? run.stderr ?? '' };
}

/** The newest published version of `pkg` that is not newer than `pinned`, in its major. */
function closestPublished(pkg: string, pinned: string, target: Target): string {
  const view = npm(['view', pkg, 'versions', '--json']);
  if (view.status !== 0) throw new PrebuiltError(`npm view ${pkg} versions failed: ${view.stderr.trim()}`, target);
  const parse = (v: string) => v.split('.').map(Number);
  const [major] = parse(pinned);
  const older = (a: number[], b: number[]) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!;
  const found = (JSON.parse(view.stdout) as string[])
    .filter((v) => /^\d+\.\d+\.\d+$/.test(v) && parse(v)[0] === major && older(parse(v), parse(pinned)) <= 0)
    .sort((a, b) => older(parse(a), parse(b)))
    .pop();
  if (!found) throw new PrebuiltError(`${pkg} has no release ${major}.x up to ${pinned}`, target);
  return found;
}

/** Fetches `pkg@version` into `into/package/`; false when the registry has no such version. */
function pack(pkg: string, version: string, into: string, target: Target): boolean {
  const run = npm(['pack', `${pkg}@${version}`, '--pack-destination', into, '--json']);
  if (run.status !== 0) {
    if (/ETARGET|No matching version/.test(run.stderr + run.stdout)) return false;
    throw new PrebuiltError(`npm pack ${pkg}@${version} failed (no network to the npm registry?): ${run.stderr.trim()}`, target);
  }
  const filename = (JSON.parse(run.stdout) as Array<{ filename: string }>)[0]?.filename;
  if (!filename) throw new PrebuiltError(`npm pack ${pkg}@${version} reported no file`, target);
  const untar = spawnSync('tar', ['-xzf', path.join(into, path.basename(filename)), '-C', into], { encoding: 'utf8' });
  if (untar.status !== 0) throw new PrebuiltError(`cannot unpack ${filename}: ${untar.stderr}`, target);
  return true;
}

export function blakeAddon(target: Target, warn: (message: string) => void): string {
  const pinned = pinnedVersion(target);
  const local = installed(target, pinned);
  if (local) return local;
  const pkg = packageName(target);
  const dir = path.join(overpackCache(), 'prebuilt', `${pkg.replace('/', '+')}@${pinned}`);
  const file = path.join(dir, 'package', fileName(target));
  if (fs.existsSync(file)) return file;
  const work = `${dir}.tmp-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  try {
    if (!pack(pkg, pinned, work, target)) {
      const version = closestPublished(pkg, pinned, target);
      warn(`${pkg}@${pinned} is not published; using ${version}`);
      if (!pack(pkg, version, work, target)) throw new PrebuiltError(`npm pack ${pkg}@${version} found no such version`, target);
    }
    if (!fs.existsSync(path.join(work, 'package', fileName(target)))) throw new PrebuiltError(`${pkg} holds no ${fileName(target)}`, target);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(work, dir);
    return file;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
