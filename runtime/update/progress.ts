/**
 * The download's progress on stderr: on a terminal, one line redrawn at most 10 times a
 * second (bytes, a bar, percent, rate; colour unless NO_COLOR or TERM=dumb); elsewhere nothing
 * while it runs (logs get the summary line the caller prints).
 */
const REDRAW_MS = 100;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

export class Progress {
  private done = 0;
  private readonly started = Date.now();
  private lastDraw = 0;
  private readonly tty: boolean;
  private readonly color: boolean;
  private drawn = false;

  constructor(private readonly total: number, private readonly out: NodeJS.WriteStream = process.stderr, private readonly label = 'downloading') {
    this.tty = out.isTTY === true;
    this.color = this.tty && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
  }

  add(n: number): void {
    this.done += n;
    const now = Date.now();
    if (this.tty && now - this.lastDraw >= REDRAW_MS) {
      this.lastDraw = now;
      this.draw();
    }
  }

  /** Bytes per second so far. */
  rate(): number {
    const s = (Date.now() - this.started) / 1000;
    return s > 0 ? this.done / s : 0;
  }

  private draw(): void {
    const width = Math.max(10, Math.min(30, (this.out.columns ?? 80) - 60));
    const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const full = Math.round(frac * width);
    const bar = `${'#'.repeat(full)}${'.'.repeat(width - full)}`;
    const text = `${this.label} ${formatBytes(this.done)} / ${formatBytes(this.total)} [${this.color ? `\x1b[32m${bar}\x1b[0m` : bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(Math.round(this.rate()))}/s`;
    this.out.write(`\r\x1b[K${text}`);
    this.drawn = true;
  }

  /** Clears the line (the caller prints the summary). */
  finish(): void {
    if (!this.tty) return;
    if (this.done > 0 && !this.drawn) this.draw();
    if (this.drawn) this.out.write('\r\x1b[K');
  }
}
