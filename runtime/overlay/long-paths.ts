/**
 * Paths longer than the kernel takes in one system call (PATH_MAX, 4096 bytes with the NUL).
 * The kernel lets a tree be any depth (each name up to 255 bytes), and the engine works with
 * whole path strings under the upper and the lower, which the deepest entries outgrow. A long
 * path is reached through a descriptor of one of its directories instead:
 * `/proc/self/fd/<fd>/<the rest>`, where the descriptor (O_PATH) is itself opened the same way
 * if its own path is long. Every system call accepts the result in place of the path.
 *
 * A descriptor follows its directory when that is renamed, so anchors under a directory that
 * moves or goes away must be dropped (`forget`): `UpperDir` does it where the upper changes
 * shape (a lower never changes through us).
 */
import fs, { constants as fsc } from 'node:fs';

/** Room left for `/proc/self/fd/<fd>` in front of the rest. */
const LIMIT = 4096 - 48;
/** Linux's O_PATH (the same on x86_64 and aarch64); Node's fs.constants does not name it. */
const O_PATH = 0o10000000;
const MAX_ANCHORS = 64;

export class LongPaths {
  private readonly anchors = new Map<string, number>();

  /** `real` itself when it is short enough, else an equivalent that is. */
  reach(real: string): string {
    if (real.length < LIMIT) return real;
    // The first separator that leaves a short enough rest; names are at most 255 bytes, so
    // there is always one in the window.
    const cut = real.indexOf('/', real.length - LIMIT + 1);
    if (cut <= 0) return real; // no separator: let the system call say ENAMETOOLONG
    return `/proc/self/fd/${this.anchor(real.slice(0, cut))}${real.slice(cut)}`;
  }

  private anchor(dir: string): number {
    let fd = this.anchors.get(dir);
    if (fd === undefined) {
      fd = fs.openSync(this.reach(dir), O_PATH | fsc.O_DIRECTORY);
      this.anchors.set(dir, fd);
      if (this.anchors.size > MAX_ANCHORS) {
        const [oldest, old] = this.anchors.entries().next().value as [string, number];
        this.anchors.delete(oldest);
        fs.closeSync(old);
      }
    }
    return fd;
  }

  /** Drops the anchors at `real` and beneath it (it was renamed or removed). */
  forget(real: string): void {
    if (this.anchors.size === 0) return;
    for (const [dir, fd] of this.anchors) {
      if (dir === real || dir.startsWith(real + '/')) {
        this.anchors.delete(dir);
        fs.closeSync(fd);
      }
    }
  }

  closeAll(): void {
    for (const fd of this.anchors.values()) fs.closeSync(fd);
    this.anchors.clear();
  }
}
