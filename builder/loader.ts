/**
 * The front of a bundle whose runtime is stored compressed: the target's static loader
 * (runtime/loader/overpack_loader.c) with its `info` filled in, then the runtime executable as
 * one zstd frame with zstd's checksum. Made once per runtime, loader and level, and cached
 * beside the runtime executable: compressing 100+ MB takes seconds, a cached front none.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { loadAddon } from '../runtime/native/addon.js';
import type { RuntimeRecord } from '../runtime/image/format.js';
import { BuildError } from '../runtime/image/writer.js';

/** The loader's `struct loader_info`: magic, then u64 frame offset, frame length, runtime size, then the key. */
const MAGIC = Buffer.from('OVERPACK-LOADER1', 'latin1');
const KEY_AT = 40;
const KEY_LENGTH = 64;

/** What the index records of a compressed runtime (format.ts `LoaderRecord`). */
export interface LoaderFront {
  file: string;
  loaderSize: number;
  frameLength: number;
  compression: string;
  /** SHA-256 of the front as stored (loader and frame): an updater copies an unchanged front instead of downloading it. */
  sha256: string;
}

export function loaderFront(loader: string, runtime: string, record: RuntimeRecord, level: number, cacheDir: string, progress: (m: string) => void): LoaderFront {
  const loaderBytes = fs.readFileSync(loader);
  const key = createHash('sha256').update(loaderBytes).update(record.sha256).update(String(level)).digest('hex').slice(0, 32);
  const file = path.join(cacheDir, `front-${key}`);
  const sidecar = `${file}.json`;
  try {
    const known = JSON.parse(fs.readFileSync(sidecar, 'utf8')) as Partial<LoaderFront> & Omit<LoaderFront, 'sha256'>;
    if (fs.statSync(file).size === known.loaderSize + known.frameLength) {
      // A front cached before its hash was recorded: hashed once now, remembered.
      const front: LoaderFront = { ...known, file, sha256: known.sha256 ?? createHash('sha256').update(fs.readFileSync(file)).digest('hex') };
      if (known.sha256 === undefined) fs.writeFileSync(sidecar, JSON.stringify(front));
      return front;
    }
  } catch {
    /* not made yet */
  }
  const at = loaderBytes.indexOf(MAGIC);
  if (at < 0 || loaderBytes.indexOf(MAGIC, at + 1) >= 0) throw new BuildError(loader, 'loader', `${loader} has no single loader info block: rebuild overpack's natives (npm run build)`);
  progress(`compressing the runtime executable (zstd:${level}, once per runtime)`);
  const frame = loadAddon().zstdCompress(fs.readFileSync(runtime), level, true);
  const info = loaderBytes.subarray(at, at + KEY_AT + KEY_LENGTH + 1);
  info.writeBigUInt64LE(BigInt(loaderBytes.length), 16);
  info.writeBigUInt64LE(BigInt(frame.length), 24);
  info.writeBigUInt64LE(BigInt(record.size), 32);
  info.write(record.sha256, KEY_AT, KEY_LENGTH, 'latin1');
  const tmp = `${file}.tmp-${process.pid}`;
  const bytes = Buffer.concat([loaderBytes, frame]);
  fs.writeFileSync(tmp, bytes, { mode: 0o755 });
  fs.renameSync(tmp, file);
  const front: LoaderFront = { file, loaderSize: loaderBytes.length, frameLength: frame.length, compression: `zstd:${level}`, sha256: createHash('sha256').update(bytes).digest('hex') };
  fs.writeFileSync(sidecar, JSON.stringify(front));
  return front;
}
