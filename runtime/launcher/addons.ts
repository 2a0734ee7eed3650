/**
 * Native addons inside a bundle: extracted once per content hash to
 * `$XDG_CACHE_HOME/overpack/native/<hash>/` (rpath `$ORIGIN` makes our libfuse 3 addon find the
 * libfuse beside it) and loaded from there (runtime/native/bundled.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { crypto } from '../builtins.js';
import type { ImageAddon } from '../image/format.js';
import { useBundledAddons } from '../native/bundled.js';
import { execCacheRoot } from './exec-dir.js';

export function extractAddons(bundleFd: number, addons: ImageAddon[]): string {
  const key = crypto().createHash('sha256').update(addons.map((a) => `${a.name}:${a.hash}`).join('\n')).digest('hex').slice(0, 16);
  const dir = path.join(execCacheRoot(), 'native', key);
  if (!fs.existsSync(path.join(dir, '.complete'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true, mode: 0o700 });
    for (const a of addons) {
      const buf = Buffer.alloc(a.size);
      fs.readSync(bundleFd, buf, 0, a.size, a.offset);
      if (crypto().createHash('sha256').update(buf).digest('hex') !== a.hash) {
        throw new Error(`the bundle's native addon ${a.name} is corrupt (hash mismatch); download or build the bundle again`);
      }
      fs.writeFileSync(path.join(tmp, a.name), buf, { mode: 0o755 });
    }
    fs.writeFileSync(path.join(tmp, '.complete'), '');
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      // Another launch finished first: its copy is identical.
      fs.rmSync(tmp, { recursive: true, force: true });
      if (!fs.existsSync(path.join(dir, '.complete'))) throw err;
    }
  }
  process.env.OVERPACK_NATIVE_DIR = dir;
  useBundledAddons(dir);
  return dir;
}
