/**
 * A small HTTP server for the update tests, run as its own process (the test process spawns
 * bundles and the CLI and must not be the one serving them): files of --root with single
 * byte ranges (`bytes=S-E`, `bytes=S-`, `bytes=-N`), or without range support (--no-ranges);
 * --die-after N exits the process abruptly once N body bytes were sent in all (a server killed
 * mid-download). With --proxy it is instead a forward proxy (absolute-URI GETs and CONNECT).
 * Prints one JSON line per event on stdout: first {"event":"listening","port":P}, then one per
 * response with the bytes of body actually sent.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const root = opt('--root') ?? '.';
const port = Number(opt('--port') ?? 0);
const noRanges = args.includes('--no-ranges');
const dieAfter = opt('--die-after') !== undefined ? Number(opt('--die-after')) : Infinity;
const proxyMode = args.includes('--proxy');
let sent = 0;

function log(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function parseRange(h: string | undefined, size: number): [number, number] | null | 'bad' {
  if (!h || noRanges) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'bad';
  if (m[1] === '') {
    const n = Math.min(Number(m[2]), size);
    return n === 0 ? 'bad' : [size - n, size];
  }
  const s = Number(m[1]);
  const e = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
  return s >= size || e <= s ? 'bad' : [s, e];
}

async function serveFile(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
  const file = path.join(root, path.normalize(rel).replace(/^(\.\.[/\\])+/, ''));
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    res.writeHead(404, { 'content-length': 0 }).end();
    log({ path: rel, status: 404, bytes: 0 });
    return;
  }
  const size = fs.fstatSync(fd).size;
  const range = parseRange(req.headers.range, size);
  if (range === 'bad') {
    fs.closeSync(fd);
    res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': 0 }).end();
    log({ path: rel, range: req.headers.range, status: 416, bytes: 0 });
    return;
  }
  const [start, end] = range ?? [0, size];
  const status = range ? 206 : 200;
  res.writeHead(status, { 'content-length': end - start, 'accept-ranges': noRanges ? 'none' : 'bytes', ...(range ? { 'content-range': `bytes ${start}-${end - 1}/${size}` } : {}) });
  let bytes = 0;
  const buf = Buffer.allocUnsafe(64 << 10);
  try {
    for (let at = start; at < end; ) {
      let n = fs.readSync(fd, buf, 0, Math.min(buf.length, end - at), at);
      if (sent + n >= dieAfter) n = Math.max(0, dieAfter - sent);
      const chunk = Buffer.from(buf.subarray(0, n));
      const ok = res.write(chunk);
      at += n;
      bytes += n;
      sent += n;
      if (sent >= dieAfter) {
        log({ path: rel, range: req.headers.range ?? null, status, bytes, died: true });
        // Let the bytes written reach the socket, then die without closing anything properly.
        await new Promise((r) => setTimeout(r, 50));
        process.kill(process.pid, 'SIGKILL');
      }
      if (!ok) await new Promise((r) => res.once('drain', r));
      if (res.destroyed) break;
    }
  } finally {
    fs.closeSync(fd);
  }
  res.end();
  log({ path: rel, range: req.headers.range ?? null, status, bytes });
}

function proxyRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
  const target = new URL(req.url ?? '');
  const out = http.request({ host: target.hostname, port: target.port || 80, path: `${target.pathname}${target.search}`, method: req.method, headers: req.headers }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers);
    let bytes = 0;
    up.on('data', (d: Buffer) => (bytes += d.length));
    up.on('end', () => log({ proxy: 'get', url: target.href, status: up.statusCode, bytes }));
    up.pipe(res);
  });
  out.on('error', () => res.writeHead(502).end());
  req.pipe(out);
}

const server = http.createServer((req, res) => {
  if (proxyMode) proxyRequest(req, res);
  else void serveFile(req, res);
});
server.keepAliveTimeout = 30000;
if (proxyMode) {
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const [host, p] = (req.url ?? '').split(':');
    const up = net.connect(Number(p), host!, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(client);
      client.pipe(up);
      log({ proxy: 'connect', target: req.url });
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
}
server.listen(port, '127.0.0.1', () => log({ event: 'listening', port: (server.address() as net.AddressInfo).port }));
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
