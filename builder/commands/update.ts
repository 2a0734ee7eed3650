/** `overpack update <bundle>`: the same update as `./app.run --overpack-update`, from outside the bundle. */
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { fail, say } from '../output.js';

type UpdateArgs = { bundle: string; from?: string; check: boolean; acceptKey?: string; channel?: string; allowDowngrade: boolean };

export const updateCommand: CommandModule<object, UpdateArgs> = {
  command: 'update <bundle>',
  describe: 'Update a bundle from the URL its manifest names (or --from), downloading only what changed',
  builder: (y: Argv) =>
    y
      .positional('bundle', { type: 'string', demandOption: true, describe: 'The bundle to update in place' })
      .option('from', { type: 'string', describe: "The new bundle's http(s) URL or file [default: the manifest's update.url]" })
      .option('check', { type: 'boolean', default: false, describe: 'Only say whether an update exists (exit 0: yes, 1: no)' })
      .option('accept-key', { type: 'string', describe: 'Accept an update signed by this new key (base64 as `overpack keygen` prints it, or its .pub file)' })
      .option('allow-downgrade', { type: 'boolean', default: false, describe: 'Accept a version older than the bundle\'s (refused by default)' })
      .option('channel', { type: 'string', describe: "Replaces {channel} in the update URL [default: the manifest's update.channel]" }) as unknown as Argv<UpdateArgs>,
  handler: async (args) => {
    const [{ runUpdate }, { UpdateError, UPDATE_EXIT }] = await Promise.all([import('../../runtime/update/update.js'), import('../../runtime/update/errors.js')]);
    try {
      const r = await runUpdate({ bundle: path.resolve(args.bundle), from: args.from, check: args.check, acceptKey: args.acceptKey, channel: args.channel, allowDowngrade: args.allowDowngrade, say });
      if (args.check) process.exitCode = r.state === 'available' ? 0 : UPDATE_EXIT.NONE;
    } catch (err) {
      if (err instanceof UpdateError) fail(err.message, err.exitCode);
      throw err;
    }
  },
};
