/**
 * Run by bench/scale.ts in a fresh `node --expose-gc` per image: loads one bundle's index the
 * way the runtime does (readImage, then ImageLayer) and prints times and retained memory as JSON.
 */
import { readImage } from '../runtime/image/format.js';
import { ImageLayer } from '../runtime/image/image-layer.js';

const bundle = process.argv[2];
if (!bundle) throw new Error('usage: scale-probe <bundle>');
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
gc();
const before = process.memoryUsage();
const t0 = process.hrtime.bigint();
const image = readImage(bundle);
const t1 = process.hrtime.bigint();
const layer = new ImageLayer(bundle, image.fd, image.tree);
const t2 = process.hrtime.bigint();
gc();
const after = process.memoryUsage();
// The synthetic tree's file names, computed rather than walked, so the list costs no tree reads.
const files = image.tree.files;
const paths = Array.from({ length: files }, (_, k) => `/node_modules/pkg${Math.floor(k / 100)}/d${Math.floor((k % 100) / 10)}/f${k % 10}.js`);
// Lookups of random existing paths, as FUSE getattr would do them.
let x = 12345;
const n = 200_000;
const t3 = process.hrtime.bigint();
let found = 0;
for (let i = 0; i < n; i++) {
  x = (x * 1103515245 + 12345) >>> 0;
  void layer.lstat(paths[x % paths.length]!).then((st) => st && found++);
}
await new Promise((resolve) => setImmediate(resolve));
const t4 = process.hrtime.bigint();
if (found !== n) throw new Error(`only ${found} of ${n} lookups found their file`);
process.stdout.write(
  JSON.stringify({
    files: paths.length,
    entries: image.tree.entries,
    indexBytes: image.footer.indexLength,
    readImageMs: Number(t1 - t0) / 1e6,
    layerMs: Number(t2 - t1) / 1e6,
    heapBytes: after.heapUsed - before.heapUsed,
    rssBytes: after.rss - before.rss,
    lookupNs: Number(t4 - t3) / n,
  }),
);
