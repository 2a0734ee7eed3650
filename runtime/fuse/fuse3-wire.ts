/**
 * The libfuse 3 addon's wire format, as the fuse3 binding's handlers read requests and write
 * replies: operation codes, request argument accessors, the attribute layout (see fill_stat in
 * the addon) and the protocol's constants.
 */
import type { Attr } from '../vfs/index.js';
import type { TimeSpec } from '../native/syscalls.js';

/** Operation codes, as in the addon. */
export const OP = {
  EXIT: 0, LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, MKNOD: 6, MKDIR: 7, UNLINK: 8,
  RMDIR: 9, SYMLINK: 10, RENAME: 11, LINK: 12, OPEN: 13, READ: 14, WRITE: 15, RELEASE: 16, FSYNC: 17,
  READDIR: 18, READDIRPLUS: 19, STATFS: 20, SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24,
  CREATE: 25, FALLOCATE: 26, LSEEK: 27,
} as const;

/**
 * Requests that change nothing a lookup could see: the others begin a change, and the listings
 * lent to the addon are taken back before one is handled (fuse3-lending.ts).
 */
export const UNCHANGING_OPS: ReadonlySet<number> = new Set([
  OP.LOOKUP, OP.GETATTR, OP.READLINK, OP.OPEN, OP.READ, OP.RELEASE, OP.FSYNC, OP.READDIR,
  OP.READDIRPLUS, OP.STATFS, OP.GETXATTR, OP.LISTXATTR, OP.LSEEK,
]);

/** An operation's name by its code, for messages and request counts. */
export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]));

/** A request's arguments as the addon passes them (see each op's C handler). */
export type Wire = readonly unknown[];
/** Argument `i` of a request, by its type: a number, a name, bytes, or setattr's values. */
export const num = (a: Wire, i: number) => a[i] as number;
export const str = (a: Wire, i: number) => a[i] as string;
export const bytes = (a: Wire, i: number) => a[i] as Buffer;
export const f64s = (a: Wire, i: number) => a[i] as Float64Array;

/** Per entry: see fill_stat in the addon (times as whole seconds, then their nanoseconds). */
export const ATTR_FIELDS = 16;
/** The largest request the kernel sends: max_write, which libfuse also makes max_pages. */
export const MAX_WRITE = 1 << 20;
/** mount()'s flags, as in the addon (overpack_fuse3.c says what each asks for). */
export const MOUNT_WRITEBACK = 1;
export const MOUNT_PASSTHROUGH = 2;
export const MOUNT_STACKED = 4;
export const MOUNT_OWN_CALLERS = 8;
/** The addon's passthrough mode meaning "on", as OPEN carries it and passthroughState reports it. */
export const PASSTHROUGH_ON = 1;
/** READ buffers kept for reuse (MAX_WRITE each): enough for the reads the kernel has in flight. */
export const READ_BUFFER_BYTES = MAX_WRITE;
export const READ_BUFFERS_KEPT = 16;
// setattr's to_set bits (fuse_lowlevel.h).
export const SET_MODE = 1, SET_UID = 2, SET_GID = 4, SET_SIZE = 8, SET_ATIME = 16, SET_MTIME = 32, SET_ATIME_NOW = 128, SET_MTIME_NOW = 256;
export const RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2;

export function packAttr(a: Attr, into: Float64Array, index = 0): void {
  const o = index * ATTR_FIELDS;
  into[o] = a.ino;
  into[o + 1] = a.mode;
  into[o + 2] = a.nlink;
  into[o + 3] = a.uid;
  into[o + 4] = a.gid;
  into[o + 5] = a.rdev;
  into[o + 6] = a.size;
  into[o + 7] = a.blksize;
  into[o + 8] = a.blocks;
  into[o + 12] = a.dev;
  putTime(into, o, 0, a.atimeNs, a.atimeMs);
  putTime(into, o, 1, a.mtimeNs, a.mtimeMs);
  putTime(into, o, 2, a.ctimeNs, a.ctimeMs);
}

/** Time `i` (0 atime, 1 mtime, 2 ctime) as whole seconds and nanoseconds: exact where known. */
function putTime(into: Float64Array, o: number, i: number, ns: bigint | undefined, ms: number): void {
  if (ns !== undefined) {
    into[o + 9 + i] = Number(ns / NS_PER_S);
    into[o + 13 + i] = Number(ns % NS_PER_S);
  } else {
    const sec = Math.floor(ms / 1000);
    into[o + 9 + i] = sec;
    into[o + 13 + i] = Math.round((ms - sec * 1000) * 1e6);
  }
}

const NS_PER_S = 1_000_000_000n;

/** setattr's time: `sec`/`nsec` from the request, or "now" / "leave unchanged" by its bits. */
export function requestedTime(toSet: number, setBit: number, nowBit: number, sec: number, nsec: number): TimeSpec {
  if (toSet & nowBit) return 'now';
  if (toSet & setBit) return BigInt(sec) * NS_PER_S + BigInt(nsec);
  return 'omit';
}

/** Smallest directory entries in a reply: header (24 bytes; 152 with attributes) plus a name, 8-aligned. */
export const MIN_DIRENT = 32;
export const MIN_DIRENTPLUS = 160;
