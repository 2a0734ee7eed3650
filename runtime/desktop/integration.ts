/**
 * Desktop integration (`--overpack-integrate`, `overpack integrate`): a menu entry and an icon
 * for a bundle, written under `$XDG_DATA_HOME` only when asked, and removed exactly as written.
 *
 *   applications/overpack-<name>.desktop        the entry (Exec = the bundle's absolute path)
 *   icons/hicolor/<size>/apps/overpack-<name>.* the icon, copied out of the image
 *   overpack/desktop/<name>.json                what was written, for unintegrate and refresh
 * A later launch of the bundle from another path, or of an updated bundle, rewrites an entry
 * that exists (`refreshIntegration`): the menu never points at a moved file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { childProcess } from '../builtins.js';
import type { Manifest } from '../manifest/schema.js';
import { dataHome } from '../paths/xdg.js';
import { iconKind } from './icon.js';
import { OverpackError } from '../errors/overpack-error.js';

/** The sizes the hicolor theme has directories for (the freedesktop icon theme spec). */
const HICOLOR_SIZES = [16, 22, 24, 32, 48, 64, 96, 128, 192, 256, 512];

export interface DesktopApp {
  manifest: Manifest;
  /** Absolute path of the bundle. */
  bundle: string;
  /** Hex SHA-256 of the bundle's index: names this build of the bundle. */
  indexHash: string;
}

interface IntegrationRecord {
  bundle: string;
  indexHash: string;
  files: string[];
}

/** Copies the icon (a path inside the app) out of the image to `dest`. */
export type CopyIcon = (iconPath: string, dest: string) => Promise<void>;

export class DesktopError extends OverpackError {
  constructor(op: string, path: string, message: string) {
    super('DESKTOP', op, path, message);
  }
}

const appsDir = () => path.join(dataHome(), 'applications');
const hicolorDir = () => path.join(dataHome(), 'icons', 'hicolor');
/** What `integrate` wrote for an app (its bundle, build and files); the express relaunch watches it too. */
export const recordFile = (name: string) => path.join(dataHome(), 'overpack', 'desktop', `${name}.json`);
const entryFile = (name: string) => path.join(appsDir(), `overpack-${name}.desktop`);
const iconName = (name: string) => `overpack-${name}`;

/** A value of type string (the desktop entry spec's escapes). */
function text(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\t/g, '\\t').replace(/\r/g, '\\r');
}

function list(items: readonly string[]): string {
  return items.map((i) => `${text(i).replace(/;/g, '\\;')};`).join('');
}

/** The Exec key's program: quoted as the spec says, `%` doubled, then escaped as a string. */
function execProgram(file: string): string {
  const quoted = `"${file.replace(/["`$\\]/g, (c) => `\\${c}`)}"`;
  return text(quoted.replace(/%/g, '%%'));
}

/** Where the icon goes, by kind and size; the size dir is the biggest standard one it fills. */
function iconFile(name: string, pngSize: number | null): string {
  if (pngSize === null) return path.join(hicolorDir(), 'scalable', 'apps', `${iconName(name)}.svg`);
  const size = [...HICOLOR_SIZES].reverse().find((s) => s <= pngSize) ?? HICOLOR_SIZES[0]!;
  return path.join(hicolorDir(), `${size}x${size}`, 'apps', `${iconName(name)}.png`);
}

/** The desktop entry of `app` (desktop-file-validate accepts it). */
export function desktopEntry(app: DesktopApp, withIcon: boolean): string {
  const d: Partial<NonNullable<Manifest['desktop']>> = app.manifest.desktop ?? {};
  if (/[\n\r]/.test(app.bundle)) throw new DesktopError('integrate', app.bundle, `${app.bundle}: a bundle whose path holds a newline cannot be put in a menu; rename it`);
  const takesFiles = (d.mimeTypes ?? []).length > 0;
  const lines = [
    '[Desktop Entry]',
    'Type=Application',
    // 1.4: what every desktop-file-validate in use knows (Debian 12's refuses 1.5).
    'Version=1.4',
    `Name=${text(d.name ?? app.manifest.name)}`,
    ...(d.comment ? [`Comment=${text(d.comment)}`] : []),
    `Exec=${execProgram(app.bundle)}${takesFiles ? ' %F' : ''}`,
    `TryExec=${text(app.bundle)}`,
    ...(withIcon ? [`Icon=${iconName(app.manifest.name)}`] : []),
    `Terminal=${d.terminal === true}`,
    ...(d.categories?.length ? [`Categories=${list(d.categories)}`] : []),
    ...(d.mimeTypes?.length ? [`MimeType=${list(d.mimeTypes)}`] : []),
    ...(d.keywords?.length ? [`Keywords=${list(d.keywords)}`] : []),
    ...(d.startupWMClass ? [`StartupWMClass=${text(d.startupWMClass)}`] : []),
    `X-Overpack-Bundle=${text(app.bundle)}`,
    `X-Overpack-Index=${app.indexHash}`,
  ];
  return `${lines.join('\n')}\n`;
}

function writeAtomic(file: string, write: (tmp: string) => Promise<void> | void): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  return Promise.resolve(write(tmp))
    .then(() => fs.renameSync(tmp, file))
    .catch((err: unknown) => {
      fs.rmSync(tmp, { force: true });
      throw err;
    });
}

/** Lets the desktop's caches see the change, where their tools are installed (never required). */
function refreshCaches(): void {
  childProcess().spawnSync('update-desktop-database', [appsDir()], { stdio: 'ignore', timeout: 10000 });
  if (fs.existsSync(hicolorDir())) childProcess().spawnSync('gtk-update-icon-cache', ['-f', '-t', '-q', hicolorDir()], { stdio: 'ignore', timeout: 10000 });
}

function readRecord(name: string): IntegrationRecord | null {
  try {
    const r = JSON.parse(fs.readFileSync(recordFile(name), 'utf8')) as IntegrationRecord;
    return typeof r.bundle === 'string' && Array.isArray(r.files) ? r : null;
  } catch {
    return null;
  }
}

/** Writes the entry and icon; returns the files written. */
export async function integrate(app: DesktopApp, copyIcon: CopyIcon): Promise<string[]> {
  const name = app.manifest.name;
  const icon = app.manifest.desktop?.icon;
  const files: string[] = [];
  if (icon) {
    // Copied out first, then placed by what it is (the builder checked it is an icon).
    fs.mkdirSync(hicolorDir(), { recursive: true });
    const staged = path.join(hicolorDir(), `.${iconName(name)}.tmp-${process.pid}`);
    try {
      await copyIcon(`/${icon}`, staged);
      const kind = iconKind(fs.readFileSync(staged).subarray(0, 4096));
      if ('problem' in kind) throw new DesktopError('integrate', icon, `desktop.icon ${icon} ${kind.problem}`);
      const dest = iconFile(name, kind.kind === 'png' ? kind.size : null);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.chmodSync(staged, 0o644);
      fs.renameSync(staged, dest);
      files.push(dest);
    } finally {
      fs.rmSync(staged, { force: true });
    }
  }
  const entry = entryFile(name);
  await writeAtomic(entry, (tmp) => fs.writeFileSync(tmp, desktopEntry(app, icon !== undefined), { mode: 0o644 }));
  files.push(entry);
  // What an earlier integration wrote and this one did not (an icon of another size) goes.
  for (const old of readRecord(name)?.files ?? []) if (!files.includes(old)) fs.rmSync(old, { force: true });
  await writeAtomic(recordFile(name), (tmp) => fs.writeFileSync(tmp, JSON.stringify({ bundle: app.bundle, indexHash: app.indexHash, files } satisfies IntegrationRecord)));
  refreshCaches();
  return files;
}

/** Removes what `integrate` wrote for the app `name`; returns the files removed (none: never integrated). */
export function unintegrate(name: string): string[] {
  const record = readRecord(name);
  if (!record) return [];
  const removed = record.files.filter((f) => fs.existsSync(f));
  for (const f of record.files) fs.rmSync(f, { force: true });
  fs.rmSync(recordFile(name), { force: true });
  refreshCaches();
  return removed;
}

/** Whether a launch has nothing to refresh: the app is not in the menu, or its entry points at this bundle and build. */
export function integrationCurrent(app: DesktopApp): boolean {
  const record = readRecord(app.manifest.name);
  return !record || (record.bundle === app.bundle && record.indexHash === app.indexHash);
}

/**
 * At a launch: when the app was integrated from another path or another build of it, the entry
 * is rewritten for this one. Returns whether it was. Costs one failed read when never integrated.
 */
export async function refreshIntegration(app: DesktopApp, copyIcon: CopyIcon): Promise<boolean> {
  if (integrationCurrent(app)) return false;
  await integrate(app, copyIcon);
  return true;
}

/** Every entry overpack wrote, with its bundle and whether that file is still there. */
export function listIntegrations(): Array<{ name: string; bundle: string; present: boolean; files: string[] }> {
  const dir = path.dirname(recordFile('x'));
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).sort();
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const r = readRecord(name);
    return r ? [{ name, bundle: r.bundle, present: fs.existsSync(r.bundle), files: r.files }] : [];
  });
}
