/**
 * A private graphical session for the desktop tests: an Xvfb server on a display number it
 * picks itself (`-displayfd`, so tests running at once, or a desktop on :0, never collide) that
 * admits only clients holding the cookie written here (`-auth`), and a session bus of its own
 * with no service to activate (no notification daemon, no accessibility bus). What the tests
 * see of it: the windows (`xwininfo -root -tree`, `xprop`), and screenshots of the root window
 * (`xwd`), decoded here and written as PNG for people to look at.
 *
 * Programs the tests start only indirectly (a browser started by xdg-open, a dialog started by
 * a bundle) are not our children: they are tracked as `Proc` (pid and start time, so a reused
 * pid is never signalled) and stopped by pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import { procStatFields } from '../runtime/launcher/proc-stat.js';

/** Polls `probe` until it gives a value (not undefined/false/null), or fails after `ms` naming `what`. */
export async function until<T>(what: string, ms: number, probe: () => T | undefined | null | false, every = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A process known by pid and start time (field 22 of stat): the pair names one process for good. */
export interface Proc {
  pid: number;
  start: string;
  what: string;
}

export function proc(pid: number, what: string): Proc | null {
  const f = procStatFields(pid);
  return f && f[19] !== undefined ? { pid, start: f[19], what } : null;
}

/** Running: there, the same process, and not a zombie (an orphan here may wait long for its reaper). */
export function alive(p: Proc): boolean {
  const f = procStatFields(p.pid);
  return f !== null && f[19] === p.start && f[0] !== 'Z' && f[0] !== 'X';
}

export function parentOf(p: Proc): number | null {
  const f = procStatFields(p.pid);
  return f && f[19] === p.start ? Number(f[1]) : null;
}

/** Every live descendant of `p` (children first found by their parent pid in /proc). */
export function descendants(p: Proc): Proc[] {
  if (!alive(p)) return []; // its pid may be another process's now
  const parents = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = procStatFields(Number(name));
    if (!f || f[1] === undefined) continue;
    const list = parents.get(Number(f[1])) ?? [];
    list.push(Number(name));
    parents.set(Number(f[1]), list);
  }
  const out: Proc[] = [];
  const walk = (pid: number) => {
    for (const child of parents.get(pid) ?? []) {
      const c = proc(child, `a child of ${p.what}`);
      if (c && alive(c)) out.push(c);
      walk(child);
    }
  };
  walk(p.pid);
  return out;
}

/** SIGTERM, then SIGKILL if it is still there after `ms`; resolves once it is gone. */
export async function stopProc(p: Proc, ms = 5000): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    if (!alive(p)) return;
    try {
      process.kill(p.pid, s);
    } catch {
      /* gone meanwhile */
    }
  };
  signal('SIGTERM');
  try {
    await until(`${p.what} (pid ${p.pid}) to exit`, ms, () => !alive(p));
  } catch {
    signal('SIGKILL');
    await until(`${p.what} (pid ${p.pid}) to die`, ms, () => !alive(p));
  }
}

/** Waits for our child's exit, with a deadline; its code, or its signal's name. */
export function exitOf(child: ChildProcess, what: string, ms: number): Promise<number | string> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode ?? child.signalCode!);
    const timer = setTimeout(() => reject(new Error(`${what} did not exit within ${ms} ms`)), ms);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      resolve(code ?? sig!);
    });
  });
}

/** Stops our child by pid (SIGTERM, then SIGKILL) and waits for it. */
export async function stopChild(child: ChildProcess, what: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  try {
    await exitOf(child, what, 5000);
  } catch {
    child.kill('SIGKILL');
    await exitOf(child, what, 5000);
  }
}

/** One Xauthority entry: MIT-MAGIC-COOKIE-1 for any host (FamilyWild) and any display (no number). */
function xauthEntry(cookie: Buffer): Buffer {
  const field = (b: Buffer) => {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  const family = Buffer.alloc(2);
  family.writeUInt16BE(0xffff);
  return Buffer.concat([family, field(Buffer.alloc(0)), field(Buffer.alloc(0)), field(Buffer.from('MIT-MAGIC-COOKIE-1')), field(cookie)]);
}

// A session bus that activates nothing: no <servicedir>, so no notification daemon (or any other
// service a test did not start itself) can answer on it.
const BUS_CONFIG = (socket: string) => `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`;

export interface XSession {
  display: string;
  /** What a program needs to be in this session: DISPLAY, XAUTHORITY, the bus, a runtime dir. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** Reads the first line `child` writes on `stream`, failing with its stderr if it exits first. */
function firstLine(child: ChildProcess, stream: NodeJS.ReadableStream, what: string, ms: number): Promise<string> {
  let err = '';
  child.stderr?.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} gave no answer within ${ms} ms: ${err}`)), ms);
    stream.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve(out.slice(0, nl));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what} could not start: ${e.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} before it was ready: ${err}`));
    });
  });
}

/** Starts Xvfb (1024x768, 24 bits) and a session bus under `dir`. */
export async function startXSession(dir: string): Promise<XSession> {
  fs.mkdirSync(dir, { recursive: true });
  const auth = path.join(dir, 'Xauthority');
  fs.writeFileSync(auth, xauthEntry(randomBytes(16)), { mode: 0o600 });
  const runtimeDir = path.join(dir, 'runtime');
  fs.mkdirSync(runtimeDir, { mode: 0o700 });
  const children: Array<[ChildProcess, string]> = [];
  const stop = async () => {
    for (const [child, what] of children.reverse()) await stopChild(child, what);
  };
  try {
    // -displayfd 3: Xvfb takes the first free display number and writes it there once it
    // accepts clients; -noreset: it stays the same server when the last client leaves.
    const xvfb = spawn('Xvfb', ['-displayfd', '3', '-auth', auth, '-nolisten', 'tcp', '-noreset', '-screen', '0', '1024x768x24'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    children.push([xvfb, 'Xvfb']);
    const number = await firstLine(xvfb, xvfb.stdio[3] as NodeJS.ReadableStream, 'Xvfb (Debian package xvfb)', 30000);
    const bus = path.join(dir, 'bus');
    fs.writeFileSync(path.join(dir, 'bus.conf'), BUS_CONFIG(bus));
    const daemon = spawn('dbus-daemon', ['--nofork', `--config-file=${path.join(dir, 'bus.conf')}`, '--print-address=1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push([daemon, 'dbus-daemon']);
    const address = await firstLine(daemon, daemon.stdout!, 'dbus-daemon (Debian package dbus)', 30000);
    return { display: `:${number.trim()}`, env: { DISPLAY: `:${number.trim()}`, XAUTHORITY: auth, DBUS_SESSION_BUS_ADDRESS: address.trim(), XDG_RUNTIME_DIR: runtimeDir }, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `base` without what would tie a program to the machine's own session (its display, bus,
 * desktop and browser settings), plus `session`.
 */
export function sessionEnv(base: NodeJS.ProcessEnv, session: XSession, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of ['DISPLAY', 'WAYLAND_DISPLAY', 'XAUTHORITY', 'DBUS_SESSION_BUS_ADDRESS', 'XDG_RUNTIME_DIR', 'XDG_CURRENT_DESKTOP', 'XDG_SESSION_DESKTOP', 'DESKTOP_SESSION', 'KDE_FULL_SESSION', 'GNOME_DESKTOP_SESSION_ID', 'MATE_DESKTOP_SESSION_ID', 'BROWSER']) delete env[k];
  return { ...env, ...session.env, ...extra };
}

function x11(tool: string, args: string[], env: NodeJS.ProcessEnv): Buffer {
  const r = spawnSync(tool, args, { env, timeout: 30000, maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${tool}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

export interface XWindow {
  id: string;
  name: string | null;
  /** WM_CLASS: instance and class. */
  wmClass: string[];
  /** Where it is on the root window. */
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Every window of the display, from `xwininfo -root -tree` (x11-utils). */
export function windows(env: NodeJS.ProcessEnv): XWindow[] {
  const out: XWindow[] = [];
  const line = /^\s*(0x[0-9a-f]+) (?:"(.*)"|\(has no name\)): \(([^)]*)\)\s+(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+\+?(-?\d+)\+?(-?\d+)/;
  // The walk fails with BadWindow when a window goes away while it is being read (a dialog
  // closing, a browser replacing its windows): that is a moment of the display, not an error.
  let tree: Buffer | null = null;
  for (let attempt = 1; tree === null; attempt++) {
    try {
      tree = x11('xwininfo', ['-root', '-tree'], env);
    } catch (err) {
      if (attempt >= 5 || !/Bad (Window|Drawable)|BadWindow/.test((err as Error).message)) throw err;
    }
  }
  for (const l of tree.toString('utf8').split('\n')) {
    const m = line.exec(l);
    if (!m) continue;
    out.push({ id: m[1]!, name: m[2] ?? null, wmClass: [...m[3]!.matchAll(/"([^"]*)"/g)].map((c) => c[1]!), width: Number(m[4]), height: Number(m[5]), x: Number(m[6]), y: Number(m[7]) });
  }
  return out;
}

/** Whether the window is shown (mapped, and its parents too). */
export function viewable(env: NodeJS.ProcessEnv, id: string): boolean {
  const r = spawnSync('xwininfo', ['-id', id], { env, encoding: 'utf8', timeout: 30000 });
  return r.status === 0 && /Map State: IsViewable/.test(r.stdout);
}

/** The pid a client put on its window (_NET_WM_PID, which GTK sets), or null. */
export function windowPid(env: NodeJS.ProcessEnv, id: string): number | null {
  const r = spawnSync('xprop', ['-id', id, '_NET_WM_PID'], { env, encoding: 'utf8', timeout: 30000 });
  const m = /= (\d+)/.exec(r.stdout);
  return r.status === 0 && m ? Number(m[1]) : null;
}

/** Pixels, 8-bit RGB, row after row. */
export interface Image {
  width: number;
  height: number;
  rgb: Buffer;
}

/**
 * Decodes an XWD dump (what `xwd` writes): a header of 25 big-endian words and the window's
 * name, a colour map, then the pixels as the server holds them. Only the true-colour visuals
 * Xvfb gives at depth 24 (24 or 32 bits a pixel) are read.
 */
export function readXwd(buf: Buffer): Image {
  const word = (i: number) => buf.readUInt32BE(i * 4);
  const [headerSize, version, format, width, height, byteOrder, bitsPerPixel, bytesPerLine, visualClass] = [word(0), word(1), word(2), word(4), word(5), word(7), word(11), word(12), word(13)];
  const masks = [word(14), word(15), word(16)];
  if (version !== 7 || format !== 2) throw new Error(`not an XWD ZPixmap dump (version ${version}, format ${format})`);
  if ((visualClass !== 4 && visualClass !== 5) || (bitsPerPixel !== 24 && bitsPerPixel !== 32)) throw new Error(`XWD visual class ${visualClass} at ${bitsPerPixel} bits a pixel is not read here`);
  const data = headerSize + word(19) * 12; // each colour map entry is 12 bytes
  const bytes = bitsPerPixel / 8;
  if (buf.length < data + bytesPerLine * height) throw new Error('the XWD dump is cut short');
  const channel = masks.map((mask) => {
    let shift = 0;
    while (shift < 32 && !((mask >>> shift) & 1)) shift++;
    return { mask, shift, max: mask >>> shift };
  });
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = data + y * bytesPerLine + x * bytes;
      const v = byteOrder === 0 ? buf.readUIntLE(at, bytes) : buf.readUIntBE(at, bytes);
      channel.forEach((c, i) => (rgb[(y * width + x) * 3 + i] = Math.round((((v & c.mask) >>> c.shift) * 255) / c.max)));
    }
  }
  return { width, height, rgb };
}

/** The whole screen now, as the X server draws it. */
export function screenshot(env: NodeJS.ProcessEnv): Image {
  return readXwd(x11('xwd', ['-root', '-silent'], env));
}

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** How many pixels inside `r` (clipped to the image) satisfy `test`. */
export function countPixels(img: Image, r: Rect, test: (red: number, green: number, blue: number) => boolean): number {
  let n = 0;
  for (let y = Math.max(0, r.y); y < Math.min(img.height, r.y + r.height); y++) {
    for (let x = Math.max(0, r.x); x < Math.min(img.width, r.x + r.width); x++) {
      const i = (y * img.width + x) * 3;
      if (test(img.rgb[i]!, img.rgb[i + 1]!, img.rgb[i + 2]!)) n++;
    }
  }
  return n;
}

/** `#rrggbb` exactly. */
export function isColour(hex: string): (r: number, g: number, b: number) => boolean {
  const v = parseInt(hex.slice(1), 16);
  return (r, g, b) => r === v >> 16 && g === ((v >> 8) & 0xff) && b === (v & 0xff);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A PNG of the image (8-bit RGB, no filter): signature, IHDR, IDAT, IEND with their CRCs. */
export function encodePng(img: Image): Buffer {
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const typed = Buffer.concat([Buffer.from(type, 'latin1'), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([len, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(img.width, 0);
  ihdr.writeUInt32BE(img.height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const stride = img.width * 3;
  const raw = Buffer.alloc((stride + 1) * img.height);
  for (let y = 0; y < img.height; y++) img.rgb.copy(raw, y * (stride + 1) + 1, y * stride, (y + 1) * stride);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
