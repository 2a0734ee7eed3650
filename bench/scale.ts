/**
 * Scale: index load time and memory for images of 10k, 100k and 1M files. The images are
 * written directly (a real creation of a million files on disk would take longer than the
 * rest of the benchmark): the runtime executable and native addons of a real bundle, then a
 * node_modules-shaped tree (packages of 10 directories of 10 files), every file with its own
 * small content and real BLAKE3, then the tree, index and footer as runtime/image/format.ts
 * defines them. So each is a complete bundle that mounts and serves.
 *
 * Measured in fresh processes: bench/scale-probe.ts (readImage: read, hash and validate the
 * index; new ImageLayer: the in-memory maps; lookups) and the bundle itself serving the image
 * with --overpack-mount (time to mounted, RSS).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { alignUp, encodeFooter, IMAGE_VERSION, readImage, type ImageAddon, type ImageEntry, type ImageIndex } from '../runtime/image/format.js';
import { encodeTree } from '../runtime/image/tree-encode.js';
import { CODEC_IDS } from '../runtime/image/codec.js';
import { blake3 } from '../runtime/hash/blake3.js';
import { buildBundle, median, mib, ms, processMemory, scratchEnv, serveBundle, type BenchContext, type Section, type Table } from './common.js';
import { helloApps } from './apps.js';

export interface ProbeResult {
  files: number;
  entries: number;
  indexBytes: number;
  readImageMs: number;
  layerMs: number;
  heapBytes: number;
  rssBytes: number;
  lookupNs: number;
}

/** Writes a bundle of `files` synthetic files, reusing the executable and addons of `source`. */
export function writeSyntheticBundle(source: string, out: string, files: number): { entries: number; indexBytes: number } {
  const src = readImage(source);
  const fd = fs.openSync(out, 'w', 0o755);
  try {
    // The executable part: everything before the image.
    const chunk = Buffer.allocUnsafe(8 << 20);
    for (let done = 0; done < src.footer.imageStart; ) {
      const n = fs.readSync(src.fd, chunk, 0, Math.min(chunk.length, src.footer.imageStart - done), done);
      fs.writeSync(fd, chunk, 0, n, done);
      done += n;
    }
    let pos = src.footer.imageStart;
    const imageStart = pos;
    const addons: ImageAddon[] = src.index.addons.map((a) => {
      const buf = Buffer.alloc(a.size);
      fs.readSync(src.fd, buf, 0, a.size, a.offset);
      const offset = alignUp(pos);
      fs.writeSync(fd, buf, 0, buf.length, offset);
      pos = offset + buf.length;
      return { ...a, offset };
    });
    // File contents, packed back to back (the layout does not need alignment).
    pos = alignUp(pos);
    const mtimeMs = 1700000000000;
    const entries: ImageEntry[] = [];
    const dir = (p: string) => entries.push({ path: p, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeMs, size: 0 });
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let flushedTo = pos;
    const flush = () => {
      const b = Buffer.concat(pending);
      fs.writeSync(fd, b, 0, b.length, flushedTo);
      flushedTo += b.length;
      pending = [];
      pendingBytes = 0;
    };
    dir('/');
    dir('/node_modules');
    for (let k = 0; k < files; k++) {
      const pkg = Math.floor(k / 100);
      const sub = Math.floor((k % 100) / 10);
      if (k % 100 === 0) dir(`/node_modules/pkg${pkg}`);
      if (k % 10 === 0) dir(`/node_modules/pkg${pkg}/d${sub}`);
      const content = Buffer.from(`module.exports = ${k};\n`);
      entries.push({ path: `/node_modules/pkg${pkg}/d${sub}/f${k % 10}.js`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeMs, size: content.length, hash: blake3(content).toString('hex'), pieces: [{ codec: CODEC_IDS.raw, position: pos, storedLength: content.length, frameLength: content.length, offsetInFrame: 0 }] });
      pending.push(content);
      pendingBytes += content.length;
      pos += content.length;
      if (pendingBytes > 1 << 20) flush();
    }
    flush();
    // The tree and the index exactly as the writer lays them out.
    const manifest = { name: `bench-scale-${files}`, version: '1', entrypoint: 'node_modules/pkg0/d0/f0.js', overlay: { onExit: 'discard' } };
    const tree = encodeTree(entries);
    const treeOffset = pos;
    fs.writeSync(fd, tree.bytes, 0, tree.bytes.length, treeOffset);
    const index: ImageIndex = { format: 'overpack-image', version: IMAGE_VERSION, manifest, addons, tree: { offset: treeOffset, ...tree.location } };
    const indexBytes = Buffer.from(JSON.stringify(index), 'utf8');
    const indexOffset = treeOffset + tree.bytes.length;
    fs.writeSync(fd, indexBytes, 0, indexBytes.length, indexOffset);
    const footer = encodeFooter({ version: IMAGE_VERSION, imageStart, indexOffset, indexLength: indexBytes.length, indexHash: createHash('sha256').update(indexBytes).digest() });
    fs.writeSync(fd, footer, 0, footer.length, indexOffset + indexBytes.length);
    return { entries: entries.length, indexBytes: tree.bytes.length + indexBytes.length };
  } finally {
    fs.closeSync(fd);
    fs.closeSync(src.fd);
  }
}

function probe(ctx: BenchContext, bundle: string): ProbeResult {
  const script = path.join(ctx.root, 'dist', 'bench', 'scale-probe.js');
  const r = spawnSync(process.execPath, ['--expose-gc', script, bundle], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`scale probe of ${bundle} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as ProbeResult;
}

export async function scaleSection(ctx: BenchContext): Promise<Section> {
  // A million files takes a minute to generate: full mode only.
  const sizes = ctx.quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000];
  const reps = ctx.reps ?? (ctx.quick ? 1 : 3);
  const apps = helloApps(ctx);
  const source = path.join(ctx.work, 'scale-source.run');
  buildBundle(ctx, apps.shell, source);
  const env = scratchEnv(path.join(ctx.work, 'scale-home'));
  const rows: Array<{ files: number; entries: number; indexBytes: number; genMs: number; probe: ProbeResult; readyMs: number; rssMounted: number; rssAfter: number }> = [];
  for (const files of sizes) {
    const bundle = path.join(ctx.work, `scale-${files}.run`);
    const t = process.hrtime.bigint();
    ctx.log(`scale: writing an image of ${files} files`);
    const gen = writeSyntheticBundle(source, bundle, files);
    const genMs = Number(process.hrtime.bigint() - t) / 1e6;
    const probes: ProbeResult[] = [];
    const ready: number[] = [];
    const rssM: number[] = [];
    const rssA: number[] = [];
    for (let r = 0; r < reps; r++) {
      probes.push(probe(ctx, bundle));
      const served = await serveBundle(bundle, env);
      try {
        ready.push(served.readyMs);
        rssM.push(processMemory(served.pid).rss);
        const last = files - 1;
        const deep = `node_modules/pkg${Math.floor(last / 100)}/d${Math.floor((last % 100) / 10)}/f${last % 10}.js`;
        const w = spawnSync('sh', ['-c', `ls node_modules | wc -l && cat ${deep} && find node_modules/pkg0 -type f | wc -l`], { cwd: served.mountPoint, encoding: 'utf8' });
        if (w.status !== 0 || !w.stdout.includes(`module.exports = ${last};`)) throw new Error(`reading the ${files}-file image through its mount failed: ${w.stderr}${w.stdout}`);
        rssA.push(processMemory(served.pid).rss);
      } finally {
        await served.stop();
      }
    }
    fs.rmSync(bundle, { force: true });
    const pick = <K extends keyof ProbeResult>(k: K) => median(probes.map((p) => p[k] as number));
    rows.push({
      files,
      entries: gen.entries,
      indexBytes: gen.indexBytes,
      genMs,
      probe: { files, entries: gen.entries, indexBytes: gen.indexBytes, readImageMs: pick('readImageMs'), layerMs: pick('layerMs'), heapBytes: pick('heapBytes'), rssBytes: pick('rssBytes'), lookupNs: pick('lookupNs') },
      readyMs: median(ready),
      rssMounted: median(rssM),
      rssAfter: median(rssA),
    });
  }
  const base = rows[0]!;
  const table: Table = {
    title: `Scale: index load and memory (median of ${reps}; synthetic node_modules-shaped images, written directly)`,
    header: ['files', 'index MiB', 'readImage ms', 'ImageLayer ms', 'heap MiB', 'µs / file (load)', 'bytes heap / file', 'lookup ns', 'bundle mounted in ms', 'runtime RSS MiB (mounted)', 'RSS after ls + cat'],
    rows: rows.map((r) => [
      String(r.files),
      mib(r.indexBytes),
      ms(r.probe.readImageMs),
      ms(r.probe.layerMs),
      mib(r.probe.heapBytes),
      ms(((r.probe.readImageMs + r.probe.layerMs) * 1000) / r.files, 2),
      ms(r.probe.heapBytes / r.files),
      ms(r.probe.lookupNs),
      ms(r.readyMs),
      mib(r.rssMounted),
      mib(r.rssAfter),
    ]),
    notes: [
      'readImage: footer, index (SHA-256, JSON.parse) and the tree\'s root page; ImageLayer: its verified-content bitmap; heap: retained after both (gc\'d); lookups read tree pages on demand (at most 8 MiB of them kept)',
      `growth 10k -> ${rows[rows.length - 1]!.files / 1000}k files: load time x${(((rows[rows.length - 1]!.probe.readImageMs + rows[rows.length - 1]!.probe.layerMs) / (base.probe.readImageMs + base.probe.layerMs))).toFixed(0)}, heap x${(rows[rows.length - 1]!.probe.heapBytes / base.probe.heapBytes).toFixed(0)} (linear would be x${rows[rows.length - 1]!.files / base.files})`,
    ],
  };
  return { id: 'scale', tables: [table], json: { reps, sizes: rows } };
}
