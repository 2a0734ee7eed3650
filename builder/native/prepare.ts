/**
 * Build step (run by `npm run build`, hence by `npm install`): the natives of every target in
 * `dist/native/<target>/`, compiled against a Debian 11 sysroot so that no file a bundle
 * ships needs a glibc above 2.28, plus fuse-native for this machine's engine.
 *
 * Where a sysroot cannot be made (no debootstrap, no network on first use), the host's target
 * is built against the host's own glibc so that development and bundles still work here; the
 * warning says those bundles will not run on older distributions, and the glibc floor test
 * fails. Other targets are then not prepared at all (building a bundle for them is an error).
 */
import fs from 'node:fs';
import path from 'node:path';
import { hostTargetOrNull, TARGETS, type Target } from '../../runtime/native/targets.js';
import { nativeDirFor, platformTag } from '../../runtime/native/dirs.js';
import { ensureSysroot, SysrootError } from './sysroot.js';
import { toolchain } from './compile.js';
import { BUNDLED_NATIVES, prepareTargetNatives } from './target-natives.js';
import { prepareFuseNative } from './fuse-native.js';
import { GLIBC_FLOOR, glibcFloorViolations } from './glibc-needs.js';

function say(message: string): void {
  console.error(`overpack: ${message}`);
}

function prepare(target: Target, host: Target | null): void {
  const dest = nativeDirFor(target);
  let sysroot: string | null;
  try {
    sysroot = ensureSysroot(target, say);
  } catch (err) {
    if (!(err instanceof SysrootError)) throw err;
    if (target !== host) {
      say(`warning: no natives for ${target}, so no bundles for it: ${err.message}`);
      for (const name of BUNDLED_NATIVES) fs.rmSync(path.join(dest, name), { force: true });
      return;
    }
    say(`WARNING: no Debian 11 sysroot for ${target} (${err.message}); building its natives against this machine's glibc instead: bundles built here may not start on older distributions, and test/glibc-floor fails`);
    sysroot = null;
  }
  try {
    prepareTargetNatives(toolchain(target, sysroot), dest, (m) => say(`warning: ${m}`));
  } catch (err) {
    say(`warning: the natives for ${target} are not built, so no bundles for it (the engine here falls back to fuse-native): ${(err as Error).message}`);
    return;
  }
  const above = BUNDLED_NATIVES.map((name) => ({ name, versions: glibcFloorViolations(path.join(dest, name)).map((v) => v.version) })).filter((f) => f.versions.length > 0);
  if (above.length > 0) say(`WARNING: natives for ${target} need more than glibc ${GLIBC_FLOOR}: ${above.map((f) => `${f.name} needs ${f.versions.join(', ')}`).join('; ')}`);
}

function main(): void {
  const host = hostTargetOrNull();
  if (process.platform !== 'linux') {
    say(`native addons are only prepared on Linux (this is ${platformTag()})`);
    return;
  }
  // fuse-native ships its libfuse 2 for x64 only; it is the engine's second binding here.
  if (host === 'linux-x64') prepareFuseNative(nativeDirFor(host));
  for (const target of TARGETS) prepare(target, host);
}

main();
