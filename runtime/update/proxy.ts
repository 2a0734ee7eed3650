/**
 * Which proxy a request goes through, as curl and most tools read the environment:
 * `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for http URLs (the
 * lower-case name first), `all_proxy`/`ALL_PROXY` for either, and `no_proxy`/`NO_PROXY`
 * naming hosts reached directly: `*`, host names (matching the host and its subdomains, with
 * or without a leading dot), IP addresses, IPv4 CIDR blocks (`10.0.0.0/8`), each optionally
 * with `:port`. Node's own http, https and fetch ignore these variables, so this is ours.
 */
import net from 'node:net';
import { UpdateError } from './errors.js';

export interface Proxy {
  host: string;
  port: number;
  /** `Basic ...` from the proxy URL's user and password, if any. */
  authorization?: string;
  url: string;
}

function pick(env: NodeJS.ProcessEnv, names: string[]): string | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v.trim() !== '') return v.trim();
  }
  return undefined;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => (n << 8) + Number(part), 0) >>> 0;
}

/** Whether `host:port` is named by the no_proxy list. */
export function bypassesProxy(host: string, port: number, noProxy: string | undefined): boolean {
  if (!noProxy) return false;
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    let entryPort: number | null = null;
    const portMatch = /^(.*[^:]):(\d+)$/.exec(entry);
    if (portMatch && !entry.includes('::') && net.isIP(entry) !== 6) {
      entry = portMatch[1]!;
      entryPort = Number(portMatch[2]);
    }
    entry = entry.replace(/^\[|\]$/g, '');
    if (entryPort !== null && entryPort !== port) continue;
    const cidr = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(entry);
    if (cidr) {
      if (net.isIPv4(h)) {
        const bits = Number(cidr[2]);
        const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
        if ((ipv4ToInt(h) & mask) === (ipv4ToInt(cidr[1]!) & mask)) return true;
      }
      continue;
    }
    if (net.isIP(entry)) {
      if (entry === h) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, '');
    if (h === domain || h.endsWith(`.${domain}`)) return true;
  }
  return false;
}

/** The proxy for `url`, or null to connect directly. */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): Proxy | null {
  const https = url.protocol === 'https:';
  const value = https ? pick(env, ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) : pick(env, ['http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY']);
  if (!value) return null;
  const port = Number(url.port || (https ? 443 : 80));
  if (bypassesProxy(url.hostname, port, pick(env, ['no_proxy', 'NO_PROXY']))) return null;
  let p: URL;
  try {
    p = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
  } catch {
    throw new UpdateError('USAGE', 'proxy', value, `the proxy ${JSON.stringify(value)} (from the environment) is not a URL; set it as http://host:port`);
  }
  if (p.protocol !== 'http:') throw new UpdateError('USAGE', 'proxy', value, `proxy ${value}: only http:// proxies are supported (https URLs go through them with CONNECT)`);
  const authorization = p.username ? `Basic ${Buffer.from(`${decodeURIComponent(p.username)}:${decodeURIComponent(p.password)}`).toString('base64')}` : undefined;
  return { host: p.hostname.replace(/^\[|\]$/g, ''), port: Number(p.port || 80), authorization, url: `http://${p.host}` };
}
