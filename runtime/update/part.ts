/**
 * The new bundle while it is assembled: `<bundle>.part` beside the old one (same directory, so
 * the final rename is atomic and never crosses filesystems), `<bundle>.part.json` saying which
 * remote bundle it is (its last bytes: footer and signature) and which ranges are in place,
 * and `<bundle>.part.lock` while an update runs. The state is written only after the data it
 * names is on disk (fdatasync first, then a new state file renamed over the old), so a crash
 * at any point leaves a state that claims nothing false; an interrupted update resumes from
 * it, and a remote that changed meanwhile discards it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UpdateError } from './errors.js';
import { normalize, subtract, type Range } from './ranges.js';

interface StateFile {
  version: 1;
  /** hex of the new bundle's last IDENTITY_BYTES */
  identity: string;
  size: number;
  source: string;
  done: Range[];
}

/** How often the state is saved while bytes arrive. */
const CHECKPOINT_BYTES = 4 << 20;
const CHECKPOINT_MS = 1000;

export function partPaths(bundle: string): { part: string; state: string; lock: string } {
  return { part: `${bundle}.part`, state: `${bundle}.part.json`, lock: `${bundle}.part.lock` };
}

function cannotWrite(file: string, err: unknown): UpdateError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? `the directory ${path.dirname(file)} cannot be written here (${code}); the new bundle is made beside the old one: move the bundle somewhere you can write, or update it as its owner` : code === 'ENOSPC' || code === 'EDQUOT' ? `no space left for the new bundle in ${path.dirname(file)} (${code})` : `cannot write ${file}: ${(err as Error).message}`;
  return new UpdateError('CANT_WRITE', 'write', file, why);
}

/** Only one update of a bundle at a time; a lock left by a process that is gone is taken over. */
export function lockUpdate(bundle: string): () => void {
  const { lock } = partPaths(bundle);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      return () => fs.rmSync(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw cannotWrite(lock, err);
      const pid = Number(fs.readFileSync(lock, 'utf8').trim());
      let alive = false;
      try {
        if (Number.isInteger(pid) && pid > 0) process.kill(pid, 0);
        alive = Number.isInteger(pid) && pid > 0;
      } catch (e) {
        alive = (e as NodeJS.ErrnoException).code === 'EPERM';
      }
      if (alive) throw new UpdateError('INTERRUPTED', 'lock', lock, `another update of ${bundle} is running (pid ${pid}); wait for it to finish`);
      fs.rmSync(lock, { force: true });
    }
  }
  throw new UpdateError('INTERRUPTED', 'lock', lock, `cannot lock ${lock}`);
}

export class PartFile {
  readonly fd: number;
  private doneRanges: Range[];
  private sinceCheckpoint = 0;
  private lastCheckpoint = Date.now();

  private constructor(readonly bundle: string, readonly size: number, private readonly identity: Buffer, private readonly source: string, fd: number, done: Range[]) {
    this.fd = fd;
    this.doneRanges = done;
  }

  /**
   * The part file for the remote bundle `identity` of `size` bytes: the one an interrupted
   * update left (with its ranges) when it was for the same remote, else a new empty one.
   */
  static open(bundle: string, size: number, identity: Buffer, source: string, resume = true): { part: PartFile; resumed: number } {
    const paths = partPaths(bundle);
    let done: Range[] = [];
    if (resume) try {
      const s = JSON.parse(fs.readFileSync(paths.state, 'utf8')) as StateFile;
      if (s.version === 1 && s.identity === identity.toString('hex') && s.size === size && fs.statSync(paths.part).size === size && Array.isArray(s.done)) {
        done = normalize(s.done.filter((r) => Array.isArray(r) && r.length === 2 && Number.isSafeInteger(r[0]) && Number.isSafeInteger(r[1]) && r[0] >= 0 && r[1] <= size));
      }
    } catch {
      /* no state, or not one we can use: start afresh */
    }
    try {
      if (done.length === 0) {
        fs.rmSync(paths.state, { force: true });
        fs.rmSync(paths.part, { force: true });
      }
      const fd = fs.openSync(paths.part, done.length ? 'r+' : 'wx+', 0o600);
      if (!done.length) fs.ftruncateSync(fd, size);
      const part = new PartFile(bundle, size, identity, source, fd, done);
      const resumed = done.reduce((n, [s, e]) => n + e - s, 0);
      if (!done.length) part.save();
      return { part, resumed };
    } catch (err) {
      if (err instanceof UpdateError) throw err;
      throw cannotWrite(paths.part, err);
    }
  }

  get done(): Range[] {
    return this.doneRanges;
  }

  /** Ranges this run copied from the old bundle (the suspects when the result does not check out). */
  copiedRanges: Range[] = [];

  markCopied(start: number, end: number): void {
    this.copiedRanges = normalize([...this.copiedRanges, [start, end]]);
    this.mark(start, end);
  }

  write(buf: Buffer, position: number): void {
    try {
      for (let off = 0; off < buf.length; ) off += fs.writeSync(this.fd, buf, off, buf.length - off, position + off);
    } catch (err) {
      throw cannotWrite(partPaths(this.bundle).part, err);
    }
  }

  /** Marks [start, end) as in place; saves the state now and then (after syncing the data). */
  mark(start: number, end: number): void {
    this.doneRanges = normalize([...this.doneRanges, [start, end]]);
    this.sinceCheckpoint += end - start;
    if (this.sinceCheckpoint >= CHECKPOINT_BYTES || Date.now() - this.lastCheckpoint >= CHECKPOINT_MS) this.checkpoint();
  }

  /** Forgets ranges (bytes that turned out wrong): they are fetched again. */
  unmark(ranges: Range[]): void {
    this.doneRanges = subtract(this.doneRanges, ranges);
    this.copiedRanges = subtract(this.copiedRanges, ranges);
    this.checkpoint();
  }

  checkpoint(): void {
    try {
      fs.fdatasyncSync(this.fd);
    } catch (err) {
      throw cannotWrite(partPaths(this.bundle).part, err);
    }
    this.save();
    this.sinceCheckpoint = 0;
    this.lastCheckpoint = Date.now();
  }

  private save(): void {
    const { state } = partPaths(this.bundle);
    const tmp = `${state}.tmp`;
    const s: StateFile = { version: 1, identity: this.identity.toString('hex'), size: this.size, source: this.source, done: this.doneRanges };
    try {
      fs.writeFileSync(tmp, JSON.stringify(s), { mode: 0o600 });
      fs.renameSync(tmp, state);
    } catch (err) {
      throw cannotWrite(state, err);
    }
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      /* closed already */
    }
  }

  /** Removes the part and its state (a finished, refused or damaged update). */
  discard(): void {
    this.close();
    const p = partPaths(this.bundle);
    fs.rmSync(p.part, { force: true });
    fs.rmSync(p.state, { force: true });
  }
}
