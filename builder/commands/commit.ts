/** `overpack commit`: merge a preserved (unmounted) upper into its lower, or recover a crashed commit. */
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { commitUpper, commitUpperAtomic, describeCommit, recoverCommit, CommitError } from '../../runtime/overlay/index.js';
import { isMounted } from '../../runtime/fuse/unmount.js';
import { fail, say } from '../output.js';

interface CommitArgs {
  lower: string;
  upper?: string;
  atomic: boolean;
  recover: boolean;
}

export const commitCommand: CommandModule<object, CommitArgs> = {
  command: 'commit <lower>',
  describe: 'Merge a writable layer into its lower directory (or --recover an interrupted commit)',
  builder: (y: Argv) =>
    y
      .positional('lower', { type: 'string', demandOption: true, describe: 'The lower directory' })
      .option('upper', { type: 'string', describe: 'The upper to merge [default: <lower>_upper]' })
      .option('atomic', { type: 'boolean', default: false, describe: 'Stage beside the lower and swap it in: the lower is always entirely old or entirely new' })
      .option('recover', { type: 'boolean', default: false, describe: 'Only finish or roll back an interrupted --atomic commit' }) as unknown as Argv<CommitArgs>,
  handler: async (args) => {
    const lower = path.resolve(args.lower);
    if (args.recover) {
      const r = await recoverCommit(lower);
      say(r === 'none' ? `no interrupted commit for ${lower}` : `the interrupted commit of ${lower} was ${r === 'completed' ? 'completed' : 'rolled back (the upper is kept)'}`);
      return;
    }
    const upper = path.resolve(args.upper ?? `${lower}_upper`);
    for (const mp of [lower, upper]) if (isMounted(mp)) fail(`${mp} is a mountpoint; unmount it first`, 1);
    let last = 0;
    const onProgress = (p: { done: number; total: number; bytes: number }) => {
      if (p.total >= 1000 || p.bytes >= 64 * 1024 * 1024) {
        const now = Date.now();
        if (now - last > 1000 || p.done === p.total) {
          last = now;
          say(`committing: ${p.done}/${p.total} files, ${(p.bytes / 1048576).toFixed(1)} MiB`);
        }
      }
    };
    try {
      const s = await (args.atomic ? commitUpperAtomic : commitUpper)(lower, upper, { onProgress });
      say(describeCommit(s, upper, lower));
    } catch (err) {
      if (err instanceof CommitError) fail(err.message, 1);
      throw err;
    }
  },
};
