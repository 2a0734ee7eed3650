/** Seeded random filesystem operations, shared by the differential tests. */
import fs, { constants as fsc } from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { mknod } from '../runtime/native/syscalls.js';

/** mulberry32: small, seedable, good enough to pick operations. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Op = (root: string) => void;

export function outcome(op: Op, root: string): string {
  try {
    op(root);
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** All relative paths currently in a tree (dirs and non-dirs), from the plain copy. */
function listPaths(root: string): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  const dirs: string[] = [''];
  const walk = (rel: string) => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        dirs.push(r);
        walk(r);
      } else files.push(r);
    }
  };
  walk('');
  return { files, dirs };
}

/** `sockets: false` for trees that are committed afterwards (commit leaves sockets out by design). */
export function makeOps(random: () => number, plain: string, opts: { sockets?: boolean } = {}): { name: string; op: Op } {
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  const { files, dirs } = listPaths(plain);
  const fresh = () => `n${Math.floor(random() * 1e6)}`;
  const anyPath = () => (random() < 0.5 && files.length ? pick(files) : pick(dirs));
  const newIn = () => {
    const d = pick(dirs);
    return d ? `${d}/${fresh()}` : fresh();
  };
  const bytes = Buffer.from(Array.from({ length: Math.floor(random() * 5000) }, () => Math.floor(random() * 256)));
  const offset = Math.floor(random() * 8000);
  const size = Math.floor(random() * 6000);
  const mode = pick([0o644, 0o600, 0o755, 0o700, 0o640]);
  const kind = random();
  if (kind < 0.15) {
    const p = newIn();
    return { name: `create ${p}`, op: (r) => fs.writeFileSync(path.join(r, p), bytes) };
  }
  if (kind < 0.19 && files.length) {
    // Overwrite in place with new, usually shorter, contents (`echo x > file`, writeFileSync).
    const p = pick(files);
    const flags = pick([fsc.O_WRONLY | fsc.O_TRUNC, fsc.O_RDWR | fsc.O_TRUNC, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC]);
    const short = bytes.subarray(0, Math.floor(random() * 64));
    return {
      name: `overwrite ${p} (${short.length} bytes, flags ${flags})`,
      op: (r) => {
        const fd = fs.openSync(path.join(r, p), flags | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
        try {
          fs.writeSync(fd, short);
        } finally {
          fs.closeSync(fd);
        }
      },
    };
  }
  if (kind < 0.21 && files.length) {
    const p = pick(files);
    return { name: `truncating read-only open ${p}`, op: (r) => fs.closeSync(fs.openSync(path.join(r, p), fsc.O_RDONLY | fsc.O_TRUNC | fsc.O_NOFOLLOW | fsc.O_NONBLOCK)) };
  }
  if (kind < 0.23) {
    const p = newIn();
    const type = opts.sockets === false ? fsc.S_IFIFO : pick([fsc.S_IFIFO, fsc.S_IFSOCK]);
    return { name: `mknod ${type === fsc.S_IFIFO ? 'fifo' : 'socket'} ${p}`, op: (r) => mknod(path.join(r, p), type | mode, 0) };
  }
  if (kind < 0.3 && files.length) {
    const p = pick(files);
    return {
      name: `write ${p}@${offset}`,
      op: (r) => {
        const fd = fs.openSync(path.join(r, p), fsc.O_WRONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
        try {
          fs.writeSync(fd, bytes, 0, bytes.length, offset);
        } finally {
          fs.closeSync(fd);
        }
      },
    };
  }
  if (kind < 0.38 && files.length) {
    const p = pick(files);
    return { name: `truncate ${p} ${size}`, op: (r) => fs.truncateSync(path.join(r, p), size) };
  }
  if (kind < 0.48) {
    const p = newIn();
    return { name: `mkdir ${p}`, op: (r) => fs.mkdirSync(path.join(r, p), mode) };
  }
  if (kind < 0.54) {
    const p = pick(dirs.filter((d) => d !== '')) ?? 'none';
    return { name: `rmdir ${p}`, op: (r) => fs.rmdirSync(path.join(r, p)) };
  }
  if (kind < 0.58) {
    const p = pick(dirs.filter((d) => d !== '')) ?? 'none';
    return { name: `rm -rf ${p}`, op: (r) => fs.rmSync(path.join(r, p), { recursive: true }) };
  }
  if (kind < 0.68 && files.length) {
    const p = pick(files);
    return { name: `unlink ${p}`, op: (r) => fs.unlinkSync(path.join(r, p)) };
  }
  if (kind < 0.8) {
    const from = anyPath() || pick(files.length ? files : ['none']); // the root itself is not renamed
    const to = random() < 0.7 ? newIn() : anyPath() || newIn();
    return { name: `rename ${from} -> ${to}`, op: (r) => fs.renameSync(path.join(r, from), path.join(r, to)) };
  }
  if (kind < 0.86) {
    const p = newIn();
    const target = random() < 0.5 ? anyPath() : 'dangling/target';
    return { name: `symlink ${p} -> ${target}`, op: (r) => fs.symlinkSync(target, path.join(r, p)) };
  }
  if (kind < 0.93) {
    const p = anyPath();
    return { name: `chmod ${p} ${mode.toString(8)}`, op: (r) => fs.chmodSync(path.join(r, p || '.'), p === '' ? 0o755 : mode) };
  }
  const p = anyPath();
  const key = `user.k${Math.floor(random() * 3)}`;
  return {
    name: `setxattr ${p} ${key}`,
    op: (r) => {
      const target = path.join(r, p);
      if (fs.lstatSync(target).isSymbolicLink()) throw Object.assign(new Error('symlink'), { code: 'EPERM' });
      xattr.setAttributeSync(target, key, bytes.subarray(0, 64));
    },
  };
}

