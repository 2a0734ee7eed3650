/**
 * Desktop users: the menu entry and icon a bundle installs (`--overpack-integrate`, `overpack
 * integrate`), checked with desktop-file-validate; its refresh when the bundle moves or is
 * rebuilt; exact removal; the icon checked at build; errors written to a log and shown as a
 * notification when there is no terminal; the desktop template built and run. Under a private
 * X server (Xvfb): the template's page opened by xdg-open in a real browser and seen in a
 * screenshot, and an error shown in a zenity dialog that the bundle does not wait for.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { CLI, ROOT, forceUnmount, isolatedEnv, mountsUnder, tempDir } from './helpers.js';
import { alive, countPixels, descendants, encodePng, exitOf, isColour, parentOf, proc, screenshot, sessionEnv, startXSession, stopChild, stopProc, until, viewable, windowPid, windows, type Image, type Proc, type XSession, type XWindow } from './xsession.js';

const base = tempDir('desktop');
const home = path.join(base, 'home');
const data = path.join(home, '.local', 'share');
const env = { ...isolatedEnv(home), XDG_STATE_HOME: path.join(home, '.local', 'state') };

function cli(args: string[], extra: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...env, ...extra }, timeout: 300000 });
}

function build(app: string, out: string): void {
  const r = cli(['build', app, '-o', out]);
  assert.equal(r.status, 0, r.stderr);
}

function run(bundle: string, args: string[] = [], extra: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(bundle, args, { encoding: 'utf8', env: { ...env, ...extra }, cwd: base, timeout: 60000 });
}

/** A real PNG of `w` x `h` pixels (one grey). */
function png(w: number, h: number): Buffer {
  return encodePng({ width: w, height: h, rgb: Buffer.alloc(w * h * 3, 0x40) });
}

function makeApp(dir: string, desktop: Record<string, unknown>, files: Record<string, Buffer | string> = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  // MARKER: where a run started by a desktop launcher (no stdout to read) leaves its word.
  fs.writeFileSync(path.join(dir, 'run.sh'), '#!/bin/sh\necho "opened: $*"\n[ -z "$MARKER" ] || echo "opened: $*" > "$MARKER"\n', { mode: 0o755 });
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
  fs.writeFileSync(path.join(dir, 'overpack.json'), JSON.stringify({ name: 'viewer', version: '1.0.0', entrypoint: 'run.sh', desktop }));
}

/** The body of an HTTP request to `u`. */
function get(u: string, method = 'GET'): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = http.request(u, { method }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The address the desktop template prints once it serves its page. */
function servedAt(p: ChildProcess): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let o = '';
    p.stdout!.on('data', (d) => {
      o += d;
      const m = /is at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(o);
      if (m) resolve(m[1]!);
    });
    p.on('exit', (code) => reject(new Error(`exited ${code} before serving`)));
  });
}

const entryFile = path.join(data, 'applications', 'overpack-viewer.desktop');
const pngIcon = path.join(data, 'icons', 'hicolor', '192x192', 'apps', 'overpack-viewer.png');
const keyOf = (entry: string, key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(entry)?.[1];

describe('desktop integration', () => {
  const app = path.join(base, 'viewer');
  const bundle = path.join(base, 'viewer.run');
  const icon = png(200, 200);
  before(() => {
    fs.mkdirSync(home, { recursive: true });
    makeApp(app, { name: 'Picture Viewer', comment: 'Looks at pictures', icon: 'icon.png', categories: ['Graphics', 'Viewer'], mimeTypes: ['image/png', 'image/jpeg'], keywords: ['photo', 'image'], startupWMClass: 'viewer' }, { 'icon.png': icon });
    build(app, bundle);
  });
  after(() => {
    for (const m of mountsUnder(home)) forceUnmount(m);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('--overpack-integrate writes a valid entry and the icon that gio launches; a moved or rebuilt bundle refreshes it; --overpack-unintegrate removes exactly that', async () => {
    const r = run(bundle, ['--overpack-integrate']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '', 'the app did not run');
    const entry = fs.readFileSync(entryFile, 'utf8');
    const v = spawnSync('desktop-file-validate', [entryFile], { encoding: 'utf8' });
    assert.equal(v.status, 0, `desktop-file-validate: ${v.stdout}${v.stderr}`);
    assert.equal(v.stdout.trim(), '', 'not even a hint');
    assert.equal(keyOf(entry, 'Exec'), `"${bundle}" %F`, 'the bundle, quoted, with the files it is given');
    assert.equal(keyOf(entry, 'TryExec'), bundle);
    assert.equal(keyOf(entry, 'Name'), 'Picture Viewer');
    assert.equal(keyOf(entry, 'Icon'), 'overpack-viewer');
    assert.equal(keyOf(entry, 'Categories'), 'Graphics;Viewer;');
    assert.equal(keyOf(entry, 'MimeType'), 'image/png;image/jpeg;');
    assert.equal(keyOf(entry, 'X-Overpack-Bundle'), bundle);
    assert.ok(fs.readFileSync(pngIcon).equals(icon), 'the icon, byte for byte, in the biggest standard size it fills');
    // A desktop launcher (GLib's, as GNOME's) starts the bundle from the entry, with a file.
    const marker = path.join(base, 'launched');
    const g = spawnSync('gio', ['launch', entryFile, '/tmp/a.png'], { encoding: 'utf8', env: { ...env, MARKER: marker }, timeout: 30000 });
    assert.equal(g.status, 0, `gio launch: ${g.stderr}`);
    for (let i = 0; i < 300 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(fs.readFileSync(marker, 'utf8'), 'opened: /tmp/a.png\n');

    // Moved: its next launch points the entry at the new path.
    const moved = path.join(base, 'moved', 'Picture Viewer.run');
    fs.mkdirSync(path.dirname(moved));
    fs.renameSync(bundle, moved);
    assert.equal(run(moved, ['x']).status, 0);
    const after = fs.readFileSync(entryFile, 'utf8');
    assert.equal(keyOf(after, 'Exec'), `"${moved}" %F`);
    assert.equal(spawnSync('desktop-file-validate', [entryFile]).status, 0, 'a path with a space is quoted');
    // Rebuilt with another icon size: the new one replaces the old, nothing else stays.
    fs.writeFileSync(path.join(app, 'icon.png'), png(128, 128));
    build(app, moved);
    assert.equal(run(moved, ['y']).status, 0);
    assert.notEqual(keyOf(fs.readFileSync(entryFile, 'utf8'), 'X-Overpack-Index'), keyOf(after, 'X-Overpack-Index'));
    assert.equal(fs.existsSync(pngIcon), false, 'the 192 px icon is gone');
    assert.ok(fs.existsSync(path.join(data, 'icons', 'hicolor', '128x128', 'apps', 'overpack-viewer.png')));

    const u = run(moved, ['--overpack-unintegrate']);
    assert.equal(u.status, 0, u.stderr);
    assert.match(u.stderr, /removed viewer from the desktop menu/);
    const left = spawnSync('find', [data, '-name', 'overpack-viewer*', '-o', '-name', 'viewer.json'], { encoding: 'utf8' }).stdout.trim();
    assert.equal(left, '', 'nothing of the integration is left');
    assert.match(run(moved, ['--overpack-unintegrate']).stderr, /not in the desktop menu: nothing to remove/);
    fs.renameSync(moved, bundle);
  });

  it('overpack integrate / --list / unintegrate from the CLI; an SVG icon goes to scalable; a gone bundle is reported stale', () => {
    const svgApp = path.join(base, 'svg-app');
    makeApp(svgApp, { icon: 'icons/app.svg', terminal: true }, {});
    fs.mkdirSync(path.join(svgApp, 'icons'));
    fs.writeFileSync(path.join(svgApp, 'icons', 'app.svg'), '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>\n');
    const svgBundle = path.join(base, 'svg.run');
    build(svgApp, svgBundle);
    const r = cli(['integrate', svgBundle]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(data, 'icons', 'hicolor', 'scalable', 'apps', 'overpack-viewer.svg')));
    const entry = fs.readFileSync(entryFile, 'utf8');
    assert.equal(keyOf(entry, 'Exec'), `"${svgBundle}"`, 'no %F: the app declares no file types');
    assert.equal(keyOf(entry, 'Terminal'), 'true');
    assert.equal(spawnSync('desktop-file-validate', [entryFile]).status, 0);
    assert.match(cli(['integrate', '--list']).stdout, /^viewer\tok\t/m);
    fs.rmSync(svgBundle);
    assert.match(cli(['integrate', '--list']).stdout, /^viewer\tstale: bundle gone/m);
    const u = cli(['unintegrate', 'viewer']);
    assert.equal(u.status, 0, u.stderr);
    assert.equal(fs.existsSync(entryFile), false);
    assert.equal(fs.existsSync(path.join(data, 'icons', 'hicolor', 'scalable', 'apps', 'overpack-viewer.svg')), false);
  });

  it('refuses at build an icon a desktop cannot show, and desktop fields of the wrong shape, naming the field', () => {
    const cases: Array<[string, Record<string, unknown>, Record<string, Buffer | string>, RegExp]> = [
      ['small', { icon: 'i.png' }, { 'i.png': png(64, 64) }, /desktop\.icon: .*i\.png is 64x64; a PNG icon must be at least 128x128 \(or use an SVG\)/],
      ['oblong', { icon: 'i.png' }, { 'i.png': png(256, 128) }, /desktop\.icon: .*is 256x128; an icon must be square/],
      ['text', { icon: 'i.png' }, { 'i.png': 'not an image' }, /desktop\.icon: .*is neither a PNG nor an SVG/],
      ['missing', { icon: 'none.png' }, {}, /desktop\.icon: .*none\.png does not exist in the app directory/],
      ['outside', { icon: '../x.png' }, {}, /desktop\.icon: must be a relative path inside the app directory/],
      ['category', { categories: ['Bad Category'] }, {}, /desktop\.categories: must be an array of category names/],
      ['unknown', { colour: 'red' }, {}, /desktop\.colour: unknown field \(known: name, comment, icon, categories, mimeTypes, keywords, terminal, startupWMClass\)/],
    ];
    for (const [name, desktop, files, why] of cases) {
      const dir = path.join(base, `bad-${name}`);
      makeApp(dir, desktop, files);
      const r = cli(['build', dir, '-o', path.join(base, `bad-${name}.run`)]);
      assert.equal(r.status, 1, `${name}: ${r.stderr}`);
      assert.match(r.stderr, why, name);
      assert.equal(fs.existsSync(path.join(base, `bad-${name}.run`)), false);
    }
  });

  it('an error without a terminal goes to the app\'s log and, on a session bus, to a notification (notify-send, else gdbus); without a graphical session, only the log', async () => {
    // A private session bus with a notification server that records what it is asked to show.
    const busDir = path.join(base, 'bus');
    fs.mkdirSync(busDir);
    const daemon = spawnSync('dbus-daemon', ['--session', '--fork', `--address=unix:path=${busDir}/socket`, '--print-pid'], { encoding: 'utf8' });
    assert.equal(daemon.status, 0, `dbus-daemon: ${daemon.stderr}`);
    const busPid = Number(daemon.stdout.trim());
    const bus = { DBUS_SESSION_BUS_ADDRESS: `unix:path=${busDir}/socket` };
    const shown = path.join(base, 'notifications');
    const listener = spawn('/usr/bin/python3', [path.join(ROOT, 'test', 'fixtures', 'notification-listener.py'), shown], { env: { ...process.env, ...bus }, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        listener.stdout.on('data', (d) => String(d).includes('ready') && resolve());
        listener.on('exit', (code) => reject(new Error(`the notification listener exited ${code}`)));
      });
      const log = path.join(env.XDG_STATE_HOME, 'overpack', 'viewer.log');
      const fail = (extra: NodeJS.ProcessEnv) => run(bundle, ['--overpack-verify-signature', path.join(base, 'no-such.pub')], { ...bus, ...extra });
      const r = fail({ DISPLAY: ':42' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(fs.readFileSync(log, 'utf8'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z .*no-such\.pub/m);
      // The listener keeps the file open: read its lines, never remove it.
      const notes = () => fs.readFileSync(shown, 'utf8').split('\n').filter(Boolean);
      assert.equal(notes().length, 1);
      const [app, summary, body] = notes()[0]!.split('\t');
      assert.equal(app, 'overpack');
      assert.equal(summary, 'viewer could not start');
      assert.match(JSON.parse(body!) as string, new RegExp(`no-such\\.pub[\\s\\S]*Details: ${log.replace(/[.]/g, '\\.')}`));
      // Without notify-send on the PATH: the same over the bus with gdbus.
      const onlyGdbus = path.join(base, 'only-gdbus');
      fs.mkdirSync(onlyGdbus);
      fs.symlinkSync(spawnSync('sh', ['-c', 'command -v gdbus'], { encoding: 'utf8' }).stdout.trim(), path.join(onlyGdbus, 'gdbus'));
      assert.equal(fail({ WAYLAND_DISPLAY: 'wayland-0', PATH: onlyGdbus }).status, 2);
      assert.equal(notes().length, 2);
      assert.match(notes()[1]!, /^overpack\tviewer could not start\t/);
      // No graphical session: logged only.
      assert.equal(fail({ DISPLAY: '', WAYLAND_DISPLAY: '' }).status, 2);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(notes().length, 2, 'no notification without a graphical session');
      assert.equal(fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length, 3);
    } finally {
      listener.kill();
      process.kill(busPid);
    }
  });

  it('an Electron/Chromium app (a chrome-sandbox in the bundle): a build warning; where user namespaces are blocked, exit 3 saying why and what to do, the app not run', () => {
    const dir = path.join(base, 'electron-like');
    makeApp(dir, {}, { 'chrome-sandbox': '\x7fELF stands in for the helper' });
    fs.chmodSync(path.join(dir, 'chrome-sandbox'), 0o4755);
    const out = path.join(base, 'electron-like.run');
    const b = cli(['build', dir, '-o', out]);
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stderr, /chrome-sandbox: an Electron\/Chromium sandbox helper\. Inside a bundle it cannot be setuid/);
    assert.match(run(out, ['ok']).stdout, /opened: ok/, 'user namespaces allowed: it runs');
    // Blocked, in a mount namespace of the test's own: max_user_namespaces reads 0 there only.
    fs.writeFileSync(path.join(base, 'zero'), '0\n');
    const blocked = spawnSync('unshare', ['-m', 'sh', '-c', `mount --bind ${path.join(base, 'zero')} /proc/sys/user/max_user_namespaces && exec "$0" ok`, out], { encoding: 'utf8', env, cwd: base });
    assert.equal(blocked.status, 3, blocked.stderr);
    assert.match(blocked.stderr, /Electron\/Chromium app \(\/chrome-sandbox in the bundle\) and needs a sandbox: .*nosuid.*user\.max_user_namespaces is 0.*--no-sandbox if you accept/);
    assert.equal(blocked.stdout, '', 'the app did not run');
  });

  it('the desktop template builds and runs: it serves its page on 127.0.0.1 until Quit', async () => {
    const dir = path.join(base, 'tpl');
    assert.equal(cli(['init', dir, '--template', 'desktop']).status, 0);
    const out = path.join(base, 'hello-desktop.run');
    build(dir, out);
    const p = spawn(out, ['--no-open'], { env, cwd: base, stdio: ['ignore', 'pipe', 'pipe'] });
    const url = await servedAt(p);
    assert.match(await get(url), /<h1>Hello from a bundle<\/h1>/);
    assert.match(await get(`${url}icon.svg`), /<svg/);
    const exited = new Promise<number | null>((resolve) => p.on('exit', resolve));
    await get(`${url}quit`, 'POST');
    assert.equal(await exited, 0);
    const entry = cli(['integrate', out]);
    assert.equal(entry.status, 0, entry.stderr);
    assert.equal(spawnSync('desktop-file-validate', [path.join(data, 'applications', 'overpack-hello-desktop.desktop')]).status, 0);
    assert.equal(cli(['unintegrate', out]).status, 0);
  });
});

describe('under a graphical session (a private Xvfb and session bus)', () => {
  const xbase = tempDir('desktop-x');
  const xhome = path.join(xbase, 'home');
  // Kept after the run (a few hundred KB), for a person to look at what the test saw.
  let shots: string | undefined;
  const bundle = path.join(xbase, 'hello-desktop.run');
  let session: XSession | undefined;
  let xenv: NodeJS.ProcessEnv = {};
  // Ours to stop in teardown, even when a test failed: our children, and what was started on
  // our behalf (by the bundle, by xdg-open), each with whatever it started in turn, in the
  // order found: a parent before its children (xdg-open before the browser it would restart).
  const children: Array<[ChildProcess, string]> = [];
  const started: Proc[] = [];
  const track = (p: Proc | null, what: string): Proc => {
    assert.ok(p, `${what} is not running`);
    started.push(p);
    return p;
  };
  const stopTree = async (p: Proc) => {
    const below = descendants(p);
    await stopProc(p);
    for (const d of below) await stopProc(d);
  };
  const save = (img: Image, name: string, t: { diagnostic(m: string): void }) => {
    shots ??= tempDir('desktop-screenshots');
    const file = path.join(shots, name);
    fs.writeFileSync(file, encodePng(img));
    t.diagnostic(`screenshot: ${file}`);
  };

  before(async () => {
    // What these tests drive, by the Debian package that has it: missing, they fail here, naming it.
    const tools: Record<string, string> = { Xvfb: 'xvfb', 'dbus-daemon': 'dbus', 'xdg-open': 'xdg-utils', surf: 'surf', zenity: 'zenity', xwd: 'x11-apps', xwininfo: 'x11-utils', xprop: 'x11-utils' };
    const missing = Object.entries(tools).filter(([tool]) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
    assert.deepEqual(missing, [], `missing: ${missing.map(([tool, pkg]) => `${tool} (apt-get install ${pkg})`).join(', ')}`);
    session = await startXSession(path.join(xbase, 'session'));
    xenv = sessionEnv({ ...isolatedEnv(xhome), XDG_CONFIG_HOME: path.join(xhome, '.config'), XDG_STATE_HOME: path.join(xhome, '.local', 'state') }, session);
    // Only the cookie's holders may draw on it: nothing else on this machine sees our windows, and
    // every client on it was started by this test.
    const stranger = spawnSync('xwininfo', ['-root'], { env: { ...xenv, XAUTHORITY: path.join(xbase, 'no-cookie') }, encoding: 'utf8' });
    assert.notEqual(stranger.status, 0, 'a client without the cookie is refused');
    const dir = path.join(xbase, 'tpl');
    const init = spawnSync(process.execPath, [CLI, 'init', dir, '--template', 'desktop'], { encoding: 'utf8', env: xenv });
    assert.equal(init.status, 0, init.stderr);
    const b = spawnSync(process.execPath, [CLI, 'build', dir, '-o', bundle], { encoding: 'utf8', env: xenv, timeout: 300000 });
    assert.equal(b.status, 0, b.stderr);
  });
  after(async () => {
    for (const p of started) await stopTree(p);
    for (const [child, what] of children) await stopChild(child, what);
    for (const m of mountsUnder(xhome)) forceUnmount(m);
    await session?.stop();
    fs.rmSync(xbase, { recursive: true, force: true });
  });

  it('the desktop template opens its page with xdg-open in the browser $BROWSER names; a screenshot shows the page and its icon; Quit ends the bundle, nothing left mounted', async (t) => {
    // The user's browser as $BROWSER names it: xdg-open runs it when no desktop environment is
    // detected (this session has none). It notes its pid, which exec keeps, for the teardown.
    const pidFile = path.join(xbase, 'browser.pid');
    const browserCmd = path.join(xbase, 'browser');
    fs.writeFileSync(browserCmd, `#!/bin/sh\necho $$ > '${pidFile}'\nexec surf "$@"\n`, { mode: 0o755 });
    const e = { ...xenv, BROWSER: browserCmd };
    const app = spawn(bundle, [], { env: e, cwd: xbase, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push([app, 'the bundle']);
    let stderr = '';
    app.stderr!.on('data', (d) => (stderr += d));
    const url = await servedAt(app);

    const browserPid = await until('xdg-open to start the browser $BROWSER names', 60000, () => {
      const n = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0;
      return n > 0 ? n : undefined;
    }).catch((err: Error) => {
      const handler = spawnSync('xdg-mime', ['query', 'default', 'x-scheme-handler/http'], { env: e, encoding: 'utf8' }).stdout.trim();
      throw new Error(`${err.message} (the http handler xdg-mime reports: ${handler || 'none'}; bundle stderr: ${stderr})`);
    });
    // xdg-open waits for the browser, and starts it again if it exits with a failure (as when
    // it is killed): so xdg-open is stopped first, and its tree (the browser and its web
    // processes) with it.
    const b = proc(browserPid, 'the browser');
    const openerPid = b && parentOf(b);
    const opener = track(openerPid ? proc(openerPid, 'xdg-open') : null, 'xdg-open, the browser\'s parent');
    const browser = track(b, 'the browser');
    assert.match(fs.readFileSync(`/proc/${opener.pid}/cmdline`, 'utf8'), /xdg-open\0http:\/\/127\.0\.0\.1:/, 'started by xdg-open, with the page');

    // The browser's window, titled by the page, and on screen: the page's background over most
    // of it and the icon (an SVG the browser fetched from the app, read from the bundle's mount)
    // drawn in its own blue. Waited for until drawn, never for a fixed time.
    let shot: Image | undefined;
    let win: XWindow | undefined;
    try {
      const seen = await until('the page drawn in the browser window', 60000, () => {
        win = windows(e).find((w) => w.name?.includes('Hello Desktop') && viewable(e, w.id) && windowPid(e, w.id) === browserPid);
        if (!win) return undefined;
        shot = screenshot(e);
        const background = countPixels(shot, win, isColour('#f4f6fb'));
        const icon = countPixels(shot, win, isColour('#2f6fde'));
        return background > 0.5 * win.width * win.height && icon > 3000 ? { background, icon } : undefined;
      }, 250);
      t.diagnostic(`the page in a ${win!.width}x${win!.height} window: ${seen.background} background pixels, ${seen.icon} of the icon's blue`);
    } finally {
      if (shot) save(shot, 'template-page.png', t);
    }
    assert.deepEqual(win!.wmClass, ['surf', 'Surf']);

    // The page's Quit: the app stops, the runtime unmounts and exits with the app's status.
    const exited = exitOf(app, 'the bundle', 30000);
    assert.match(await get(`${url}quit`, 'POST'), /Bye/);
    assert.equal(await exited, 0, stderr);
    assert.deepEqual(mountsUnder(xhome), [], 'nothing left mounted');
    await stopTree(opener);
    assert.equal(alive(browser), false, 'the browser is closed');
    assert.equal(Number(fs.readFileSync(pidFile, 'utf8')), browserPid, 'and not started again');
  });

  it('a runtime error with no terminal and no notification server: a zenity dialog shows the whole message, and the bundle exits with its code while the dialog is still up', async (t) => {
    // Dark pixels, not black: the root window's background is pure black, and a rectangle read
    // while a dialog is mapped or resized may take in some of it (once, the reference counted 31,548).
    const inkIn = (img: Image, w: XWindow) => countPixels(img, w, (r, g, b) => r + g + b < 300 && r + g + b > 0);
    const dialogOf = (title: string) => windows(xenv).find((w) => w.name === title && w.wmClass[0] === 'zenity' && viewable(xenv, w.id));
    // What a user would see if the message were lost: zenity's error dialog with its own text.
    const ref = spawn('zenity', ['--error', '--title', 'reference'], { env: xenv, stdio: 'ignore' });
    children.push([ref, 'the reference dialog']);
    const refWin = await until('the reference dialog', 30000, () => dialogOf('reference'));
    let last = -1;
    const refInk = await until('the reference dialog drawn', 30000, () => {
      const n = inkIn(screenshot(xenv), dialogOf('reference') ?? refWin);
      const steady = n > 0 && n === last;
      last = n;
      return steady ? n : undefined;
    }, 200);
    await stopChild(ref, 'the reference dialog');
    await until('the reference dialog gone', 10000, () => !dialogOf('reference'));

    // No notification server owns the name on this bus: notify-send and gdbus fail, so zenity.
    // The error's own text has what Pango would read as markup (<pub.pem>).
    const app = spawn(bundle, ['--overpack-verify-signature='], { env: xenv, cwd: xbase, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push([app, 'the failing bundle']);
    let stderr = '';
    app.stderr!.on('data', (d) => (stderr += d));
    const message = '--overpack-verify-signature needs the public key file: --overpack-verify-signature <pub.pem>';
    assert.equal(await exitOf(app, 'the failing bundle (waiting for its dialog?)', 30000), 2, stderr);
    assert.ok(stderr.includes(message), stderr);
    const log = path.join(xhome, '.local', 'state', 'overpack', 'hello-desktop.log');
    assert.ok(fs.readFileSync(log, 'utf8').includes(message), 'logged');

    const title = 'hello-desktop could not start';
    const win = await until('the error dialog', 30000, () => dialogOf(title));
    const pid = windowPid(xenv, win.id);
    assert.ok(pid !== null, 'the dialog names its pid');
    const dialog = track(proc(pid, 'the error dialog'), 'the error dialog');
    assert.equal(fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'zenity');
    assert.ok(alive(dialog), 'the dialog is still up after the bundle exited: it was not waited for');

    // The message is shown, not zenity's own "An error has occurred.": its text adds ink
    // (each of its characters some dark pixels) to what the reference dialog has.
    const text = `${message}Details: ${log}`.replace(/\s/g, '').length;
    let shot: Image | undefined;
    try {
      const ink = await until(`the dialog to show the message (more ink than the reference's ${refInk})`, 30000, () => {
        shot = screenshot(xenv);
        const n = inkIn(shot, dialogOf(title) ?? win); // its size now: it may have been resized since
        return n - refInk > 2 * text ? n : undefined;
      }, 250);
      t.diagnostic(`the dialog, ${win.width}x${win.height}: ${ink} dark pixels, the reference ${refInk}`);
    } finally {
      if (shot) save(shot, 'error-dialog.png', t);
    }
    await stopProc(dialog);
    await until('the dialog window gone', 10000, () => !dialogOf(title));
  });
});
