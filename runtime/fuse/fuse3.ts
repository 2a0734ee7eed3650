/**
 * The libfuse 3 binding: our own N-API addon (`lowlevel/overpack_fuse3.c`) over libfuse's
 * low-level, inode-based API, served on Node's main thread (no thread hop per request). This
 * module is its entry (`fuse3Binding`: mount options, mount and unmount); the rest:
 * - `fuse3-server.ts`: the session, and each request dispatched and answered exactly once;
 * - `fuse3-handlers.ts`: the answer to each operation, with `fuse3-setattr.ts` and
 *   `fuse3-readdir.ts`;
 * - `fuse3-context.ts`: what the handlers share (addon, engine, nodes, timeouts, replies);
 * - `node-table.ts` and `fuse3-paths.ts`: the kernel speaks in node ids, the engine (`FsOps`)
 *   in paths; `fuse3-unlinked.ts`: files that lose their name while the kernel holds them;
 * - `fuse3-wire.ts`: the addon's request and reply layout; `fuse3-stats.ts`: request counts.
 *
 * The protocol work that makes this binding fast:
 * - READDIRPLUS: a listing carries every entry's attributes, so a walk costs one request per
 *   directory instead of one LOOKUP per entry;
 * - no OPENDIR/RELEASEDIR (answered ENOSYS once, see the addon) and so the kernel caches each
 *   directory's listing until it changes through this mount;
 * - no OPEN/RELEASE either (ENOSYS once): files are read and written by path with file
 *   handle 0, kept cached by the kernel across opens;
 * - entry, attribute and negative timeouts in every reply; FLUSH and ACCESS never reach JS;
 * - a READ of a file on disk is answered from its descriptor in the addon (spliced into the
 *   device), so file data never enters JS; other layers fill a reused buffer.
 */
import { constants as osc } from 'node:os';
import type { FuseBinding, MountedFs, MountOptions } from './binding.js';
import type { FsOps } from '../vfs/index.js';
import { unmountPath } from './unmount.js';
import { loadAddon } from '../native/addon.js';
import { Fuse3Server } from './fuse3-server.js';

const { ENOTCONN } = osc.errno;

/** libfuse 3 mount options: each for a reason (see the module comment and the README). */
function mountArgs(o: MountOptions): string[] {
  // default_permissions first: the kernel's permission checks must survive any fsname.
  const opts = ['default_permissions', 'subtype=overpack', `fsname=${o.fsName.replace(/[,\s\\]/g, '_').slice(0, 1024)}`];
  if (o.allowOther) opts.push('allow_other');
  const args = ['overpack', '-o', opts.join(',')];
  if (o.debug) args.push('-d');
  return args;
}

export const fuse3Binding: FuseBinding = {
  name: 'fuse3',
  available(): boolean {
    try {
      loadAddon();
      return true;
    } catch {
      return false;
    }
  },
  async mount(mountPoint: string, ops: FsOps, options: MountOptions): Promise<MountedFs> {
    const server = new Fuse3Server(loadAddon(), ops, options);
    server.start(mountPoint, mountArgs(options));
    let unmounting: Promise<void> | undefined;
    let gone = false;
    void server.ended.then(() => (gone = true));
    return {
      mountPoint,
      unmount(): Promise<void> {
        unmounting ??= (async () => {
          if (!gone) {
            // Detach from a child process, so this loop keeps answering while the kernel
            // finishes; lazily if something still has files open inside.
            let r = await unmountPath(mountPoint, false);
            if (!r.ok) r = await unmountPath(mountPoint, true);
            if (!r.ok) throw Object.assign(new Error(r.message), { errno: ENOTCONN });
          }
          await server.close();
        })();
        return unmounting;
      },
    };
  },
};
