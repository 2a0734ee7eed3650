/**
 * The natives a bundle for one target ships, made into `dist/native/<target>/`:
 * - `overpack-fuse3.node`, our libfuse 3 addon, beside the `libfuse3.so.3` and `libzstd.so.1`
 *   it was linked with (rpath `$ORIGIN`), so the target machine needs neither;
 * - `xattr.node`, fs-xattr's C sources compiled the same way as ours;
 * - `blake.node`, @napi-rs/blake-hash's prebuilt addon for the target;
 * - `overpack-exec`, the small program that starts the app so that it dies with the runtime
 *   (`runtime/fuse/lowlevel/overpack_exec.c`);
 * and, not inside the image but in front of it, `overpack-loader` (LOADER).
 * Compiled against the target's sysroot when there is one (`sysroot.ts`), else the host's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { EXEC_HELPER, FUSE3_ADDON, LIBFUSE3, LIBZSTD } from '../../runtime/native/addon.js';
import { packageRoot } from '../../runtime/native/dirs.js';
import { compileAddon, CompileError, type Toolchain } from './compile.js';
import { blakeAddon } from './blake-prebuilt.js';

const require = createRequire(import.meta.url);

export const XATTR_ADDON = 'xattr.node';
export const BLAKE_ADDON = 'blake.node';
/**
 * The static program in front of a bundle whose runtime is stored compressed
 * (runtime/loader/overpack_loader.c, builder/loader.ts); not one of the image's natives.
 */
export const LOADER = 'overpack-loader';
/** Every file a bundle carries from its target's directory, in the order they are stored. */
export const BUNDLED_NATIVES = [FUSE3_ADDON, LIBFUSE3, LIBZSTD, XATTR_ADDON, BLAKE_ADDON, EXEC_HELPER] as const;

export function prepareTargetNatives(tc: Toolchain, dest: string, warn: (message: string) => void): void {
  fs.mkdirSync(dest, { recursive: true });
  // Nothing of an earlier build may survive a failed step and be shipped with the new ones.
  for (const name of [...BUNDLED_NATIVES, LOADER]) fs.rmSync(path.join(dest, name), { force: true });

  const lowlevel = path.join(packageRoot(), 'runtime', 'fuse', 'lowlevel');
  const linked = compileAddon(tc, {
    name: 'overpack_fuse3',
    sources: ['overpack_fuse3.c', 'fuse3_requests.c', 'fuse3_replies.c', 'fuse3_direct.c', 'fuse3_passthrough.c', 'fuse3_entries.c', 'syscalls.c', 'codec.c', 'copy_range.c'].map((f) => path.join(lowlevel, f)),
    output: path.join(dest, FUSE3_ADDON),
    includeDirs: ['=/usr/include/fuse3'],
    libs: ['-lfuse3', '-lzstd', '-lm'],
    cflags: ['-Wall', '-Wextra', '-Wno-unused-parameter'],
  });
  // The libfuse3 and libzstd the linker took (the sysroot's, or the host's without one) go beside it.
  for (const [lib, name] of [['libfuse3.so', LIBFUSE3], ['libzstd.so', LIBZSTD]] as const) {
    const file = linked.find((f) => path.basename(f).startsWith(lib));
    if (!file) throw new CompileError(`the link of ${FUSE3_ADDON} read no ${lib}`, path.join(dest, FUSE3_ADDON));
    fs.copyFileSync(fs.realpathSync(file), path.join(dest, name));
  }

  const xattrSrc = path.join(path.dirname(require.resolve('fs-xattr')), 'src');
  compileAddon(tc, {
    name: 'xattr',
    sources: fs.readdirSync(xattrSrc).filter((f) => f.endsWith('.c')).sort().map((f) => path.join(xattrSrc, f)),
    output: path.join(dest, XATTR_ADDON),
  });

  fs.copyFileSync(blakeAddon(tc.target, warn), path.join(dest, BLAKE_ADDON));

  compileAddon(tc, {
    name: 'overpack_exec',
    kind: 'program',
    sources: [path.join(lowlevel, 'overpack_exec.c')],
    output: path.join(dest, EXEC_HELPER),
    cflags: ['-Wall', '-Wextra'],
  });
  compileAddon(tc, {
    name: 'overpack_loader',
    kind: 'static',
    sources: ['overpack_loader.c', 'express.c'].map((f) => path.join(packageRoot(), 'runtime', 'loader', f)),
    output: path.join(dest, LOADER),
    libs: ['-lzstd'],
    cflags: ['-Wall', '-Wextra'],
  });
  for (const name of [...BUNDLED_NATIVES, LOADER]) fs.chmodSync(path.join(dest, name), 0o755);
}
