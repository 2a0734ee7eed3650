/**
 * Build step (run by `npm run build`, hence by `npm install`): puts the FUSE addon beside its
 * libfuse and makes the addon find it (rpath `$ORIGIN`), so neither the development tree nor a
 * bundle depends on the host's libfuse2.
 */
import { copyFileSync, mkdirSync, chmodSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { FUSE_ADDON, LIBFUSE, nativeDir, platformTag } from './native.js';

const require = createRequire(import.meta.url);

function main(): void {
  if (process.platform !== 'linux') {
    console.error(`overpack: native addons are only prepared on Linux (this is ${platformTag()})`);
    return;
  }
  const pkgDir = path.dirname(require.resolve('fuse-native/package.json'));
  const prebuilt = path.join(pkgDir, 'prebuilds', platformTag());
  const dest = nativeDir();
  mkdirSync(dest, { recursive: true });
  copyFileSync(path.join(prebuilt, 'node.napi.node'), path.join(dest, FUSE_ADDON));
  copyFileSync(path.join(prebuilt, 'libfuse.so'), path.join(dest, LIBFUSE));
  chmodSync(path.join(dest, FUSE_ADDON), 0o755);
  try {
    execFileSync('patchelf', ['--set-rpath', '$ORIGIN', path.join(dest, FUSE_ADDON)], { stdio: 'inherit' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'patchelf is not installed (Debian: apt-get install patchelf)' : e.message;
    console.error(`overpack: cannot set the FUSE addon's rpath: ${why}`);
    process.exit(1);
  }
}

main();
