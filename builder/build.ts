/**
 * `overpack build`: app directory → single executable.
 *   validate overpack.json → runtime executable (esbuild bundle of runtime/launcher → SEA blob
 *   → copy of node + postject; cached per node binary and runtime) → append native addons and
 *   the image (runtime/image) → optionally sign (runtime/image/signature.ts) → chmod +x, renamed
 *   into place only when complete.
 * The same app directory, node binary and signing key always give the same bytes (Ed25519
 * signatures are deterministic).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { appendImage, BuildError, type ImageStats } from '../runtime/image/writer.js';
import { DEFAULT_COMPRESSION, DEFAULT_RUNTIME_COMPRESSION, describeCompression, type Compression } from '../runtime/image/codec.js';
import { loaderFront } from './loader.js';
import { checkIcon } from './icon.js';
import { sandboxHelperCandidates } from '../runtime/desktop/chromium.js';
import { loadAddon } from '../runtime/native/addon.js';
import { validateManifest, type Manifest } from '../runtime/manifest/validate.js';
import { MANIFEST_SCHEMA } from '../runtime/manifest/schema.js';
import { MANIFEST_OPTIONS } from '../runtime/manifest/validator.js';
import { nativeDirFor } from '../runtime/native/dirs.js';
import { overpackCache } from '../runtime/paths/xdg.js';
import { hostTarget, type Target } from '../runtime/native/targets.js';
import { BLAKE_ADDON, BUNDLED_NATIVES, LOADER, XATTR_ADDON } from './native/target-natives.js';
import { missingInterpreter } from './interpreter.js';
import { runtimeRecord, SEA_FUSE } from './runtime-record.js';
import { fingerprint, parsePublicKeyText, rawPublicKey, readPrivateKeyFile, signBundleFile, SignatureError } from '../runtime/image/signature.js';
import { EM_AARCH64, EM_X86_64, ElfError, elfMachine, glibcFloor, machineName } from './elf.js';
import { checkArchitecture, chooseNode, type ChosenNode } from './node-choice.js';
import { prepareRuntimeBinary, seaMethod, type SeaMethod } from './sea.js';

const require = createRequire(import.meta.url);
/** The runtime script's name inside the bundle: what its stack frames show. */
const RUNTIME_SCRIPT = 'overpack-runtime.cjs';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/**
 * useCodeCache: V8's compile cache of the runtime script goes into the blob. Both Node
 * processes of a .js app's launch (the runtime, then the app in node mode) compile the whole
 * runtime script before running a line of it; with the cache they load it instead. Measured
 * on a hello-world bundle: see the README's Performance section. (The script uses no dynamic
 * import(), which a code-cached SEA main cannot do.) Part of the cache key: a change rebuilds.
 */
const SEA_OPTIONS = { disableExperimentalSEAWarning: true };

export interface BuildOptions {
  appDir: string;
  output?: string;
  node?: string;
  /** `lts`, a line (`26`) or a version (`26.12.1`): the official Node, fetched and cached. */
  nodeVersion?: string;
  /** The platform the bundle runs on [default: this machine's]. */
  target?: Target;
  /** PEM file of an Ed25519 private key: sign the bundle with it. */
  sign?: string;
  /** How file contents are stored [default: DEFAULT_COMPRESSION]. */
  compression?: Compression;
  /** How the runtime executable is stored [default: DEFAULT_RUNTIME_COMPRESSION]. */
  runtimeCompression?: Compression;
  onProgress?: (message: string) => void;
  onWarning?: (message: string) => void;
}

export interface BuildResult {
  output: string;
  manifest: Manifest;
  stats: ImageStats;
  bundleBytes: number;
  /** The runtime executable, and what it takes in the bundle (with the loader, compressed). */
  runtimeBytes: number;
  runtimeStoredBytes: number;
  runtimeCompression: string;
  seconds: number;
  /** Fingerprint of the signing key, when signed. */
  signer?: string;
  target: Target;
  nodeVersion: string;
  glibc: string | null;
}

/** `:LINE:COLUMN` of a JSON.parse error that gives a character position (Node 20 gives only that). */
function jsonErrorPlace(text: string, message: string): string {
  const at = /at position (\d+)/.exec(message);
  if (!at) return '';
  const before = text.slice(0, Number(at[1]));
  const line = before.split('\n').length;
  return `:${line}:${before.length - before.lastIndexOf('\n')}`;
}

export function readManifest(appDir: string): Manifest {
  const file = path.join(appDir, 'overpack.json');
  let raw: unknown;
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
    raw = JSON.parse(text);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BuildError(file, 'read-manifest', e.code === 'ENOENT' ? `${file} not found: an app directory needs an overpack.json (see \`overpack init\`)` : `${file}${jsonErrorPlace(text, e.message)} is not valid JSON: ${e.message}`);
  }
  const { manifest, problems } = validateManifest(raw);
  if (!manifest) throw new BuildError(file, 'validate-manifest', `${file} is invalid:\n  ${problems.join('\n  ')}`);
  const entry = path.join(appDir, manifest.entrypoint);
  let st: fs.Stats;
  try {
    st = fs.statSync(entry);
  } catch {
    throw new BuildError(file, 'validate-manifest', `${file}: entrypoint: ${manifest.entrypoint} does not exist in ${appDir}`);
  }
  if (!st.isFile()) throw new BuildError(file, 'validate-manifest', `${file}: entrypoint: ${manifest.entrypoint} is not a file`);
  if (!/\.(c|m)?js$/.test(entry) && (st.mode & 0o111) === 0) {
    throw new BuildError(file, 'validate-manifest', `${file}: entrypoint: ${manifest.entrypoint} is not executable (chmod +x it, or use a .js entrypoint)`);
  }
  return manifest;
}

/**
 * The natives a bundle for `target` carries, from this installation's `dist/native/<target>/`
 * (made by `npm run build`): our libfuse 3 addon with its libfuse3, fs-xattr and BLAKE3.
 */
export function addonFiles(target: Target = hostTarget()): Array<{ name: string; file: string }> {
  const dir = nativeDirFor(target);
  const files = BUNDLED_NATIVES.map((name) => ({ name, file: path.join(dir, name) }));
  for (const f of files) {
    if (!fs.existsSync(f.file)) {
      throw new BuildError(f.file, 'addons', `native addon ${f.file} for ${target} is missing; run \`npm run build\` in the overpack checkout (its warnings say why it was not made)`);
    }
  }
  return files;
}

/**
 * In the bundle, the manifest validator is ajv's standalone code for the schema, made here:
 * nothing to compile at launch, and ajv itself stays out of the runtime.
 */
function manifestValidatorPlugin(): esbuild.Plugin {
  return {
    name: 'overpack-manifest-validator',
    setup(b) {
      // The manifest's own validator module (runtime/manifest/validator.ts), imported as './validator.js'.
      b.onResolve({ filter: /^\.\/validator\.js$/ }, (args) => (/[\\/]runtime[\\/]manifest[\\/][^\\/]+\.ts$/.test(args.importer) ? { path: 'manifest-validator', namespace: 'overpack-generated' } : undefined));
      b.onResolve({ filter: /^overpack-manifest-standalone$/ }, () => ({ path: 'standalone', namespace: 'overpack-generated' }));
      b.onLoad({ filter: /^manifest-validator$/, namespace: 'overpack-generated' }, () => ({
        contents: "import validate from 'overpack-manifest-standalone';\nexport function manifestValidator() { return validate; }\n",
        loader: 'js',
        resolveDir: ROOT,
      }));
      b.onLoad({ filter: /^standalone$/, namespace: 'overpack-generated' }, () => {
        const { Ajv2020 } = require('ajv/dist/2020.js') as { Ajv2020: new (opts: object) => { compile(schema: object): unknown } };
        const standalone = (require('ajv/dist/standalone') as { default: (ajv: unknown, fn: unknown) => string }).default;
        const ajv = new Ajv2020({ ...MANIFEST_OPTIONS, code: { source: true } });
        return { contents: standalone(ajv, ajv.compile(MANIFEST_SCHEMA)), loader: 'js', resolveDir: ROOT };
      });
    },
  };
}

/**
 * esbuild turns the launcher and everything it imports into one CommonJS file. Native addons
 * cannot be bundled: each package's loader is redirected to the launcher's, which dlopens the
 * copy extracted from the bundle.
 */
async function bundleRuntime(): Promise<string> {
  // Loaded at first use, through the launcher's registry (a require esbuild resolves and bundles).
  const registry = JSON.stringify(path.join(ROOT, 'runtime', 'native', 'bundled.ts'));
  const lazyAddon = (name: string) => `new Proxy({}, { get: (_, k) => require(${registry}).bundledAddon(${JSON.stringify(name)})[k] })`;
  const result = await esbuild.build({
    entryPoints: [path.join(ROOT, 'runtime', 'launcher', 'entry.cts')],
    // esbuild names each module in comments by its path from here: from the checkout, not the
    // cwd, so the same sources give the same script (and bundle) wherever the build runs.
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    write: false,
    minify: false,
    legalComments: 'none',
    logLevel: 'silent',
    plugins: [
      manifestValidatorPlugin(),
      {
        name: 'overpack-native-addons',
        setup(b) {
          // Only the natives above are in a bundle; an addon found on disk by node-gyp-build
          // (fuse-native's way) would be missing at run time.
          b.onResolve({ filter: /^node-gyp-build$/ }, (args) => ({ errors: [{ text: `${args.importer} loads a native addon through node-gyp-build, which a bundle cannot carry` }] }));
          b.onLoad({ filter: /[\\/]fs-xattr[\\/]index\.js$/ }, async (args) => {
            const src = await fs.promises.readFile(args.path, 'utf8');
            const needle = "createRequire(import.meta.url)('./build/Release/xattr')";
            if (!src.includes(needle)) throw new Error(`fs-xattr changed: ${args.path} no longer loads its addon the expected way`);
            return { contents: src.replace(needle, lazyAddon(XATTR_ADDON)), loader: 'js' };
          });
          b.onLoad({ filter: /[\\/]@napi-rs[\\/]blake-hash[\\/]index\.js$/ }, () => ({ contents: `module.exports = ${lazyAddon(BLAKE_ADDON)};`, loader: 'js' }));
        },
      },
    ],
  });
  return result.outputFiles[0]!.text;
}

/** Loads the signing key and checks it against the manifest's policy, before any work is done. */
function signingKey(opts: BuildOptions, manifest: Manifest, manifestFile: string, warn: (m: string) => void): KeyObject | null {
  const policy = manifest.security;
  const required = policy?.requireSignature === true || policy?.publicKey !== undefined;
  if (!opts.sign) {
    // An update is accepted only when signed by the running bundle's key: without a key of its own, a bundle could never be updated safely.
    if (manifest.update !== undefined) throw new BuildError(manifestFile, 'sign', `${manifestFile}: update: a bundle that updates itself must be signed (its updates are accepted only when signed by the same key); build with --sign <private-key.pem> (make a key with \`overpack keygen <prefix>\`, and sign every version with it)`);
    if (required) throw new BuildError(manifestFile, 'sign', `${manifestFile}: security requires a signed bundle; build with --sign <private-key.pem> (make a key with \`overpack keygen <prefix>\`)`);
    return null;
  }
  const file = path.resolve(opts.sign);
  let key: KeyObject;
  try {
    key = readPrivateKeyFile(file);
  } catch (err) {
    if (err instanceof SignatureError) throw new BuildError(file, err.op, err.message);
    throw err;
  }
  const mode = fs.statSync(file).mode & 0o077;
  if (mode !== 0) warn(`${file} can be read by other users (mode ${(fs.statSync(file).mode & 0o777).toString(8)}); chmod 600 it`);
  if (policy?.publicKey !== undefined) {
    const wanted = parsePublicKeyText(policy.publicKey);
    const have = rawPublicKey(createPublicKey(key));
    if ('raw' in wanted && !wanted.raw.equals(have)) {
      throw new BuildError(file, 'sign', `${file} (key ${fingerprint(have)}) is not the key the manifest's security.publicKey names (${fingerprint(wanted.raw)}); sign with that key or change the manifest`);
    }
  }
  return key;
}

/**
 * Every shipped ELF must be for the target; returns the oldest glibc the bundle can run on:
 * the newest GLIBC_ symbol version the Node binary or any addon needs.
 */
function checkNatives(node: string, addons: Array<{ name: string; file: string }>, target: Target): string | null {
  const wanted = target === 'linux-arm64' ? EM_AARCH64 : EM_X86_64;
  const files = [node, ...addons.map((a) => a.file)];
  try {
    for (const f of addons) {
      const machine = elfMachine(f.file);
      if (machine !== wanted) throw new BuildError(f.file, 'addons', `native addon ${f.file} is an ${machineName(machine)} file, but the bundle is for ${target} (${machineName(wanted)}); rebuild the addons with \`npm run build\``);
    }
    return glibcFloor(files);
  } catch (err) {
    if (err instanceof ElfError) throw new BuildError(err.file, 'addons', `native addon ${err.message}; rebuild the addons with \`npm run build\``);
    throw err;
  }
}

function cacheDir(): string {
  return path.join(overpackCache(), 'build');
}

/**
 * SHA-256 of a file (a Node binary: 100+ MB, 0.3-0.5 s to hash), remembered in the build cache
 * while the file's inode, size, mtime and ctime stay the same, so a build does not hash its
 * Node again each time.
 */
function fileHash(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const record = path.join(cacheDir(), 'hashes', createHash('sha256').update(fs.realpathSync(file)).digest('hex').slice(0, 32));
  try {
    const [seen, hash] = fs.readFileSync(record, 'utf8').split(' ');
    if (seen === stamp && hash) return hash;
  } catch {
    /* not hashed yet */
  }
  const hash = hashWhole(file);
  fs.mkdirSync(path.dirname(record), { recursive: true, mode: 0o700 });
  fs.writeFileSync(record, `${stamp} ${hash}`);
  return hash;
}

function hashWhole(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/**
 * The runtime executable (node + SEA blob), built once per runtime source, Node binary
 * content, blob generator and strip tool: the key covers everything that changes its bytes,
 * never a path or a time, so a build anywhere gives the same bytes from the same inputs.
 */
async function runtimeExecutable(node: ChosenNode, progress: (m: string) => void, warn: (m: string) => void): Promise<string> {
  const js = await bundleRuntime();
  const method: SeaMethod = seaMethod(node, warn);
  const key = createHash('sha256')
    .update(js)
    .update(JSON.stringify({ ...SEA_OPTIONS, main: RUNTIME_SCRIPT, useCodeCache: node.codeCache, method: method.name, strip: method.strip?.identity ?? null }))
    .update(fileHash(node.binary))
    .update(node.generator === node.binary ? 'self' : fileHash(node.generator))
    .digest('hex')
    .slice(0, 24);
  const cached = path.join(cacheDir(), `runtime-${key}`);
  if (fs.existsSync(cached)) return cached;
  progress(`building the runtime executable for ${node.target} (Node ${node.version} single-executable application, ${method.name}; once per Node binary)`);
  fs.mkdirSync(cacheDir(), { recursive: true, mode: 0o700 });
  const work = fs.mkdtempSync(path.join(cacheDir(), 'work-'));
  try {
    fs.writeFileSync(path.join(work, RUNTIME_SCRIPT), js);
    const exe = path.join(work, 'runtime');
    prepareRuntimeBinary(node.binary, exe, method);
    // Relative, with the generator run in `work`: the script's name in stack traces is then
    // RUNTIME_SCRIPT, not a temporary directory that is gone (and not in the bundle's bytes).
    const config = { main: RUNTIME_SCRIPT, ...SEA_OPTIONS, useCodeCache: node.codeCache };
    if (method.name === 'build-sea') {
      // Node >= 25.5 writes the whole executable: the node given as "executable" plus the blob.
      fs.writeFileSync(path.join(work, 'sea-config.json'), JSON.stringify({ ...config, executable: exe, output: path.join(work, 'runtime.sea') }));
      execFileSync(node.generator, ['--build-sea', 'sea-config.json'], { stdio: ['ignore', 'ignore', 'pipe'], cwd: work });
      fs.chmodSync(path.join(work, 'runtime.sea'), 0o755);
      return keepFirst(path.join(work, 'runtime.sea'), cached);
    }
    fs.writeFileSync(path.join(work, 'sea-config.json'), JSON.stringify({ ...config, output: path.join(work, 'sea.blob') }));
    execFileSync(node.generator, ['--experimental-sea-config', 'sea-config.json'], { stdio: ['ignore', 'ignore', 'pipe'], cwd: work });
    const { inject } = require('postject') as { inject: (file: string, name: string, data: Buffer, opts: { sentinelFuse: string }) => Promise<void> };
    // postject reports harmless notes about ELF sections on stderr; keep the build output clean.
    const write = process.stderr.write.bind(process.stderr);
    (process.stderr as unknown as { write: (c: unknown) => boolean }).write = () => true;
    try {
      await inject(exe, 'NODE_SEA_BLOB', fs.readFileSync(path.join(work, 'sea.blob')), { sentinelFuse: SEA_FUSE });
    } finally {
      (process.stderr as unknown as { write: typeof write }).write = write;
    }
    return keepFirst(exe, cached);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Puts a runtime executable made just now in the cache, unless a build running at the same
 * time put its own there first: then that one is used. Never replaced once there, because two
 * generations of the same runtime can differ (V8's code cache is not byte-deterministic) and a
 * build that has recorded one runtime's SHA-256 must not copy the other's bytes.
 */
function keepFirst(made: string, cached: string): string {
  try {
    fs.linkSync(made, cached);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return cached;
}

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const started = process.hrtime.bigint();
  const progress = opts.onProgress ?? (() => undefined);
  const appDir = path.resolve(opts.appDir);
  if (!fs.existsSync(appDir) || !fs.statSync(appDir).isDirectory()) throw new BuildError(appDir, 'build', `${appDir} is not a directory`);
  const manifest = readManifest(appDir);
  // A menu icon a desktop cannot show fails the build, not the user's integration.
  if (manifest.desktop?.icon) checkIcon(path.join(appDir, manifest.desktop.icon));
  for (const helper of sandboxHelperCandidates(manifest.entrypoint)) {
    if (fs.existsSync(path.join(appDir, helper))) {
      opts.onWarning?.(`${helper.slice(1)}: an Electron/Chromium sandbox helper. Inside a bundle it cannot be setuid (the mount is nosuid): the app's sandbox will need unprivileged user namespaces on the user's machine; where they are blocked the bundle stops with a message saying so (it never turns the sandbox off)`);
    }
  }
  const output = path.resolve(opts.output ?? `${manifest.name}.run`);
  if (output.startsWith(appDir + path.sep)) throw new BuildError(output, 'build', `the output ${output} must not be inside the app directory`);
  const key = signingKey(opts, manifest, path.join(appDir, 'overpack.json'), opts.onWarning ?? (() => undefined));
  const interpreter = missingInterpreter(appDir, manifest.entrypoint);
  if (interpreter) opts.onWarning?.(interpreter);
  const warnings = opts.onWarning ?? (() => undefined);
  // Cheap checks first: a --node for the wrong architecture or a missing addon fails the
  // build before any download.
  const target = opts.target ?? hostTarget();
  if (opts.node !== undefined && fs.existsSync(opts.node)) checkArchitecture(path.resolve(opts.node), target, opts.target !== undefined);
  const addons = addonFiles(target);
  const compression = opts.compression ?? DEFAULT_COMPRESSION;
  const runtimeCompression = opts.runtimeCompression ?? DEFAULT_RUNTIME_COMPRESSION;
  if (compression.codec !== 'none' || runtimeCompression.codec !== 'none') {
    try {
      loadAddon();
    } catch (err) {
      throw new BuildError(appDir, 'build', `compression needs overpack's addon, which does not load here (${(err as Error).message}); build it (npm run build) or pass --compression none --runtime-compression none`);
    }
  }
  const node = await chooseNode({ node: opts.node, nodeVersion: opts.nodeVersion, target: opts.target, cacheRoot: cacheDir(), progress, warn: warnings });
  const runtime = await runtimeExecutable(node, progress, warnings);
  const glibc = checkNatives(node.binary, addons, node.target);
  const record = runtimeRecord(runtime);
  const front = runtimeCompression.codec === 'none' ? null : loaderFront(path.join(nativeDirFor(node.target), LOADER), runtime, record, runtimeCompression.level, cacheDir(), progress);
  // The output's directory may be shared (/tmp): an unguessable name, created exclusively, so
  // nobody can have put a file or a symlink there for us to write through.
  const tmp = `${output}.tmp-${randomBytes(8).toString('hex')}`;
  let signer: string | undefined;
  try {
    fs.copyFileSync(front?.file ?? runtime, tmp, fs.constants.COPYFILE_EXCL);
    fs.chmodSync(tmp, 0o700);
    progress(`writing the image of ${appDir}`);
    let lastReport = 0;
    const stats = await appendImage(tmp, {
      appDir,
      manifest,
      addons,
      runtime: { target: node.target, node: `v${node.version}`, glibc },
      signed: key !== null,
      executable: record,
      loader: front ? { size: front.loaderSize, frameLength: front.frameLength, compression: front.compression, sha256: front.sha256 } : undefined,
      compression,
      onWarning: opts.onWarning,
      onProgress: (done, total) => {
        const now = Date.now();
        if (now - lastReport > 1000 || done === total) {
          lastReport = now;
          progress(`hashed and stored ${done}/${total} files`);
        }
      },
    });
    if (key) {
      progress('signing the bundle (Ed25519 over the SHA-256 of every byte)');
      signer = fingerprint(signBundleFile(tmp, key));
    }
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, output);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { output, manifest, stats, bundleBytes: fs.statSync(output).size, runtimeBytes: record.size, runtimeStoredBytes: front ? front.loaderSize + front.frameLength : record.size, runtimeCompression: describeCompression(runtimeCompression), seconds, signer, target: node.target, nodeVersion: node.version, glibc };
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}
