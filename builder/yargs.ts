/**
 * yargs, as the CLI loads it. `npm run build` replaces this module's output with one file
 * bundling yargs and its dependencies, then bundles that into dist/builder/cli.js
 * (builder/vendor.ts): loaded as ~30 ES modules, yargs alone was most of every `overpack`
 * command's start (bench/README, figures behind the code). Without that step (plain tsc) this
 * is a re-export and behaves the same, only slower to load.
 */
export { default } from 'yargs';
export { hideBin } from 'yargs/helpers';
