/**
 * Where an update comes from: an http(s) URL read with range requests, or a file (a path or a
 * file:// URL). Both give byte ranges of the new bundle as streams of chunks and count what
 * they delivered; a server that ignores ranges answers the first request with the whole file,
 * which the caller then takes as a full download.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UpdateError } from './errors.js';
import { HttpClient, shownUrl, type HttpResponse } from './http.js';

/** Bytes [start, end) of a file of `total` bytes, as they arrive. */
export interface Fetched {
  start: number;
  end: number;
  total: number;
  /** false: the server ignored the range and sends the whole file (start 0, end total). */
  ranged: boolean;
  chunks: AsyncIterable<Buffer>;
  /** Stops the transfer (its remaining chunks are not wanted). */
  abort(): void;
}

export interface RemoteSource {
  /** For messages: the URL or the path. */
  readonly label: string;
  /** Bytes delivered so far (bodies only). */
  readonly received: number;
  /** The last `length` bytes (all of them when the file is smaller). */
  tail(length: number): Promise<Fetched>;
  /** Bytes [start, end) of a file that must still have `total` bytes. */
  range(start: number, end: number, total: number): Promise<Fetched>;
  close(): void;
}

/** `--from` or the manifest's `update.url`: an http(s) URL, a file:// URL or a path. */
export function openSource(spec: string, env: NodeJS.ProcessEnv = process.env): RemoteSource {
  if (/^https?:\/\//i.test(spec)) {
    let url: URL;
    try {
      url = new URL(spec);
    } catch {
      throw new UpdateError('USAGE', 'parse-url', spec, `${JSON.stringify(spec)} is not a valid URL`);
    }
    return new HttpSource(url, env);
  }
  if (/^file:\/\//i.test(spec)) return new FileSource(fileURLToPath(spec));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw new UpdateError('USAGE', 'parse-url', spec, `${spec}: only http://, https:// and file:// URLs (or a path) can serve an update`);
  return new FileSource(path.resolve(spec));
}

function parseContentRange(v: string | undefined): { start: number; end: number; total: number } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec((v ?? '').trim());
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]) + 1, total: Number(m[3]) };
}

class HttpSource implements RemoteSource {
  received = 0;
  readonly label: string;
  private readonly client: HttpClient;
  /** After the first answer: the URL that answered (redirects are not followed again for every range). */
  private resolved: URL;

  constructor(private readonly url: URL, env: NodeJS.ProcessEnv) {
    this.label = shownUrl(url);
    this.client = new HttpClient(env);
    this.resolved = url;
  }

  private fail(res: HttpResponse, what: string): never {
    res.body.resume();
    const code = res.status === 404 || res.status === 410 || res.status >= 500 || res.status === 403 || res.status === 401 ? 'UNAVAILABLE' : 'UNAVAILABLE';
    throw new UpdateError(code, 'fetch', shownUrl(res.url), `${shownUrl(res.url)} answered ${res.status} ${res.body.statusMessage ?? ''} to ${what}${res.status === 404 ? ' (no bundle there: check the update URL)' : ''}`);
  }

  private body(res: HttpResponse, expected: number): AsyncIterable<Buffer> {
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let got = 0;
        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            got += chunk.length;
            self.received += chunk.length;
            yield chunk;
          }
        } catch (err) {
          throw new UpdateError('INTERRUPTED', 'fetch', self.label, `the download from ${self.label} was cut after ${got} of ${expected} bytes (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); run the update again: it continues where it stopped`);
        }
        if (got < expected) throw new UpdateError('INTERRUPTED', 'fetch', self.label, `the download from ${self.label} ended after ${got} of ${expected} bytes; run the update again: it continues where it stopped`);
      },
    };
  }

  async tail(length: number): Promise<Fetched> {
    const res = await this.client.get(this.url, { range: `bytes=-${length}` });
    this.resolved = res.url;
    if (res.status === 206) {
      const r = parseContentRange(res.headers['content-range']);
      if (!r || r.end !== r.total || r.end <= r.start) this.failRange(res);
      return { ...r, ranged: true, chunks: this.body(res, r.end - r.start), abort: () => res.body.destroy() };
    }
    if (res.status === 200) {
      const total = Number(res.headers['content-length'] ?? NaN);
      if (!Number.isSafeInteger(total)) {
        res.body.destroy();
        throw new UpdateError('UNAVAILABLE', 'fetch', this.label, `${this.label} answers neither range requests nor with a length (Content-Length): it cannot serve an update`);
      }
      return { start: 0, end: total, total, ranged: false, chunks: this.body(res, total), abort: () => res.body.destroy() };
    }
    if (res.status === 416) {
      res.body.resume();
      throw new UpdateError('DAMAGED', 'fetch', this.label, `${this.label} is empty: not a bundle`);
    }
    this.fail(res, 'a request for the end of the bundle');
  }

  private failRange(res: HttpResponse): never {
    res.body.destroy();
    throw new UpdateError('UNAVAILABLE', 'fetch', this.label, `${this.label} answered a range request with a bad Content-Range (${JSON.stringify(res.headers['content-range'] ?? '')})`);
  }

  async range(start: number, end: number, total: number): Promise<Fetched> {
    const res = await this.client.get(this.resolved, { range: `bytes=${start}-${end - 1}` });
    if (res.status === 206) {
      const r = parseContentRange(res.headers['content-range']);
      if (!r) this.failRange(res);
      if (r.total !== total || r.start !== start || r.end !== end) {
        res.body.destroy();
        throw new UpdateError('INTERRUPTED', 'fetch', this.label, `the bundle at ${this.label} changed during the update (it now has ${r.total} bytes, not ${total}); run the update again`);
      }
      return { ...r, ranged: true, chunks: this.body(res, end - start), abort: () => res.body.destroy() };
    }
    if (res.status === 200) {
      res.body.destroy();
      throw new UpdateError('INTERRUPTED', 'fetch', this.label, `${this.label} stopped answering range requests during the update; run the update again`);
    }
    this.fail(res, `a request for bytes ${start}-${end - 1}`);
  }

  close(): void {
    this.client.close();
  }
}

/** An update from a file: the same protocol, read with positioned reads. */
class FileSource implements RemoteSource {
  received = 0;
  readonly label: string;
  private fd: number | null = null;

  constructor(private readonly file: string) {
    this.label = file;
  }

  private open(): { fd: number; size: number } {
    if (this.fd === null) {
      try {
        this.fd = fs.openSync(this.file, 'r');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new UpdateError('UNAVAILABLE', 'open', this.file, `cannot read the update ${this.file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
      }
    }
    return { fd: this.fd, size: fs.fstatSync(this.fd).size };
  }

  private read(start: number, end: number, total: number): Fetched {
    const { fd } = this.open();
    const self = this;
    return {
      start,
      end,
      total,
      ranged: true,
      abort: () => undefined,
      chunks: {
        async *[Symbol.asyncIterator]() {
          for (let at = start; at < end; ) {
            const buf = Buffer.allocUnsafe(Math.min(1 << 20, end - at));
            const n = fs.readSync(fd, buf, 0, buf.length, at);
            if (n === 0) throw new UpdateError('INTERRUPTED', 'read', self.file, `${self.file} shrank during the update; run it again`);
            at += n;
            self.received += n;
            yield buf.subarray(0, n);
          }
        },
      },
    };
  }

  async tail(length: number): Promise<Fetched> {
    const { size } = this.open();
    if (size === 0) throw new UpdateError('DAMAGED', 'read', this.file, `${this.file} is empty: not a bundle`);
    return this.read(Math.max(0, size - length), size, size);
  }

  async range(start: number, end: number, total: number): Promise<Fetched> {
    const { size } = this.open();
    if (size !== total) throw new UpdateError('INTERRUPTED', 'read', this.file, `${this.file} changed during the update; run it again`);
    return this.read(start, end, total);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
