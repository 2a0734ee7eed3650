/**
 * Commit: merge a writable upper (whiteouts, opaque directories, new and changed entries) into
 * the lower directory, then drop the upper.
 *
 * - `commitUpper` works in place: every file lands through a temp file and a rename, so each
 *   file is old or new, but a crash can leave the tree half merged (the upper is kept until the
 *   end, so running commit again finishes the job).
 * - `commitUpperAtomic` builds the merged tree beside the lower and swaps it in with renames.
 *   Everything lives in `<parent>/.<name>.overpack-commit/`: `stage/` (the merged tree: lower
 *   files hard-linked, changed files copied), `backup/` (the old lower, during the swap) and
 *   `journal.json` (the step reached, fsync'd). Disk space needed: the size of the new and
 *   changed files plus one directory entry per lower file (hard links), on the lower's
 *   filesystem. `recoverCommit` (run by `overpack commit --recover` and before every mount of a
 *   directory lower) reads the journal and rolls back (nothing swapped yet) or completes (swap
 *   begun), so the lower is always entirely old or entirely new.
 *
 * Before writing anything the whole upper is read. Fifos and device nodes are committed as
 * such (a device needs the privilege mknod(2) asks for); sockets are left out and counted: a
 * socket file is only an address while its server runs, and no server runs in the lower. Paths are built only from names read
 * in the upper and every directory on the way is made a real directory in the lower (a symlink
 * there is replaced, never followed), so nothing is written outside the lower.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import { mknod } from '../native/syscalls.js';
import type { blake3File as Blake3File } from '../hash/blake3.js';
import { OPAQUE_MARKER, WORK_DIR, isReserved, whitedOutName } from './whiteout.js';
import { isXattrRefused } from './dir-layer.js';
import { OverpackError } from '../errors/overpack-error.js';

export interface CommitSummary {
  written: number;
  skipped: number;
  deleted: number;
  bytesWritten: number;
  /** Bytes not rewritten because the lower already had the same content. */
  bytesSaved: number;
  /** Unix sockets in the upper, not committed (see the module comment). */
  socketsLeftOut: number;
}

/** The one-line summary the CLI and the library print. */
export function describeCommit(s: CommitSummary, upper: string, lower: string): string {
  const sockets = s.socketsLeftOut ? `, ${s.socketsLeftOut} socket${s.socketsLeftOut > 1 ? 's' : ''} left out (a socket is only an address while its server runs)` : '';
  return `committed ${upper} into ${lower}: ${s.written} written (${s.bytesWritten} bytes), ${s.skipped} unchanged (${s.bytesSaved} bytes not rewritten), ${s.deleted} deleted${sockets}`;
}

export interface CommitOptions {
  onProgress?: (p: { done: number; total: number; bytes: number }) => void;
  /**
   * commitUpperAtomic: called with 1, 2, ... before each step that changes the disk. The
   * crash test kills the process there, at every step in turn, to prove recovery.
   */
  onDiskStep?: (n: number) => void;
}

export class CommitError extends OverpackError {
  constructor(path: string, op: string, message: string, readonly done?: CommitSummary) {
    super('COMMIT', op, path, message);
  }
}

const LIBFUSE_HIDDEN = /^\.fuse_hidden[0-9a-f]+$/;

/** The running atomic commit's onDiskStep, and how many steps it has taken. */
let stepHook: ((n: number) => void) | null = null;
let steps = 0;
/**
 * The BLAKE3 addon, loaded by the first commit that compares contents: every mount imports
 * this module (for recoverCommit), and loading the addon would slow every `overpack mount`
 * (bench/README, figures behind the code).
 */
let blake3FileFn: typeof Blake3File | null = null;
async function hasher(): Promise<typeof Blake3File> {
  return (blake3FileFn ??= (await import('../hash/blake3.js')).blake3File);
}

function step(): void {
  stepHook?.(++steps);
}

interface UpperDir {
  rel: string;
  opaque: boolean;
  whiteouts: string[];
  entries: Array<{ name: string; st: fs.Stats }>;
  sockets: number;
}

/** Reads and checks the whole upper before anything is written. */
function planUpper(upper: string): { dirs: UpperDir[]; files: number; bytes: number } {
  const dirs: UpperDir[] = [];
  let files = 0;
  let bytes = 0;
  const visit = (rel: string) => {
    const real = rel ? path.join(upper, rel) : upper;
    const d: UpperDir = { rel, opaque: false, whiteouts: [], entries: [], sockets: 0 };
    for (const name of fs.readdirSync(real).sort()) {
      if (!rel && name === WORK_DIR) continue;
      if (LIBFUSE_HIDDEN.test(name)) continue;
      if (name === OPAQUE_MARKER) {
        d.opaque = true;
        continue;
      }
      if (isReserved(name)) {
        const hidden = whitedOutName(name);
        if (hidden !== null) d.whiteouts.push(hidden);
        continue;
      }
      const st = fs.lstatSync(path.join(real, name));
      if (st.isSocket()) {
        d.sockets++;
        continue;
      }
      d.entries.push({ name, st });
      if (st.isFile()) {
        files++;
        bytes += st.size;
      }
    }
    dirs.push(d);
    for (const e of d.entries) if (e.st.isDirectory()) visit(rel ? `${rel}/${e.name}` : e.name);
  };
  visit('');
  return { dirs, files, bytes };
}

function sameXattrs(a: string, b: string): boolean {
  try {
    const ka = xattr.listAttributesSync(a).sort();
    const kb = xattr.listAttributesSync(b).sort();
    if (ka.join('\0') !== kb.join('\0')) return false;
    return ka.every((k) => xattr.getAttributeSync(a, k).equals(xattr.getAttributeSync(b, k)));
  } catch {
    return false;
  }
}

/** Makes `to`'s xattrs exactly `from`'s: sets every one of them, removes any other. */
function copyXattrs(from: string, to: string): void {
  const keep = new Set(xattr.listAttributesSync(from));
  for (const k of xattr.listAttributesSync(to)) {
    if (!keep.has(k)) {
      try {
        xattr.removeAttributeSync(to, k);
      } catch (err) {
        if (!isXattrRefused(err)) throw err;
      }
    }
  }
  for (const k of keep) {
    try {
      xattr.setAttributeSync(to, k, xattr.getAttributeSync(from, k));
    } catch (err) {
      if (!isXattrRefused(err)) throw err;
    }
  }
}

/** Seconds as a double from a stat's nanoseconds: keeps sub-millisecond times (Date would not). */
function seconds(ns: bigint): number {
  return Number(ns / 1000n) / 1e6;
}

function setMeta(target: string, st: fs.Stats, isLink: boolean, source: string): void {
  try {
    fs.lchownSync(target, st.uid, st.gid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
  }
  if (!isLink) fs.chmodSync(target, st.mode & 0o7777);
  const exact = fs.lstatSync(source, { bigint: true });
  fs.lutimesSync(target, seconds(exact.atimeNs), seconds(exact.mtimeNs));
}

/** Removes whatever is at `p` without following a symlink. */
function removeAny(p: string): boolean {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return false;
  }
  step();
  if (st.isDirectory()) fs.rmSync(p, { recursive: true, force: true });
  else fs.unlinkSync(p);
  return true;
}

/** Makes an entry beside `dst` (`make`, then `meta`) and renames it over whatever `cur` was. */
function placeEntry(dir: string, dst: string, cur: fs.Stats | undefined, make: (tmp: string) => void, meta: (tmp: string) => void): void {
  const tmp = tmpName(dir);
  step();
  make(tmp);
  meta(tmp);
  if (cur?.isDirectory()) removeAny(dst);
  step();
  fs.renameSync(tmp, dst);
}

let tmpSeq = 0;
const tmpName = (dir: string) => path.join(dir, `.overpack-commit-tmp-${process.pid}-${++tmpSeq}`);

/**
 * Applies the planned upper onto `target` (the lower itself, or the stage). With
 * `sharedInodes` (the stage, whose files are hard links to the lower's) a file is never changed
 * in place: anything different is rewritten, so the old lower stays intact until the swap.
 */
async function apply(upper: string, target: string, plan: ReturnType<typeof planUpper>, sharedInodes: boolean, opts: CommitOptions): Promise<CommitSummary> {
  const sum: CommitSummary = { written: 0, skipped: 0, deleted: 0, bytesWritten: 0, bytesSaved: 0, socketsLeftOut: 0 };
  const linked = new Map<number, string>(); // upper inode → first target path (hard-link groups)
  let done = 0;
  let bytes = 0;
  let lastReport = 0;
  const report = () => {
    const now = Date.now();
    if (opts.onProgress && (now - lastReport > 500 || done === plan.files)) {
      lastReport = now;
      opts.onProgress({ done, total: plan.files, bytes });
    }
  };
  // Parents come before children in plan.dirs, so each directory is real before we enter it.
  for (const d of plan.dirs) {
    const dir = d.rel ? path.join(target, d.rel) : target;
    const up = d.rel ? path.join(upper, d.rel) : upper;
    const have = fs.lstatSync(dir, { throwIfNoEntry: false });
    if (!have || !have.isDirectory()) {
      if (have) removeAny(dir);
      step();
      fs.mkdirSync(dir);
    } else if (d.opaque) {
      for (const name of fs.readdirSync(dir)) if (removeAny(path.join(dir, name))) sum.deleted++;
    }
    for (const name of d.whiteouts) if (removeAny(path.join(dir, name))) sum.deleted++;
    sum.socketsLeftOut += d.sockets;
    for (const { name, st } of d.entries) {
      const src = path.join(up, name);
      const dst = path.join(dir, name);
      if (st.isDirectory()) continue; // handled in its own turn
      const cur = fs.lstatSync(dst, { throwIfNoEntry: false });
      if (st.isSymbolicLink()) {
        const targetText = fs.readlinkSync(src);
        if (cur?.isSymbolicLink() && fs.readlinkSync(dst) === targetText) {
          sum.skipped++;
          continue;
        }
        placeEntry(dir, dst, cur, (tmp) => fs.symlinkSync(targetText, tmp), (tmp) => setMeta(tmp, st, true, src));
        sum.written++;
        continue;
      }
      if (!st.isFile()) {
        // A fifo or a device node: the node itself.
        if (cur && (cur.mode & fs.constants.S_IFMT) === (st.mode & fs.constants.S_IFMT) && cur.rdev === st.rdev && (cur.mode & 0o7777) === (st.mode & 0o7777)) {
          sum.skipped++;
          continue;
        }
        placeEntry(dir, dst, cur, (tmp) => mknod(tmp, st.mode, st.rdev), (tmp) => setMeta(tmp, st, false, src));
        sum.written++;
        continue;
      }
      // a regular file
      done++;
      bytes += st.size;
      if (st.nlink > 1) {
        const first = linked.get(st.ino);
        if (first) {
          if (cur) removeAny(dst);
          step();
          fs.linkSync(first, dst);
          sum.written++;
          report();
          continue;
        }
        linked.set(st.ino, dst);
      }
      if (cur?.isFile() && cur.size === st.size && Math.floor(cur.mtimeMs) === Math.floor(st.mtimeMs) && (await (await hasher())(dst)).equals(await (await hasher())(src))) {
        const metaSame = (cur.mode & 0o7777) === (st.mode & 0o7777) && cur.uid === st.uid && cur.gid === st.gid && sameXattrs(src, dst);
        if (metaSame) {
          sum.skipped++;
          sum.bytesSaved += st.size;
          report();
          continue;
        }
        if (!sharedInodes) {
          step();
          setMeta(dst, st, false, src);
          copyXattrs(src, dst);
          sum.skipped++;
          sum.bytesSaved += st.size;
          report();
          continue;
        }
      }
      const tmp = tmpName(dir);
      step();
      fs.copyFileSync(src, tmp, fs.constants.COPYFILE_FICLONE);
      copyXattrs(src, tmp);
      setMeta(tmp, st, false, src);
      const fd = fs.openSync(tmp, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      if (cur?.isDirectory()) removeAny(dst);
      step();
      fs.renameSync(tmp, dst);
      sum.written++;
      sum.bytesWritten += st.size;
      report();
    }
  }
  // Directory metadata last, deepest first: writing children changes a directory's times.
  for (const d of [...plan.dirs].reverse()) {
    const dir = d.rel ? path.join(target, d.rel) : target;
    const src = d.rel ? path.join(upper, d.rel) : upper;
    const st = fs.lstatSync(src);
    if (d.rel) {
      setMeta(dir, st, false, src);
      copyXattrs(path.join(upper, d.rel), dir);
    }
  }
  return sum;
}

function checkDirs(lower: string, upper: string): void {
  for (const [what, p] of [['lower', lower], ['upper', upper]] as const) {
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (!st?.isDirectory()) throw new CommitError(p, 'commit', `the ${what} ${p} is not a directory`);
  }
}

export async function commitUpper(lower: string, upper: string, opts: CommitOptions = {}): Promise<CommitSummary> {
  checkDirs(lower, upper);
  const plan = planUpper(upper);
  let sum: CommitSummary;
  try {
    sum = await apply(upper, lower, plan, false, opts);
  } catch (err) {
    throw new CommitError(lower, 'commit', `commit into ${lower} stopped: ${(err as Error).message}. The upper ${upper} is kept; run the commit again to finish.`);
  }
  fs.rmSync(upper, { recursive: true, force: true });
  return sum;
}

// ---- commit-atomic --------------------------------------------------------------------------

type JournalState = 'staging' | 'swapping' | 'cleanup';
interface Journal {
  state: JournalState;
  lower: string;
  upper: string;
}

export function commitWorkDir(lower: string): string {
  const abs = path.resolve(lower);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.overpack-commit`);
}

function writeJournal(work: string, j: Journal): void {
  const file = path.join(work, 'journal.json');
  const tmp = `${file}.tmp`;
  step();
  const fd = fs.openSync(tmp, 'w');
  fs.writeSync(fd, JSON.stringify(j));
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(work, 'r');
  fs.fsyncSync(dfd);
  fs.closeSync(dfd);
}

/** A copy of the lower's tree whose files are hard links to the lower's (no data copied). */
function linkTree(from: string, to: string): void {
  step();
  fs.mkdirSync(to);
  for (const name of fs.readdirSync(from)) {
    const src = path.join(from, name);
    const dst = path.join(to, name);
    const st = fs.lstatSync(src);
    if (st.isDirectory()) {
      linkTree(src, dst);
      setMeta(dst, st, false, src);
      copyXattrs(src, dst);
    } else if (st.isSymbolicLink()) {
      step();
      fs.symlinkSync(fs.readlinkSync(src), dst);
      setMeta(dst, st, true, src);
    } else if (st.isFile()) {
      step();
      fs.linkSync(src, dst);
    }
  }
}

export async function commitUpperAtomic(lower: string, upper: string, opts: CommitOptions = {}): Promise<CommitSummary> {
  stepHook = opts.onDiskStep ?? null;
  steps = 0;
  try {
    return await commitAtomically(lower, upper, opts);
  } finally {
    stepHook = null;
  }
}

async function commitAtomically(lower: string, upper: string, opts: CommitOptions): Promise<CommitSummary> {
  lower = path.resolve(lower);
  upper = path.resolve(upper);
  checkDirs(lower, upper);
  await recoverCommit(lower);
  const plan = planUpper(upper);
  const work = commitWorkDir(lower);
  const stage = path.join(work, 'stage');
  const backup = path.join(work, 'backup');
  fs.mkdirSync(work);
  writeJournal(work, { state: 'staging', lower, upper });
  linkTree(lower, stage);
  const root = fs.lstatSync(lower);
  setMeta(stage, root, false, lower);
  copyXattrs(lower, stage);
  const sum = await apply(upper, stage, plan, true, opts);
  writeJournal(work, { state: 'swapping', lower, upper });
  step();
  fs.renameSync(lower, backup);
  step();
  fs.renameSync(stage, lower);
  writeJournal(work, { state: 'cleanup', lower, upper });
  finishCleanup(work, upper);
  return sum;
}

function finishCleanup(work: string, upper: string): void {
  step();
  fs.rmSync(path.join(work, 'backup'), { recursive: true, force: true });
  step();
  fs.rmSync(upper, { recursive: true, force: true });
  fs.rmSync(work, { recursive: true, force: true });
}

/**
 * Finishes or undoes a commit-atomic that was interrupted. 'none': there was nothing to do;
 * 'rolled-back': the swap had not begun, the lower is the old one and the upper is kept;
 * 'completed': the swap had begun, the lower is the new one and the upper is gone.
 */
export async function recoverCommit(lower: string): Promise<'none' | 'rolled-back' | 'completed'> {
  lower = path.resolve(lower);
  const work = commitWorkDir(lower);
  if (!fs.existsSync(work)) return 'none';
  let j: Journal | null = null;
  try {
    j = JSON.parse(fs.readFileSync(path.join(work, 'journal.json'), 'utf8')) as Journal;
  } catch {
    j = null; // killed before the first journal write: nothing was staged
  }
  const stage = path.join(work, 'stage');
  const backup = path.join(work, 'backup');
  const has = (p: string) => fs.existsSync(p);
  if (!j || j.state === 'staging') {
    fs.rmSync(work, { recursive: true, force: true });
    return 'rolled-back';
  }
  if (j.state === 'swapping') {
    if (has(backup) && !has(lower)) fs.renameSync(stage, lower); // killed between the two renames
    else if (!has(backup)) {
      // the first rename never happened: the lower is still the old one
      fs.rmSync(work, { recursive: true, force: true });
      return 'rolled-back';
    }
    writeJournal(work, { ...j, state: 'cleanup' });
  }
  finishCleanup(work, j.upper);
  return 'completed';
}

