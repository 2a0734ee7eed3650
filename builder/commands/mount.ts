/** `overpack mount` and `overpack umount`: the overlay engine from the shell. */
import type { Argv, CommandModule } from 'yargs';
import { OverlayFS, OverlayError, OVERLAY_ACTIONS, INODE_MODES, DEFAULT_CACHE_SECONDS, type OverlayAction, type InodeMode } from '../../runtime/index.js';
import { isMounted, unmountPath } from '../../runtime/fuse/unmount.js';
import { fail, say } from '../output.js';
import fs from 'node:fs';
import path from 'node:path';
import { ImageError, readImage } from '../../runtime/image/format.js';
import { ImageLayer } from '../../runtime/image/image-layer.js';
import type { Layer } from '../../runtime/overlay/layer.js';

interface MountArgs {
  lower: string;
  upper?: string;
  mountpoint?: string;
  home: boolean;
  'inode-mode': InodeMode;
  'on-exit': OverlayAction;
  'cache-timeout': number;
  'allow-other': boolean;
  writeback?: boolean;
  passthrough: boolean;
  debug: boolean;
}

export const mountCommand: CommandModule<object, MountArgs> = {
  command: 'mount <lower>',
  describe: 'Mount a writable overlay over a directory, or over the image of a bundle, and serve it until interrupted',
  builder: (y: Argv) =>
    y
      .positional('lower', { type: 'string', demandOption: true, describe: 'Read-only base: a directory, or a bundle built by overpack build (its files as they are inside it)' })
      .option('upper', { type: 'string', describe: 'Writable layer directory [default: <lower>_upper]' })
      .option('mountpoint', { type: 'string', describe: 'Where to mount [default: $TMPDIR/mount_<dir>_<id>_<ts>]' })
      .option('home', { type: 'boolean', default: false, describe: 'Put the generated mountpoint under ~/.cache instead of $TMPDIR' })
      .option('inode-mode', { choices: INODE_MODES, default: 'virtual' as InodeMode, describe: 'virtual: sequential per mount; persistent: FNV-1a of the path, stable across mounts' })
      .option('on-exit', { choices: OVERLAY_ACTIONS, default: 'preserve' as OverlayAction, describe: 'What to do with the writable layer after unmounting' })
      .option('cache-timeout', { type: 'number', default: DEFAULT_CACHE_SECONDS, describe: 'Seconds the kernel may cache attributes and lookups (0: off; hard-linked files written through one name show the change through the others after this delay)' })
      .option('allow-other', { type: 'boolean', default: false, describe: 'Let other users (root included) use the mount, with permissions checked by the kernel; a user other than root needs user_allow_other in /etc/fuse.conf' })
      .option('writeback', { type: 'boolean', describe: 'Let the kernel merge writes in its page cache (fuse3 binding; see the README for what it costs) [default: off, or OVERPACK_FUSE_WRITEBACK=1]' })
      .option('passthrough', { type: 'boolean', default: true, describe: 'Let the kernel read and write upper files itself where it can (fuse3 binding, run as root, Linux >= 6.9; --no-passthrough: a request per read and write instead of per open and close; OVERPACK_FUSE_PASSTHROUGH=0/1 overrides)' })
      .option('debug', { type: 'boolean', default: false, describe: 'Print every FUSE request (libfuse debug output)' }) as unknown as Argv<MountArgs>,
  handler: async (args) => {
    const lower = lowerOf(args.lower);
    const overlay = new OverlayFS(lower).setInodeMode(args['inode-mode']).setTuning({ cacheTimeout: args['cache-timeout'], writeback: args.writeback, passthrough: args.passthrough, debug: args.debug });
    if (args.upper) overlay.setUpper(args.upper);
    else if (typeof lower !== 'string') overlay.setUpper(`${path.resolve(args.lower)}_upper`);
    if (args.mountpoint) overlay.setMountpoint(args.mountpoint);
    if (args.home) overlay.mountpointAsHome();
    if (args['allow-other']) overlay.allowOther();
    await overlay.mount();
    const { mountPoint, upper, binding } = overlay.handle();
    await overlay.overlayAction(args['on-exit']);
    // Signal handlers go in before the mountpoint is announced: a caller may stop us at once.
    const stopped = new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (why: string) => {
        if (stopping) return;
        stopping = true;
        say(`${why}: unmounting ${mountPoint}`);
        resolve();
      };
      process.on('SIGINT', () => stop('interrupted'));
      process.on('SIGTERM', () => stop('terminated'));
      process.on('SIGHUP', () => stop('hangup'));
      // `overpack umount` from another shell unmounts behind our back: notice and finish.
      const poll = setInterval(() => {
        if (!isMounted(mountPoint)) {
          clearInterval(poll);
          stop('unmounted externally');
        }
      }, 500);
      poll.unref();
    });
    // stdout carries only the mountpoint, so scripts can capture it.
    process.stdout.write(`${mountPoint}\n`);
    say(`mounted ${path.resolve(args.lower)} (upper ${upper}) at ${mountPoint} with ${binding}; Ctrl-C or \`overpack umount ${mountPoint}\` to stop`);
    await stopped;
    try {
      const result = await overlay.umount();
      if (result) say(result.summary);
    } catch (err) {
      if (err instanceof OverlayError && err.code === 'UNMOUNT_FAILED' && !isMounted(mountPoint)) return;
      throw err;
    }
  },
};

/**
 * A directory as it is, or a bundle's image (readImage checks its footer, index and tree root;
 * every file is checked against the index as it is read, as when the bundle runs).
 */
function lowerOf(lower: string): string | Layer {
  let isFile = false;
  try {
    isFile = fs.statSync(lower).isFile();
  } catch {
    return lower; // OverlayFS names a missing lower
  }
  if (!isFile) return lower;
  let image;
  try {
    image = readImage(lower);
  } catch (err) {
    if (err instanceof ImageError) fail(`${lower} is not a directory, and not a bundle overpack can mount (${err.message}); give a directory or a bundle made by overpack build`, 2);
    throw err;
  }
  return new ImageLayer(lower, image.fd, image.tree, (p) => say(`error: ${p} in ${lower} is corrupt (its content does not match the image index)`));
}

export const umountCommand: CommandModule<object, { mountpoint: string; lazy: boolean }> = {
  command: 'umount <mountpoint>',
  describe: 'Unmount an overlay mounted by `overpack mount` (its server then applies --on-exit)',
  builder: (y: Argv) =>
    y
      .positional('mountpoint', { type: 'string', demandOption: true, describe: 'The mountpoint printed by `overpack mount`' })
      .option('lazy', { type: 'boolean', default: false, describe: 'Detach even if busy (processes inside then see errors)' }) as unknown as Argv<{ mountpoint: string; lazy: boolean }>,
  handler: async (args) => {
    const mp = path.resolve(args.mountpoint);
    if (!isMounted(mp)) fail(`${mp} is not a mountpoint`, 2);
    const r = await unmountPath(mp, args.lazy);
    if (!r.ok) fail(`cannot unmount ${mp}: ${r.message}${/busy/i.test(r.message) ? ' (close what uses it, or use --lazy)' : ''}`, 1);
  },
};
