/**
 * GET requests with Node's built-in http/https: redirects followed (a "latest" URL usually
 * redirects), kept-alive connections, a timeout on silence, and the proxy the environment
 * names (proxy.ts): an http URL is asked of the proxy by its absolute URI, an https URL goes
 * through a CONNECT tunnel and TLS to the server itself (certificates checked as without a
 * proxy; NODE_EXTRA_CA_CERTS adds trusted ones). Failures become UpdateErrors that say whether
 * the network is missing, the server refused, or a transfer was cut.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { UpdateError } from './errors.js';
import { proxyFor, type Proxy } from './proxy.js';

/** No byte for this long: the request is given up (the download resumes on the next run). */
const IDLE_TIMEOUT_MS = 30_000;
const MAX_REDIRECTS = 8;
const USER_AGENT = 'overpack-update/1';

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  /** The URL that answered, after redirects. */
  url: URL;
}

/** A URL without its user and password, for messages. */
export function shownUrl(url: URL): string {
  if (!url.username && !url.password) return url.href;
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href;
}

const NETWORK_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'EADDRNOTAVAIL']);

/** An error from a request that got no response yet. */
function beforeResponse(err: NodeJS.ErrnoException, url: URL, proxy: Proxy | null): UpdateError {
  if (err instanceof UpdateError) return err;
  const where = proxy ? `${url.host} through the proxy ${proxy.url}` : url.host;
  const code = err.code ?? '';
  if (NETWORK_CODES.has(code)) {
    const why = code === 'ECONNREFUSED' ? 'the connection was refused' : code.startsWith('EAI') || code === 'ENOTFOUND' ? 'the name does not resolve' : 'it is unreachable';
    return new UpdateError('NO_NETWORK', 'connect', shownUrl(url), `cannot reach ${where}: ${why} (${code}); check the network${proxy ? ' and the proxy' : ''}, then try again`);
  }
  if (code === 'ETIMEDOUT' || code === 'ECONNRESET' || code === 'EPIPE') {
    return new UpdateError('NO_NETWORK', 'connect', shownUrl(url), `no answer from ${where} (${code}); check the network, then try again`);
  }
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO/.test(code) || /certificate|SSL|TLS/i.test(err.message)) {
    return new UpdateError('UNAVAILABLE', 'tls', shownUrl(url), `the TLS connection to ${url.host} failed: ${err.message} (${code || 'TLS'}); the server's certificate is not trusted here (NODE_EXTRA_CA_CERTS can name a CA file)`);
  }
  return new UpdateError('NO_NETWORK', 'connect', shownUrl(url), `cannot fetch ${shownUrl(url)}: ${err.message}${code ? ` (${code})` : ''}`);
}

export class HttpClient {
  private readonly agents = { http: new http.Agent({ keepAlive: true, maxSockets: 2 }), https: new https.Agent({ keepAlive: true, maxSockets: 2 }) };

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  /** GET `url` with `headers`, following redirects; resolves with the first non-redirect response. */
  async get(url: URL, headers: Record<string, string> = {}): Promise<HttpResponse> {
    let at = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await this.once(at, headers);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(status) && location) {
        res.resume();
        let next: URL;
        try {
          next = new URL(location, at);
        } catch {
          throw new UpdateError('UNAVAILABLE', 'fetch', shownUrl(at), `${shownUrl(at)} redirects to ${JSON.stringify(location)}, which is not a URL`);
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new UpdateError('UNAVAILABLE', 'fetch', shownUrl(at), `${shownUrl(at)} redirects to a ${next.protocol} URL`);
        if (at.protocol === 'https:' && next.protocol === 'http:') throw new UpdateError('UNAVAILABLE', 'fetch', shownUrl(at), `${shownUrl(at)} redirects from https to plain http (${shownUrl(next)}); refused`);
        // Credentials of the URL go to its own origin only.
        if (next.origin !== at.origin) {
          next.username = '';
          next.password = '';
        }
        at = next;
        continue;
      }
      return { status, headers: res.headers, body: res, url: at };
    }
    throw new UpdateError('UNAVAILABLE', 'fetch', shownUrl(url), `${shownUrl(url)} redirects more than ${MAX_REDIRECTS} times`);
  }

  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  private async once(url: URL, extra: Record<string, string>): Promise<http.IncomingMessage> {
    const secure = url.protocol === 'https:';
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || (secure ? 443 : 80));
    const proxy = proxyFor(url, this.env);
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', ...extra, host: url.host };
    if (url.username || url.password) headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
    const path = `${url.pathname}${url.search}`;
    try {
      let req: http.ClientRequest;
      if (!proxy) {
        req = (secure ? https : http).request({ host, port, path, method: 'GET', headers, agent: secure ? this.agents.https : this.agents.http, servername: secure && !net.isIP(host) ? host : undefined });
      } else if (!secure) {
        // A plain http proxy is asked for the absolute URI.
        const absolute = new URL(url.href);
        absolute.username = '';
        absolute.password = '';
        req = http.request({ host: proxy.host, port: proxy.port, path: absolute.href, method: 'GET', headers: { ...headers, ...(proxy.authorization ? { 'proxy-authorization': proxy.authorization } : {}) }, agent: this.agents.http });
      } else {
        const socket = await this.tunnel(proxy, host, port, url);
        req = http.request({ path, method: 'GET', headers, createConnection: () => socket });
      }
      return await new Promise<http.IncomingMessage>((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
        req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
        req.end();
      });
    } catch (err) {
      throw beforeResponse(err as NodeJS.ErrnoException, url, proxy);
    }
  }

  /** A TLS connection to host:port through the proxy's CONNECT. */
  private tunnel(proxy: Proxy, host: string, port: number, url: URL): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const target = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
      const req = http.request({ host: proxy.host, port: proxy.port, method: 'CONNECT', path: target, headers: { host: target, 'user-agent': USER_AGENT, ...(proxy.authorization ? { 'proxy-authorization': proxy.authorization } : {}) }, agent: false });
      req.once('connect', (res, socket) => {
        if (res.statusCode !== 200) {
          socket.destroy();
          reject(new UpdateError(res.statusCode === 407 ? 'USAGE' : 'UNAVAILABLE', 'proxy', proxy.url, `the proxy ${proxy.url} refused to connect to ${target} (${res.statusCode} ${res.statusMessage ?? ''})${res.statusCode === 407 ? '; give its user and password in the proxy URL (http://user:password@host:port)' : ''}`));
          return;
        }
        // host: what the certificate is checked against (without it, "localhost").
        const t = tls.connect({ socket, host, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] }, () => resolve(t));
        t.once('error', (e) => reject(beforeResponse(e as NodeJS.ErrnoException, url, null)));
      });
      req.once('error', reject);
      req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error('the proxy did not answer'), { code: 'ETIMEDOUT' })));
      req.end();
    });
  }
}
