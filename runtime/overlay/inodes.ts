/**
 * Inode numbers shown to users. `virtual`: sequential per mount, assigned on first sight of a
 * path and carried along renames. `persistent`: FNV-1a 64 of the path, the same across remounts
 * (as overlayfs_fuse does). Hard links in the upper share one number either way (keyed by the
 * upper file's own inode). Numbers are kept below 2^32 because fuse-native passes st_ino as a
 * 32-bit value; a binding with 64-bit inodes could take them whole.
 */
export const INODE_MODES = ['virtual', 'persistent'] as const;
export type InodeMode = (typeof INODE_MODES)[number];

const FNV64_OFFSET = 0xcbf29ce484222325n;
const FNV64_PRIME = 0x100000001b3n;
const MASK64 = (1n << 64n) - 1n;

export function fnv1a64(text: string): bigint {
  let h = FNV64_OFFSET;
  for (const byte of Buffer.from(text, 'utf8')) {
    h ^= BigInt(byte);
    h = (h * FNV64_PRIME) & MASK64;
  }
  return h;
}

/** Folds a 64-bit hash to 32 bits (xor of halves) so it fits fuse-native's st_ino; never 0 or 1. */
export function fold32(h: bigint): number {
  const n = Number((h ^ (h >> 32n)) & 0xffffffffn);
  return n <= 1 ? n + 2 : n;
}

export class InodeStore {
  private readonly byPath = new Map<string, number>();
  private readonly byUpperIno = new Map<number, number>();
  private next = 2; // 1 is the root

  constructor(readonly mode: InodeMode) {}

  /** The number for `path`; `upperLink` is the upper file's own inode when it has nlink > 1. */
  get(path: string, upperLink?: number): number {
    if (path === '/') return 1;
    if (upperLink !== undefined) {
      const known = this.byUpperIno.get(upperLink);
      if (known !== undefined) return known;
      const ino = this.forPath(path);
      this.byUpperIno.set(upperLink, ino);
      return ino;
    }
    return this.forPath(path);
  }

  private forPath(path: string): number {
    if (this.mode === 'persistent') return fold32(fnv1a64(path));
    let ino = this.byPath.get(path);
    if (ino === undefined) {
      ino = this.next++;
      this.byPath.set(path, ino);
    }
    return ino;
  }

  /** A new hard link to an upper file: every name of it shows `ino`. */
  alias(upperIno: number, ino: number): void {
    this.byUpperIno.set(upperIno, ino);
  }

  /** A rename keeps the numbers of the moved entry and everything beneath it (virtual mode). */
  rename(from: string, to: string, isDir: boolean): void {
    if (this.mode === 'persistent') return;
    this.forget(to, isDir);
    if (!isDir) {
      const ino = this.byPath.get(from);
      this.byPath.delete(from);
      if (ino !== undefined) this.byPath.set(to, ino);
      return;
    }
    const prefix = from + '/';
    const moved: Array<[string, number]> = [];
    for (const [p, ino] of this.byPath) {
      if (p === from || p.startsWith(prefix)) moved.push([p, ino]);
    }
    for (const [p, ino] of moved) {
      this.byPath.delete(p);
      this.byPath.set(to + p.slice(from.length), ino);
    }
  }

  /** Drops a removed path (and what was beneath it) so a new entry gets a new number. */
  forget(path: string, isDir: boolean): void {
    if (this.mode === 'persistent') return;
    this.byPath.delete(path);
    if (!isDir) return;
    const prefix = path + '/';
    for (const p of this.byPath.keys()) if (p.startsWith(prefix)) this.byPath.delete(p);
  }
}
