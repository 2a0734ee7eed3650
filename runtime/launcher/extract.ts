/** Writes a layer's whole tree to a directory (verified data, modes, times, symlinks). */
import fs from 'node:fs';
import path from 'node:path';
import * as xattr from 'fs-xattr';
import type { ImageLayer } from '../image/image-layer.js';

export async function extractTree(layer: ImageLayer, dest: string, onProgress?: (done: number, total: number) => void): Promise<void> {
  const entries = [...layer.entries()];
  fs.mkdirSync(dest, { recursive: true });
  const files = entries.filter((e) => e.type === 'file').length;
  let done = 0;
  for (const e of entries) {
    const target = e.path === '/' ? dest : path.join(dest, e.path);
    if (e.type === 'dir') {
      fs.mkdirSync(target, { recursive: true, mode: 0o700 });
    } else if (e.type === 'symlink') {
      fs.symlinkSync(e.target!, target);
    } else {
      await layer.copyFileTo(e.path, target);
      fs.chmodSync(target, e.mode);
      onProgress?.(++done, files);
    }
    if (e.type !== 'symlink') {
      for (const [k, v] of Object.entries(e.xattrs ?? {})) {
        try {
          xattr.setAttributeSync(target, k, Buffer.from(v, 'base64'));
        } catch {
          /* the destination filesystem may not take every namespace */
        }
      }
    }
  }
  // Directory modes and all times last: writing children would change them.
  for (const e of [...entries].reverse()) {
    const target = e.path === '/' ? dest : path.join(dest, e.path);
    if (e.type === 'dir') fs.chmodSync(target, e.mode);
    // The index keeps whole milliseconds; half a millisecond more keeps float rounding from
    // turning 1.116 s into 1.115999… s on disk.
    const t = (e.mtimeMs + 0.5) / 1000;
    fs.lutimesSync(target, t, t);
  }
}
