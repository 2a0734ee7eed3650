#!/usr/bin/env node
/** The `overpack` command: one yargs program, one module per command under commands/. */
import yargs, { hideBin } from './yargs.js';
import { OverlayError } from '../runtime/overlay/index.js';
import { mountCommand, umountCommand } from './commands/mount.js';
import { commitCommand } from './commands/commit.js';
import { buildCommand, initCommand, inspectCommand, verifyCommand } from './commands/bundle.js';
import { keygenCommand } from './commands/keygen.js';
import { updateCommand } from './commands/update.js';
import { integrateCommand, unintegrateCommand } from './commands/desktop.js';
import { CliExit, printError } from './output.js';
import { EXIT, EXIT_FOR_CODE } from '../runtime/errors/exit-codes.js';

/**
 * yargs formats the whole help text of a command before running its handler, to have it ready
 * for a showHelp() from inside the handler, which this CLI never calls (--help and usage
 * errors build their own). That formatting slowed every command (measuring string widths needs
 * an Intl.Segmenter; bench/README, figures behind the code). Turned off through yargs' internal
 * methods where they exist.
 */
function skipHelpCache(y: object): void {
  const internal = (y as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } }).getInternalMethods?.();
  const usage = internal?.getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => undefined;
}

async function main(): Promise<void> {
  const y = yargs(hideBin(process.argv));
  skipHelpCache(y);
  await y
    .scriptName('overpack')
    .usage('$0 <command> [options]\n\nPortable apps over a writable FUSE overlay, and the overlay engine itself.')
    .command(buildCommand)
    .command(initCommand)
    .command(inspectCommand)
    .command(verifyCommand)
    .command(updateCommand)
    .command(keygenCommand)
    .command(integrateCommand)
    .command(unintegrateCommand)
    .command(mountCommand)
    .command(umountCommand)
    .command(commitCommand)
    .demandCommand(1, 'Name a command (see --help).')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .fail((msg, err) => {
      if (err) throw err;
      printError(msg);
      process.stderr.write('Run `overpack --help` for usage.\n');
      process.exit(EXIT.usage);
    })
    .parseAsync();
}

main().catch((err: unknown) => {
  if (err instanceof CliExit) {
    printError(err.message);
    process.exit(err.exitCode);
  }
  if (err instanceof OverlayError) {
    printError(err.message);
    process.exit(EXIT_FOR_CODE[err.code] ?? EXIT.failed);
  }
  printError((err as Error)?.stack ?? String(err));
  process.exit(EXIT.failed);
});
