/**
 * A small HTTP server for the update tests and bench, run as its own process (the test process
 * spawns bundles and the CLI and must not be the one serving them): files of --root with byte
 * ranges (`bytes=S-E`, `bytes=S-`, `bytes=-N`; several at once as multipart/byteranges, as
 * zsync asks), or without range support (--no-ranges);
 * --die-after N exits the process abruptly once N body bytes were sent in all (a server killed
 * mid-download); --tls-cert/--tls-key serve https. With --proxy it is instead a forward proxy
 * (absolute-URI GETs and CONNECT).
 * Prints one JSON line per event on stdout: first {"event":"listening","port":P}, then one per
 * response with the bytes of body actually sent.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
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
const tlsCert = opt('--tls-cert');
const tlsKey = opt('--tls-key');
let sent = 0;

function log(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

/** Parses a Range header: null (none, or ranges off), 'bad', or the ranges asked ([start, end)). */
function parseRanges(h: string | undefined, size: number): Array<[number, number]> | null | 'bad' {
  if (!h || noRanges) return null;
  const spec = /^bytes=(.+)$/.exec(h.trim());
  if (!spec) return 'bad';
  const out: Array<[number, number]> = [];
  for (const part of spec[1]!.split(',')) {
    const m = /^\s*(\d*)-(\d*)\s*$/.exec(part);
    if (!m || (m[1] === '' && m[2] === '')) return 'bad';
    if (m[1] === '') {
      const n = Math.min(Number(m[2]), size);
      if (n > 0) out.push([size - n, size]);
      continue;
    }
    const s = Number(m[1]);
    const e = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
    if (s < size && e > s) out.push([s, e]);
  }
  return out.length ? out : 'bad';
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
  const ranges = parseRanges(req.headers.range, size);
  if (ranges === 'bad') {
    fs.closeSync(fd);
    res.writeHead(416, { 'content-range': `bytes */${size}`, 'content-length': 0 }).end();
    log({ path: rel, range: req.headers.range, status: 416, bytes: 0 });
    return;
  }
  const status = ranges ? 206 : 200;
  // Several ranges (zsync asks for many at once): multipart/byteranges, every part with its own header.
  const boundary = 'overpack-test-boundary';
  const parts = (ranges ?? [[0, size] as [number, number]]).map(([s, e]) => ({ s, e, head: ranges && ranges.length > 1 ? Buffer.from(`\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${s}-${e - 1}/${size}\r\n\r\n`) : Buffer.alloc(0) }));
  const multi = ranges !== null && ranges.length > 1;
  const trailer = multi ? Buffer.from(`\r\n--${boundary}--\r\n`) : Buffer.alloc(0);
  const length = parts.reduce((n, p) => n + p.head.length + p.e - p.s, 0) + trailer.length;
  res.writeHead(status, {
    'content-length': length,
    'accept-ranges': noRanges ? 'none' : 'bytes',
    ...(multi ? { 'content-type': `multipart/byteranges; boundary=${boundary}` } : ranges ? { 'content-range': `bytes ${parts[0]!.s}-${parts[0]!.e - 1}/${size}` } : {}),
  });
  let bytes = 0;
  const buf = Buffer.allocUnsafe(64 << 10);
  const send = async (chunk: Buffer): Promise<void> => {
    if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
  };
  try {
    for (const p of parts) {
      if (p.head.length) {
        await send(p.head);
        bytes += p.head.length;
      }
      for (let at = p.s; at < p.e; ) {
        let n = fs.readSync(fd, buf, 0, Math.min(buf.length, p.e - at), at);
        if (sent + n >= dieAfter) n = Math.max(0, dieAfter - sent);
        const chunk = Buffer.from(buf.subarray(0, n));
        at += n;
        bytes += n;
        sent += n;
        if (sent >= dieAfter) {
          res.write(chunk);
          log({ path: rel, range: req.headers.range ?? null, status, bytes, died: true });
          // Let the bytes written reach the socket, then die without closing anything properly.
          await new Promise((r) => setTimeout(r, 50));
          process.kill(process.pid, 'SIGKILL');
        }
        await send(chunk);
        if (res.destroyed) break;
      }
    }
    if (trailer.length) {
      await send(trailer);
      bytes += trailer.length;
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

const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
  if (proxyMode) proxyRequest(req, res);
  else void serveFile(req, res);
};
// --tls-cert/--tls-key: https (the proxy mode stays plain http, https goes through it with CONNECT).
const server = tlsCert && tlsKey ? https.createServer({ cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) }, handler) : http.createServer(handler);
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
