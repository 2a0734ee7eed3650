/**
 * fuse-native (libfuse 2) for the development machine: `overpack mount` and the engine can
 * serve with it (OVERPACK_FUSE_BINDING=fuse-native); bundles do not carry it. Placed in
 * `dist/native/<host>/` beside the libfuse 2 that fuse-native ships, rpath `$ORIGIN`, so
 * nothing depends on the host's libfuse2.
 *
 * The addon is compiled from fuse-native's own C source with two fixes: fuse-native 2.2.6 passes
 * the access time twice to `utimens` (the modification time is lost) and does not translate
 * UTIME_NOW / UTIME_OMIT; and it does not tell libfuse that it understands UTIME_OMIT, so a
 * change of one time only was dropped. The fix is applied as a text substitution that must match exactly;
 * if the source ever differs, or no compiler is available, the prebuilt addon is used and a
 * warning says that setting modification times will not work.
 */
import { copyFileSync, mkdirSync, chmodSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { FUSE_ADDON, LIBFUSE } from '../../runtime/fuse/native.js';
import { packageRoot, platformTag } from '../../runtime/native/dirs.js';

const require = createRequire(import.meta.url);

const UTIMENS_ORIGINAL = `  l->atime = timespec_to_uint64(&tv[0]);
  l->mtime = timespec_to_uint64(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)`;

const UTIMENS_FIXED = `  l->atime = overpack_utime_ms(&tv[0]);
  l->mtime = overpack_utime_ms(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)
  FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)`;

/** Inserted before the utimens handler: "now" becomes the clock, "omit" an all-ones sentinel. */
const UTIME_HELPER = `/* overpack: UTIME_NOW and UTIME_OMIT are markers, not times. */
static uint64_t overpack_utime_ms (const struct timespec* ts) {
  if (ts->tv_nsec == UTIME_NOW) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return timespec_to_uint64(&now);
  }
  if (ts->tv_nsec == UTIME_OMIT) return UINT64_MAX;
  return timespec_to_uint64(ts);
}

`;

/**
 * Without flag_utime_omit_ok, libfuse 2's high-level layer drops a utimens that changes only
 * one of the two times (`touch -m`, `touch -a`) instead of passing UTIME_OMIT for the other.
 */
const OMIT_ANCHOR = '  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;';
const OMIT_OK = `${OMIT_ANCHOR}\n  ops.flag_utime_omit_ok = 1;`;

function nodeGyp(): string {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const bundled = path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(bundled)) return bundled;
  throw new Error('node-gyp not found (it ships with npm; run this through `npm run build`)');
}

/** Compiles fuse-native with the utimens fix; returns the built addon's path. */
function buildPatchedAddon(pkgDir: string): string {
  const source = readFileSync(path.join(pkgDir, 'fuse-native.c'), 'utf8');
  if (!source.includes(UTIMENS_ORIGINAL)) throw new Error('fuse-native.c is not the version this fix was written for');
  const anchor = 'FUSE_METHOD_VOID(utimens';
  if (!source.includes(OMIT_ANCHOR)) throw new Error('fuse-native.c is not the version this fix was written for');
  const patched = source.replace(UTIMENS_ORIGINAL, UTIMENS_FIXED).replace(anchor, UTIME_HELPER + anchor).replace(OMIT_ANCHOR, OMIT_OK);
  const buildDir = path.join(packageRoot(), 'dist', 'native-build', 'fuse-native');
  rmSync(buildDir, { recursive: true, force: true });
  mkdirSync(buildDir, { recursive: true });
  writeFileSync(path.join(buildDir, 'fuse-native.c'), patched);
  const napiMacros = path.dirname(require.resolve('napi-macros/package.json', { paths: [pkgDir] }));
  const sharedLibPkg = require.resolve(`fuse-shared-library-${process.platform}`, { paths: [pkgDir] });
  const sharedLib = require(sharedLibPkg) as { include: string; lib: string };
  const gyp = {
    targets: [
      {
        target_name: 'fuse',
        include_dirs: [napiMacros, sharedLib.include],
        libraries: [sharedLib.lib],
        sources: ['fuse-native.c'],
        cflags: ['-O2', '-Wall', '-Wno-unused-result'],
      },
    ],
  };
  writeFileSync(path.join(buildDir, 'binding.gyp'), JSON.stringify(gyp, null, 2));
  gypRebuild(buildDir);
  return path.join(buildDir, 'build', 'Release', 'fuse.node');
}

function gypRebuild(buildDir: string): void {
  const args = [nodeGyp(), 'rebuild', '--silent'];
  // Offline machines build against the installed Node headers instead of downloading them.
  if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/common.gypi')) args.push('--nodedir=/usr');
  execFileSync(process.execPath, args, { cwd: buildDir, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Sets `$ORIGIN` as the addon's rpath, so it finds the libfuse shipped beside it. */
function setOriginRpath(file: string): void {
  try {
    execFileSync('patchelf', ['--set-rpath', '$ORIGIN', file], { stdio: 'inherit' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'patchelf is not installed (Debian: apt-get install patchelf)' : e.message;
    console.error(`overpack: cannot set the rpath of ${file}: ${why}`);
    process.exit(1);
  }
}

/**
 * fuse-native, for `overpack mount` and the engine on this machine (bundles do not ship it):
 * the patched addon, or the prebuilt one if it cannot be compiled, beside its libfuse 2.
 */
export function prepareFuseNative(dest: string): void {
  const pkgDir = path.dirname(require.resolve('fuse-native/package.json'));
  const prebuilt = path.join(pkgDir, 'prebuilds', platformTag());
  mkdirSync(dest, { recursive: true });
  let addon: string;
  try {
    addon = buildPatchedAddon(pkgDir);
  } catch (err) {
    console.error(`overpack: warning: using fuse-native's prebuilt addon, which cannot set modification times: ${(err as Error).message}`);
    addon = path.join(prebuilt, 'node.napi.node');
  }
  copyFileSync(addon, path.join(dest, FUSE_ADDON));
  copyFileSync(path.join(prebuilt, 'libfuse.so'), path.join(dest, LIBFUSE));
  chmodSync(path.join(dest, FUSE_ADDON), 0o755);
  setOriginRpath(path.join(dest, FUSE_ADDON));
}
