/**
 * Test helpers: temp dirs, tree snapshots, and mounts served by a separate `overpack mount`
 * process (the test process drives the mount with ordinary sync calls, which would deadlock
 * if it were serving the mount itself).
 */
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as xattr from 'fs-xattr';

// A preserved app's mount lingers after its launch by default (runtime/launcher/mount-server.ts);
// the suite's bundles unmount at once, so each test's "no mount left" holds the moment its
// bundle exits. test/linger.test.ts runs with the linger on.
process.env.OVERPACK_LINGER ??= '0';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'builder', 'cli.js');

export function tempDir(tag = 'test'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `overpack-${tag}-`));
}

/** The environment for running bundles with their home, cache and data dirs under `home`. */
export function isolatedEnv(home: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HOME: home,
    XDG_CACHE_HOME: path.join(home, '.cache'),
    XDG_DATA_HOME: path.join(home, '.local', 'share'),
    NO_COLOR: '1',
  };
}

export function sh(cmd: string, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', cwd: opts.cwd, env: opts.env ?? process.env });
}

export function isMountpoint(p: string): boolean {
  const esc = p.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === esc);
}

/** Last resort in teardown: never leave a mount behind, even when a test failed. */
export function forceUnmount(mp: string): void {
  if (!isMountpoint(mp)) return;
  spawnSync('fusermount3', ['-uz', mp], { stdio: 'ignore' });
  if (isMountpoint(mp)) spawnSync('umount', ['-l', mp], { stdio: 'ignore' });
}

export interface MountProcess {
  mountPoint: string;
  proc: ChildProcess;
  stderr: () => string;
  /** SIGTERM the server and wait for it; returns its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `user`: the server runs as that uid and gid (setpriv execs it: the server is the child itself). */
export async function startMount(lower: string, args: string[] = [], env: NodeJS.ProcessEnv = process.env, user?: { uid: string; gid: string }): Promise<MountProcess> {
  const argv = [CLI, 'mount', lower, ...args];
  const proc = user
    ? spawn('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', process.execPath, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const mountPoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount did not come up in 20 s: ${err}`)), 20000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`overpack mount exited with ${code}: ${err}`));
    });
  });
  let stopped: Promise<number | null> | undefined;
  return {
    mountPoint,
    proc,
    stderr: () => err,
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      stopped ??= (async () => {
        if (proc.exitCode === null) proc.kill(signal);
        const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20000).unref());
        const code = await Promise.race([exited, timeout]);
        if (code === 'timeout') {
          proc.kill('SIGKILL');
          forceUnmount(mountPoint);
          return null;
        }
        forceUnmount(mountPoint);
        return code;
      })();
      return stopped;
    },
  };
}

/** `<base>/<name>/lower`, made with one file, `lower.txt` (400 lines): a lower for a case of its own. */
export function lowerWithFile(base: string, name: string): string {
  const lower = path.join(base, name, 'lower');
  fs.mkdirSync(lower, { recursive: true });
  fs.writeFileSync(path.join(lower, 'lower.txt'), 'the lower file\n'.repeat(400));
  return lower;
}

export interface SnapEntry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  hash?: string;
  target?: string;
  xattrs: Record<string, string>;
  ino: number;
  nlink: number;
}

/** Everything about a tree that a comparison may look at, keyed by relative path. */
export function snapshot(root: string, opts: { skipReserved?: boolean } = {}): Map<string, SnapEntry> {
  const out = new Map<string, SnapEntry>();
  const walk = (rel: string) => {
    const abs = rel ? path.join(root, rel) : root;
    for (const name of fs.readdirSync(abs).sort()) {
      if (opts.skipReserved && name.startsWith('.wh.')) continue;
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(root, r);
      const st = fs.lstatSync(p);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      const xattrs: Record<string, string> = {};
      if (type !== 'symlink') {
        for (const k of xattr.listAttributesSync(p).sort()) xattrs[k] = xattr.getAttributeSync(p, k).toString('hex');
      }
      out.set(r, {
        type, mode: st.mode, uid: st.uid, gid: st.gid, size: type === 'dir' ? 0 : st.size, mtimeMs: Math.floor(st.mtimeMs),
        hash: type === 'file' ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : undefined,
        target: type === 'symlink' ? fs.readlinkSync(p) : undefined,
        xattrs, ino: st.ino, nlink: st.nlink,
      });
      if (type === 'dir') walk(r);
    }
  };
  walk('');
  return out;
}

/** The snapshot without fields that legitimately differ between two trees (inode numbers, dir times). */
export function comparable(snap: Map<string, SnapEntry>, fields: Array<keyof SnapEntry>): Record<string, Partial<SnapEntry>> {
  const out: Record<string, Partial<SnapEntry>> = {};
  for (const [k, v] of snap) {
    const e: Partial<SnapEntry> = {};
    for (const f of fields) if (v[f] !== undefined) (e as Record<string, unknown>)[f] = v[f];
    out[k] = e;
  }
  return out;
}

/** A small lower tree with files, dirs, symlinks (one dangling) and xattrs. */
export function makeLower(dir: string): void {
  fs.mkdirSync(path.join(dir, 'docs/deep/er'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'empty'));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hello from lower\n');
  fs.writeFileSync(path.join(dir, 'docs/a.md'), '# a\n');
  fs.writeFileSync(path.join(dir, 'docs/deep/b.md'), 'bbbb\n');
  fs.writeFileSync(path.join(dir, 'docs/deep/er/c.md'), 'c'.repeat(100000));
  fs.writeFileSync(path.join(dir, 'script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  fs.symlinkSync('hello.txt', path.join(dir, 'link'));
  fs.symlinkSync('does/not/exist', path.join(dir, 'dangling'));
  fs.symlinkSync('docs', path.join(dir, 'dirlink'));
  xattr.setAttributeSync(path.join(dir, 'hello.txt'), 'user.origin', 'lower');
  xattr.setAttributeSync(path.join(dir, 'docs'), 'user.kind', 'folder');
  fs.chmodSync(path.join(dir, 'docs/a.md'), 0o640);
  fs.chownSync(path.join(dir, 'docs/a.md'), 1234, 5678);
  fs.utimesSync(path.join(dir, 'hello.txt'), new Date('2020-01-02T03:04:05Z'), new Date('2021-02-03T04:05:06Z'));
}

export function mountsUnder(prefix: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(prefix));
}

/** The entries where two comparable trees differ, as readable lines (empty when equal). */
export function treeDiff(actual: Record<string, Partial<SnapEntry>>, expected: Record<string, Partial<SnapEntry>>): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(actual), ...Object.keys(expected)])) {
    const a = JSON.stringify(actual[k]);
    const e = JSON.stringify(expected[k]);
    if (a !== e) out.push(`${k}: got ${a ?? 'nothing'}, expected ${e ?? 'nothing'}`);
  }
  return out.sort();
}

/** Whether a process with this pid exists. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid in a preserved app's `<data>/lock` (the launch or mount server serving it), or null. */
export function lockPid(dataDir: string): number | null {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dataDir, 'lock'), 'utf8')) as { pid: number }).pid;
  } catch {
    return null;
  }
}

/**
 * The unprivileged user the tests run bundles as (created if missing), with a home of its own
 * under `base` and /dev/fuse opened to others as distributions ship it (0666; this machine's
 * is 0600) until `restore()`.
 */
export function unprivilegedUser(base: string): { uid: string; gid: string; home: string; restore(): void } {
  const user = 'overpack-test';
  spawnSync('useradd', ['--system', '--no-create-home', user], { stdio: 'ignore' });
  const home = path.join(base, 'userhome');
  fs.mkdirSync(home, { recursive: true });
  fs.chmodSync(base, 0o755);
  spawnSync('chown', [user, home]);
  const mode = fs.statSync('/dev/fuse').mode & 0o777;
  fs.chmodSync('/dev/fuse', 0o666);
  const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim();
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout.trim();
  return { uid, gid, home, restore: () => fs.chmodSync('/dev/fuse', mode) };
}
