/**
 * One command run against a bundle's image served by the engine in this process, on a fresh
 * mount each time: the time to mount, the command's wall time, and this process's CPU time.
 * `@M` in the command stands for the mountpoint. For A/B runs of the binding's knobs
 * (OVERPACK_FUSE_LEND=0, OVERPACK_FUSE_DIRECT=0, OVERPACK_FUSE_STATS=1) without the launcher:
 *   node dist/bench/serve-app.js BUNDLE NODE @M/node_modules/eslint/bin/eslint.js --version
 * The mountpoint is the same every run (/tmp/overpack-serve-app/m), so an app's own caches
 * keyed by path (Node's compile cache) hit as they would in a bundle.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { readImage } from '../runtime/image/format.js';
import { ImageLayer } from '../runtime/image/image-layer.js';
import { OverlayFS } from '../runtime/index.js';

const [bundle, ...cmd] = process.argv.slice(2);
if (!bundle || cmd.length === 0) {
  process.stderr.write('usage: node dist/bench/serve-app.js BUNDLE COMMAND [ARGS...] (@M: the mountpoint)\n');
  process.exit(2);
}
const base = '/tmp/overpack-serve-app';
fs.rmSync(base, { recursive: true, force: true });
fs.mkdirSync(base);
const image = readImage(bundle);
const overlay = new OverlayFS(new ImageLayer(bundle, image.fd, image.tree)).setUpper(`${base}/u`).setMountpoint(`${base}/m`);
const t0 = performance.now();
await overlay.mount();
const t1 = performance.now();
const argv = cmd.map((a) => a.replace('@M', `${base}/m`));
// Not inside the mount: this process serves it (a cwd there would deadlock the spawn).
const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
await new Promise((resolve) => child.on('exit', resolve));
const t2 = performance.now();
await overlay.umount();
const cpu = process.cpuUsage();
process.stderr.write(`mount ${(t1 - t0).toFixed(1)} ms, app ${(t2 - t1).toFixed(1)} ms, server cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms\n`);
fs.rmSync(base, { recursive: true, force: true });
