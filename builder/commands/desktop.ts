/**
 * `overpack integrate <bundle> | --list` and `overpack unintegrate <bundle>`: the desktop menu
 * entry and icon of a bundle (runtime/desktop/integration.ts), from the CLI. The same as the
 * bundle's own `--overpack-integrate`, also for a bundle of another architecture.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { fail, say } from '../output.js';

async function openBundle(file: string) {
  const [{ readImage, ImageError }, { ImageLayer }, { validateManifest }] = await Promise.all([
    import('../../runtime/image/format.js'),
    import('../../runtime/image/image-layer.js'),
    import('../../runtime/manifest/validate.js'),
  ]);
  const bundle = path.resolve(file);
  let image;
  try {
    image = readImage(bundle);
  } catch (err) {
    if (err instanceof ImageError) fail(err.message, 1);
    throw err;
  }
  const checked = validateManifest(image.index.manifest);
  if (!checked.manifest) fail(`${bundle}: the manifest inside this bundle is invalid:\n  ${checked.problems.join('\n  ')}`, 1);
  const layer = new ImageLayer(bundle, image.fd, image.tree);
  return { bundle, image, manifest: checked.manifest, copyIcon: (p: string, dest: string) => layer.copyFileTo(p, dest) };
}

export const integrateCommand: CommandModule<object, { bundle?: string; list: boolean }> = {
  command: 'integrate [bundle]',
  describe: "Add a bundle to the desktop's menu with its icon (or --list what was added)",
  builder: (y: Argv) =>
    y
      .positional('bundle', { type: 'string', describe: 'The bundle' })
      .option('list', { type: 'boolean', default: false, describe: 'List the entries overpack wrote, and those whose bundle is gone' }) as unknown as Argv<{ bundle?: string; list: boolean }>,
  handler: async (args) => {
    const { integrate, listIntegrations, DesktopError } = await import('../../runtime/desktop/integration.js');
    if (args.list) {
      const all = listIntegrations();
      for (const e of all) process.stdout.write(`${e.name}\t${e.present ? 'ok' : 'stale: bundle gone (overpack unintegrate it, or move it back)'}\t${e.bundle}\n`);
      if (all.length === 0) say('no app was integrated by overpack');
      return;
    }
    if (!args.bundle) fail('integrate needs a bundle (or --list)', 2);
    const b = await openBundle(args.bundle);
    try {
      const files = await integrate({ manifest: b.manifest, bundle: b.bundle, indexHash: b.image.footer.indexHash.toString('hex') }, b.copyIcon);
      say(`added ${b.manifest.name} to the desktop menu:\n  ${files.join('\n  ')}`);
    } catch (err) {
      if (err instanceof DesktopError) fail(err.message, 1);
      throw err;
    } finally {
      fs.closeSync(b.image.fd);
    }
  },
};

export const unintegrateCommand: CommandModule<object, { bundle: string }> = {
  command: 'unintegrate <bundle>',
  describe: 'Remove exactly what `overpack integrate` wrote for a bundle (its app name)',
  builder: (y: Argv) => y.positional('bundle', { type: 'string', demandOption: true, describe: 'The bundle, or the app name of one that is gone' }) as unknown as Argv<{ bundle: string }>,
  handler: async (args) => {
    const { unintegrate } = await import('../../runtime/desktop/integration.js');
    // A stale entry's bundle may be gone: the app name does as well.
    const name = fs.existsSync(args.bundle) ? (await openBundle(args.bundle)).manifest.name : args.bundle;
    const removed = unintegrate(name);
    say(removed.length > 0 ? `removed ${name} from the desktop menu:\n  ${removed.join('\n  ')}` : `${name} is not in the desktop menu: nothing to remove`);
  },
};
