/**
 * The natives a bundle for one target ships, made into `dist/native/<target>/`:
 * - `overpack-fuse3.node`, our libfuse 3 addon, beside the `libfuse3.so.3` it was linked
 *   with (rpath `$ORIGIN`), so the target machine needs no libfuse3;
 * - `xattr.node`, fs-xattr's C sources compiled the same way as ours;
 * - `blake.node`, @napi-rs/blake-hash's prebuilt addon for the target;
 * - `overpack-exec`, the small program that starts the app so that it dies with the runtime
 *   (`runtime/fuse/lowlevel/overpack_exec.c`).
 * Compiled against the target's sysroot when there is one (`sysroot.ts`), else the host's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { EXEC_HELPER, FUSE3_ADDON, LIBFUSE3 } from '../../runtime/native/addon.js';
import { packageRoot } from '../../runtime/fuse/native.js';
import { compileAddon, CompileError, type Toolchain } from './compile.js';
import { blakeAddon } from './blake-prebuilt.js';

const require = createRequire(import.meta.url);

export const XATTR_ADDON = 'xattr.node';
export const BLAKE_ADDON = 'blake.node';
/** Every file a bundle carries from its target's directory, in the order they are stored. */
export const BUNDLED_NATIVES = [FUSE3_ADDON, LIBFUSE3, XATTR_ADDON, BLAKE_ADDON, EXEC_HELPER] as const;

export function prepareTargetNatives(tc: Toolchain, dest: string, warn: (message: string) => void): void {
  fs.mkdirSync(dest, { recursive: true });
  // Nothing of an earlier build may survive a failed step and be shipped with the new ones.
  for (const name of BUNDLED_NATIVES) fs.rmSync(path.join(dest, name), { force: true });

  const lowlevel = path.join(packageRoot(), 'runtime', 'fuse', 'lowlevel');
  const linked = compileAddon(tc, {
    name: 'overpack_fuse3',
    sources: [path.join(lowlevel, 'overpack_fuse3.c'), path.join(lowlevel, 'syscalls.c')],
    output: path.join(dest, FUSE3_ADDON),
    includeDirs: ['=/usr/include/fuse3'],
    libs: ['-lfuse3', '-lm'],
    cflags: ['-Wall', '-Wextra', '-Wno-unused-parameter'],
  });
  // The libfuse3 the linker took (the sysroot's, or the host's without one) goes beside it.
  const libfuse3 = linked.find((f) => path.basename(f).startsWith('libfuse3.so'));
  if (!libfuse3) throw new CompileError(`the link of ${FUSE3_ADDON} read no libfuse3.so`, path.join(dest, FUSE3_ADDON));
  fs.copyFileSync(fs.realpathSync(libfuse3), path.join(dest, LIBFUSE3));

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
  for (const name of BUNDLED_NATIVES) fs.chmodSync(path.join(dest, name), 0o755);
}
