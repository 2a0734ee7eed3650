/**
 * Compiles an N-API addon straight with gcc (no node-gyp: node-gyp knows neither a sysroot
 * nor a cross compiler). N-API and libuv symbols are left undefined: the Node executable that
 * loads the addon provides them, so nothing links against a Node.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { hostTargetOrNull, type Target } from '../../runtime/native/targets.js';
import { packageRoot } from '../../runtime/native/dirs.js';
import { OverpackError } from '../../runtime/errors/overpack-error.js';

const TRIPLETS: Record<Target, string> = { 'linux-x64': 'x86_64-linux-gnu', 'linux-arm64': 'aarch64-linux-gnu' };

export interface Toolchain {
  readonly target: Target;
  /** The C compiler: the host's gcc for the host's target, else the Debian cross compiler. */
  readonly cc: string;
  /** null: the host's own headers and libraries (the fallback when no sysroot can be made). */
  readonly sysroot: string | null;
}

export class CompileError extends OverpackError {
  constructor(message: string, readonly output: string) {
    super('COMPILE', 'compile', null, message);
  }
}

export function toolchain(target: Target, sysroot: string | null): Toolchain {
  const cc = hostTargetOrNull() === target ? 'gcc' : `${TRIPLETS[target]}-gcc`;
  return { target, cc, sysroot };
}

/** The directory with node_api.h and uv.h: the running Node's own, else Debian's nodejs-dev. */
export function napiHeaders(): string {
  const candidates = [path.resolve(path.dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node'];
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')) && fs.existsSync(path.join(d, 'uv.h')));
  if (!found) throw new CompileError(`Node's N-API headers (node_api.h) are in none of ${candidates.join(', ')}`, '');
  return found;
}

/**
 * gcc given only `--sysroot` still searches its own prefix-relative directories first, which
 * are the host's (`/usr/lib/gcc/<triplet>/12/../../../<triplet>/` is the host's libc for the
 * native gcc, `/usr/<triplet>/lib` Debian's cross libc for the other): `-B` and `-L` put the
 * sysroot's start files and libraries before them, and `checkInputs` proves nothing else was
 * taken.
 */
function sysrootArgs(tc: Toolchain): string[] {
  if (!tc.sysroot) return [];
  const t = TRIPLETS[tc.target];
  return [`--sysroot=${tc.sysroot}`, `-B${tc.sysroot}/usr/lib/${t}/`, `-L=/lib/${t}`, `-L=/usr/lib/${t}`];
}

/** gcc's own directory (libgcc, crtbegin): the one part of the host a sysroot link may use. */
function gccLibDir(tc: Toolchain): string {
  const run = spawnSync(tc.cc, ['-print-libgcc-file-name'], { encoding: 'utf8' });
  return fs.realpathSync(path.dirname(run.stdout.trim()));
}

/** Every file the linker read (`--trace`) is from the sysroot, gcc's own directory, or ours. */
function checkInputs(tc: Toolchain, linked: string[], own: string[], output: string): void {
  if (!tc.sysroot) return;
  const allowed = [fs.realpathSync(tc.sysroot), gccLibDir(tc)];
  const outside = linked.filter((file) => {
    if (own.includes(file) || /^cc\w+\.o$/.test(path.basename(file))) return false;
    const real = fs.realpathSync(file);
    return !allowed.some((dir) => real.startsWith(dir + path.sep));
  });
  if (outside.length > 0) throw new CompileError(`${output} was linked with files from outside the sysroot ${tc.sysroot}: ${outside.join(', ')}`, output);
}

export interface AddonSources {
  /** The module name NAPI_MODULE registers. */
  name: string;
  /**
   * 'program': an executable of its own instead of an addon (no N-API, position-independent);
   * 'static': a program that needs no shared library at all (libc included), stripped.
   */
  kind?: 'addon' | 'program' | 'static';
  sources: string[];
  output: string;
  /** `=/usr/include/x` is inside the sysroot (gcc's `=` prefix), or the host's without one. */
  includeDirs?: string[];
  libs?: string[];
  cflags?: string[];
}

const KIND_FLAGS: Record<NonNullable<AddonSources['kind']>, string[]> = {
  addon: ['-shared', '-fPIC', '-O2'],
  program: ['-fPIE', '-pie', '-O2'],
  static: ['-static', '-Os', '-s', '-ffunction-sections', '-fdata-sections', '-Wl,--gc-sections'],
};

/** Compiles and links the addon; returns the files the linker read (for the libraries it used). */
export function compileAddon(tc: Toolchain, addon: AddonSources): string[] {
  // A static program carries its libc: the host's (gcc's own, matching its libgcc) is as good
  // as the sysroot's for any target machine, and the sysroot's libc.a cannot be linked with a
  // newer gcc's libgcc_eh. Only the libraries it names come from the sysroot.
  const isStatic = addon.kind === 'static';
  const fromSysroot = (lib: string) => (tc.sysroot && isStatic && lib.startsWith('-l') ? path.join(tc.sysroot, 'usr', 'lib', TRIPLETS[tc.target], `lib${lib.slice(2)}.a`) : lib);
  const args = [
    ...(isStatic ? (tc.sysroot ? ['-idirafter', path.join(tc.sysroot, 'usr', 'include')] : []) : sysrootArgs(tc)),
    ...KIND_FLAGS[addon.kind ?? 'addon'], '-pthread', '-g0',
    `-DNODE_GYP_MODULE_NAME=${addon.name}`, '-DBUILDING_NODE_EXTENSION',
    // Source paths (__FILE__ in fs-xattr) relative to the checkout: the same bytes from any checkout.
    `-ffile-prefix-map=${packageRoot()}/=`,
    '-I', napiHeaders(),
    // gcc reads a leading `=` as the sysroot only when there is one.
    ...(addon.includeDirs ?? []).flatMap((d) => ['-I', tc.sysroot ? d : d.replace(/^=/, '')]),
    ...(addon.cflags ?? []),
    '-o', addon.output,
    ...addon.sources,
    // Beside the addon in dist/native/<target>/ and in the bundle's extracted natives.
    '-Wl,-rpath,$ORIGIN', '-Wl,--as-needed', '-Wl,--trace',
    ...(addon.libs ?? []).map(fromSysroot),
  ];
  fs.mkdirSync(path.dirname(addon.output), { recursive: true });
  const run = spawnSync(tc.cc, args, { encoding: 'utf8' });
  if (run.error) {
    const e = run.error as NodeJS.ErrnoException;
    const hint = e.code === 'ENOENT' ? ` (not installed; Debian: apt-get install ${tc.cc === 'gcc' ? 'gcc' : `gcc-${TRIPLETS[tc.target]}`})` : '';
    throw new CompileError(`cannot run ${tc.cc}${hint}: ${e.message}`, addon.output);
  }
  if (run.status !== 0) throw new CompileError(`${tc.cc} ${args.join(' ')} failed:\n${run.stderr}`, addon.output);
  const linked = run.stdout.split('\n').filter((l) => path.isAbsolute(l.trim())).map((l) => l.trim());
  if (!isStatic) checkInputs(tc, linked, addon.sources, addon.output);
  return linked;
}
