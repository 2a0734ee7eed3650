/**
 * Build step (`npm run build`, after tsc): the `overpack` command as one file. Loaded as ES
 * modules one by one, yargs (~30 files) and our own (~30 for `overpack mount`) made up most of
 * a command's start-up here; Node 20 has no compile cache for them. Two bundles, in place of
 * tsc's output:
 * 1. dist/builder/yargs.js: yargs and everything it imports (see builder/yargs.ts), with two
 *    edits, each checked so that a yargs update that changes them fails the build instead of
 *    misbehaving:
 *    - yargs finds its locales relative to its own file; in the bundle, relative to its
 *      package wherever it is installed;
 *    - string-width builds an Intl.Segmenter when it loads (slow, and yargs carries two copies
 *      of string-width): built on first use instead, which a command that prints no help never
 *      reaches (bench/README, figures behind the code).
 * 2. dist/builder/cli.js: the CLI with yargs and our modules, packages from node_modules left
 *    to Node (native addons, esbuild, postject). What loads lazily stays lazy and outside: the
 *    build pipeline and the image, signature and BLAKE3 modules, imported from dist/ as
 *    before (one copy of each, so `instanceof` on their errors keeps working).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'yargs.js');

function replaceOnce(src: string, file: string, needle: string | RegExp, replacement: string): string {
  const n = typeof needle === 'string' ? src.split(needle).length - 1 : (src.match(new RegExp(needle, 'g')) ?? []).length;
  if (n !== 1) throw new Error(`${file}: expected one ${String(needle)}, found ${n}: yargs changed, update builder/vendor.ts`);
  return src.replace(needle, replacement);
}

await esbuild.build({
  stdin: { contents: "export { default } from 'yargs';\nexport { hideBin } from 'yargs/helpers';\n", resolveDir: path.dirname(out), loader: 'js' },
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Node 20 has the regexp v flag; without this esbuild rewrites string-width's /…/v literals
  // into RegExp constructors, compiled when the bundle loads (the emoji one is slow to
  // compile) instead of on first use.
  supported: { 'regexp-set-notation': true },
  outfile: out,
  allowOverwrite: true,
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [
    {
      name: 'overpack-yargs',
      setup(b) {
        b.onLoad({ filter: /[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/ }, async (args) => {
          const src = await fs.promises.readFile(args.path, 'utf8');
          const contents = replaceOnce(src, args.path, 'const __dirname = fileURLToPath(import.meta.url);', "const __dirname = join(dirname(createRequire(import.meta.url).resolve('yargs/package.json')), 'lib', 'platform-shims', 'esm.mjs');");
          return { contents, loader: 'js', resolveDir: path.dirname(args.path) };
        });
        b.onLoad({ filter: /[\\/]string-width[\\/]index\.js$/ }, async (args) => {
          const src = await fs.promises.readFile(args.path, 'utf8');
          const contents = replaceOnce(src, args.path, /new Intl\.Segmenter\(\)/, '{ segment(s) { return (this.real ??= new Intl.Segmenter()).segment(s); } }');
          return { contents, loader: 'js', resolveDir: path.dirname(args.path) };
        });
      },
    },
  ],
});
fs.rmSync(`${out}.map`, { force: true }); // tsc's map of the re-export; it does not describe the bundle

const cli = path.join(path.dirname(out), 'cli.js');
const LAZY = /[\\/](build|writer|format|signature|blake3)\.js$/;
await esbuild.build({
  entryPoints: [cli],
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  supported: { 'regexp-set-notation': true },
  packages: 'external',
  outfile: cli,
  allowOverwrite: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [
    {
      name: 'overpack-lazy-modules',
      setup(b) {
        // A dynamic import of one of those stays one, its path made relative to the bundle.
        b.onResolve({ filter: /^\.\.?\// }, (args) => {
          if (args.kind !== 'dynamic-import') return undefined;
          const target = path.resolve(args.resolveDir, args.path);
          if (!LAZY.test(target)) return undefined;
          return { path: `./${path.relative(path.dirname(cli), target).split(path.sep).join('/')}`, external: true };
        });
      },
    },
  ],
});
// The package's `bin`: npm makes it executable only when it exists at link time, which in a
// fresh clone is before `prepare` has built it.
fs.chmodSync(cli, 0o755);
