/**
 * Build: the time of a second `overpack build` of a changed app (the runtime executable must
 * come from the cache: no SEA blob, no postject), image writing against mksquashfs of the same
 * tree (uncompressed and zstd), and the image's size against the squashfs images.
 */
import fs from 'node:fs';
import path from 'node:path';
import { appendImage } from '../runtime/image/writer.js';
import { readImage } from '../runtime/image/format.js';
import { buildBundle, buildEnv, have, median, mib, ms, sh, type BenchContext, type Section, type Table } from './common.js';
import { eslintApp } from './apps.js';

const POSTJECT_MESSAGE = 'building the runtime executable';

function treeBytes(dir: string): { files: number; bytes: number } {
  const out = sh(`find . -type f -printf '%s\\n'`, dir).trim().split('\n').filter(Boolean).map(Number);
  return { files: out.length, bytes: out.reduce((a, b) => a + b, 0) };
}

export async function buildSection(ctx: BenchContext): Promise<Section> {
  const reps = ctx.reps ?? (ctx.quick ? 3 : 5);
  const app = eslintApp(ctx);
  const out = path.join(ctx.work, 'eslint.run');
  const marker = path.join(app, 'bench-change.txt');

  // Second build of a changed app: the first build here fills the runtime cache if needed.
  fs.writeFileSync(marker, 'build 0\n');
  const first = buildBundle(ctx, app, out);
  const rebuilds: number[] = [];
  let rebuiltRuntime = false;
  for (let r = 1; r <= reps; r++) {
    fs.writeFileSync(marker, `build ${r}\n`);
    const b = buildBundle(ctx, app, out);
    rebuilds.push(b.ms);
    if (b.stderr.includes(POSTJECT_MESSAGE)) rebuiltRuntime = true;
  }
  fs.rmSync(marker, { force: true });
  const cacheDir = path.join(buildEnv(ctx).XDG_CACHE_HOME!, 'overpack', 'build');
  const builds: Table = {
    title: `overpack build of the eslint app (median of ${reps}; each run changes one file first)`,
    header: ['build', 'ms', 'runtime executable'],
    rows: [
      ['first build in this run', ms(first.ms), first.stderr.includes(POSTJECT_MESSAGE) ? 'built (SEA blob + postject)' : 'from the cache'],
      ['second build of a changed app', ms(median(rebuilds)), rebuiltRuntime ? 'REBUILT (cache miss)' : 'from the cache (no postject)'],
    ],
    notes: [`target: under 2000 ms; runtime cache: ${cacheDir}`],
  };

  // Image writing vs mksquashfs on the same trees; the page cache is warm for all of them.
  const trees: Array<[string, string]> = [['eslint app', app]];
  if (!ctx.quick) trees.push(['bench tree (node_modules + big.bin)', ctx.tree]);
  const tput: Table = {
    title: `Image writing vs mksquashfs (median of ${reps}, warm page cache; MB/s = file bytes / wall time)`,
    header: ['tree', 'files', 'MiB of files', 'writer', 'ms', 'MB/s', 'vs mksquashfs -noI -noD -noF -noX', 'output MiB', 'size vs uncompressed squashfs'],
    rows: [],
    notes: [],
  };
  const json: Record<string, unknown> = { reps, secondBuildMs: { median: median(rebuilds), runs: rebuilds, rebuiltRuntime }, firstBuildMs: first.ms, writers: {} };
  const squash = have('mksquashfs');
  if (!squash) tput.notes!.push('mksquashfs missing: apt-get install -y squashfs-tools');
  for (const [name, dir] of trees) {
    const { files, bytes } = treeBytes(dir);
    const target = path.join(ctx.work, 'image.out');
    const writers: Array<[string, () => Promise<void>]> = [
      [
        'overpack image',
        async () => {
          fs.writeFileSync(target, '');
          await appendImage(target, { appDir: dir, manifest: { name: 'bench', version: '1', entrypoint: 'x' }, addons: [] });
        },
      ],
    ];
    if (squash) {
      writers.push(['mksquashfs uncompressed', async () => void sh(`mksquashfs ${dir} ${target} -noappend -quiet -no-progress -noI -noD -noF -noX >/dev/null`)]);
      writers.push(['mksquashfs zstd', async () => void sh(`mksquashfs ${dir} ${target} -noappend -quiet -no-progress -comp zstd >/dev/null`)]);
    }
    const times: Record<string, number[]> = {};
    const sizes: Record<string, number> = {};
    for (const [, run] of writers) await run(); // warm-up: page cache, addons
    for (let r = 0; r < reps; r++) {
      for (const [w, run] of writers) {
        fs.rmSync(target, { force: true });
        const t = process.hrtime.bigint();
        await run();
        (times[w] ??= []).push(Number(process.hrtime.bigint() - t) / 1e6);
        sizes[w] = fs.statSync(target).size;
        if (w === 'overpack image') {
          const img = readImage(target);
          fs.closeSync(img.fd);
        }
      }
    }
    fs.rmSync(target, { force: true });
    const plain = median(times['mksquashfs uncompressed'] ?? []);
    const plainSize = sizes['mksquashfs uncompressed'] ?? NaN;
    for (const [w] of writers) {
      const m = median(times[w]!);
      tput.rows.push([name, String(files), mib(bytes), w, ms(m), ms(bytes / 1e6 / (m / 1000)), (plain / m).toFixed(2) + 'x', mib(sizes[w]!), (sizes[w]! / plainSize).toFixed(2) + 'x']);
    }
    (json.writers as Record<string, unknown>)[name] = { files, bytes, times, sizes };
  }
  tput.notes!.push('"vs mksquashfs" > 1 means faster than uncompressed mksquashfs; mksquashfs uses both cores, the overpack writer one');
  tput.notes!.push('both store each distinct content once, unpadded; the overpack tree (entries, BLAKE3 per file and per 1 MiB piece) is deflated, squashfs -noI leaves its metadata uncompressed');
  return { id: 'build', tables: [builds, tput], json };
}
