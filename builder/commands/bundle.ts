/** `overpack build | init | inspect | verify`: making and checking single-file bundles. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv, CommandModule } from 'yargs';
// The image reader, the BLAKE3 addon and the signature code load inside the handlers that use
// them: the CLI imports this module for every command, `overpack mount` included.
const image = () => import('../../runtime/image/format.js');
const signatures = () => import('../../runtime/image/signature.js');
import type { ImageEntry, OpenedImage } from '../../runtime/image/format.js';
import { fail, say, warn } from '../output.js';
import { TARGETS, type Target } from '../../runtime/native/targets.js';
import { DEFAULT_LINE } from '../node-release.js';

/** templates/ of this checkout or package: found upwards, as this runs from dist/builder/commands or bundled into dist/builder/cli.js. */
const TEMPLATES = (() => {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'templates'))) return path.join(dir, 'templates');
    if (path.dirname(dir) === dir) return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'templates');
  }
})();

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

async function guard<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    const [{ BuildError }, { ImageError }, { SignatureError }] = await Promise.all([import('../../runtime/image/writer.js'), image(), signatures()]);
    if (err instanceof BuildError) fail(err.message, 'exitCode' in err && typeof err.exitCode === 'number' ? err.exitCode : 1);
    if (err instanceof ImageError || err instanceof SignatureError) fail(err.message, 1);
    throw err;
  }
}

type BuildArgs = { appdir: string; output?: string; node?: string; nodeVersion?: string; target?: Target; sign?: string; compression: string; runtimeCompression: string };

export const buildCommand: CommandModule<object, BuildArgs> = {
  command: 'build <appdir>',
  describe: 'Bundle an app directory (with overpack.json) into one executable',
  builder: (y: Argv) =>
    y
      .positional('appdir', { type: 'string', demandOption: true, describe: 'The app directory' })
      .option('output', { alias: 'o', type: 'string', describe: 'Output file [default: <name>.run]' })
      .option('target', { choices: TARGETS, describe: `Platform the bundle runs on [default: this machine's]` })
      .option('node-version', { type: 'string', describe: `Official Node to embed: lts, a line (26) or a version (26.12.1), fetched from the npm registry and cached [default: the newest ${DEFAULT_LINE}.x]` })
      .option('node', { type: 'string', describe: 'A Node binary of your own to embed, for the target\'s architecture' })
      .option('sign', { type: 'string', describe: 'Sign the bundle with this Ed25519 private key (PEM, from `overpack keygen`)' })
      .option('compression', { type: 'string', default: 'zstd', describe: 'How file contents are stored: none, zstd or zstd:LEVEL (1-19; zstd: 9)' })
      .option('runtime-compression', { type: 'string', default: 'zstd', describe: 'How the runtime executable is stored: none, or zstd[:LEVEL] behind a small loader that decompresses it once per machine (zstd: 12)' }) as unknown as Argv<BuildArgs>,
  handler: async (args) => {
    // Loaded here, not at the top: esbuild and the build pipeline are only needed to build, and
    // every other command (mount above all) starts faster without them.
    const [{ build }, { parseCompression, CodecError, DEFAULT_RUNTIME_COMPRESSION }] = await Promise.all([import('../build.js'), import('../../runtime/image/codec.js')]);
    let compression, runtimeCompression;
    try {
      compression = parseCompression(args.compression);
      runtimeCompression = parseCompression(args.runtimeCompression, DEFAULT_RUNTIME_COMPRESSION);
    } catch (err) {
      if (err instanceof CodecError) fail(err.message, 2);
      throw err;
    }
    const r = await guard(() => build({ appDir: args.appdir, output: args.output, node: args.node, nodeVersion: args.nodeVersion, target: args.target, sign: args.sign, compression, runtimeCompression, onProgress: say, onWarning: warn }));
    const s = r.stats;
    say(
      `built ${r.output}: ${s.files} files, ${s.dirs} dirs, ${s.symlinks} symlinks; files ${mib(s.bytes)} stored as ${mib(s.storedBytes)} (dedup saved ${mib(s.dedupSaved)}, compression ${s.compression}); runtime ${mib(r.runtimeBytes)} stored as ${mib(r.runtimeStoredBytes)} (Node ${r.nodeVersion} for ${r.target}, glibc >= ${r.glibc ?? '?'}, compression ${r.runtimeCompression}); bundle ${mib(r.bundleBytes)}; ${r.seconds.toFixed(1)} s${r.signer ? `; signed by ${r.signer}` : ''}`,
    );
    process.stdout.write(`${r.output}\n`);
  },
};

export const initCommand: CommandModule<object, { dir: string; template: string }> = {
  command: 'init <dir>',
  describe: 'Create an app directory from a template',
  builder: (y: Argv) =>
    y
      .positional('dir', { type: 'string', demandOption: true, describe: 'Directory to create' })
      .option('template', { alias: 't', choices: fs.existsSync(TEMPLATES) ? fs.readdirSync(TEMPLATES).sort() : [], default: 'shell', describe: 'Starter app' }) as unknown as Argv<{ dir: string; template: string }>,
  handler: async (args) => {
    const dest = path.resolve(args.dir);
    if (fs.existsSync(dest) && fs.readdirSync(dest).length > 0) fail(`${dest} exists and is not empty; choose a new directory`, 1);
    fs.cpSync(path.join(TEMPLATES, args.template), dest, { recursive: true });
    say(`created ${dest} from the ${args.template} template; next: overpack build ${args.dir} && ./${JSON.parse(fs.readFileSync(path.join(dest, 'overpack.json'), 'utf8')).name}.run`);
  },
};

/** The files of an image's tree; an inconsistent tree is an ImageError naming it. */
async function treeFiles(img: OpenedImage): Promise<ImageEntry[]> {
  return (await import('../../runtime/image/verify.js')).treeFiles(img);
}

/** target, node and glibc of the index; "unknown" for bundles made before they were recorded. */
function runtimeInfo(r: unknown): { target: string; node: string; glibc: string } {
  const o = (r && typeof r === 'object' ? r : {}) as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' ? v : 'unknown (built before overpack recorded it)');
  return { target: text(o.target), node: text(o.node), glibc: typeof o.glibc === 'string' ? `>= ${o.glibc}` : text(o.glibc) };
}

export const inspectCommand: CommandModule<object, { bundle: string }> = {
  command: 'inspect <bundle>',
  describe: 'Print a bundle\'s manifest, image version, hash, file count and sizes',
  builder: (y: Argv) => y.positional('bundle', { type: 'string', demandOption: true }) as unknown as Argv<{ bundle: string }>,
  handler: async (args) => {
    const [{ readImage }, { fingerprint }] = await Promise.all([image(), signatures()]);
    const img = await guard(async () => readImage(path.resolve(args.bundle)));
    const files = await guard(() => treeFiles(img));
    fs.closeSync(img.fd);
    const distinct = new Map(files.map((f) => [f.hash, f.size]));
    const content = img.index.content;
    const runtimeBytes = img.index.executable?.size ?? img.footer.imageStart;
    const loader = img.index.loader;
    const info = {
      manifest: img.index.manifest,
      imageFormat: img.footer.version,
      indexHash: img.footer.indexHash.toString('hex'),
      entries: img.tree.entries,
      files: files.length,
      fileBytes: files.reduce((n, f) => n + f.size, 0),
      distinctBytes: [...distinct.values()].reduce((n, s) => n + s, 0),
      compression: content?.compression ?? 'unknown',
      // What the contents take in the bundle, after dedup and compression.
      storedBytes: content?.storedBytes ?? null,
      imageBytes: img.size - img.footer.imageStart,
      runtime: loader ? { bytes: runtimeBytes, storedBytes: loader.size + loader.frameLength, compression: loader.compression, loaderBytes: loader.size } : { bytes: runtimeBytes, storedBytes: runtimeBytes, compression: 'none' },
      bundleBytes: img.size,
      addons: img.index.addons.map((a) => a.name),
      ...runtimeInfo(img.index.runtime),
      signature: img.signature ? { signer: fingerprint(img.signature.publicKey), publicKey: img.signature.publicKey.toString('base64'), checked: 'no (overpack verify --key checks it)' } : null,
    };
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
  },
};

export const verifyCommand: CommandModule<object, { bundle: string; key?: string }> = {
  command: 'verify <bundle>',
  describe: 'Check a bundle\'s signature and every file against its BLAKE3 hash',
  builder: (y: Argv) =>
    y
      .positional('bundle', { type: 'string', demandOption: true })
      .option('key', { type: 'string', describe: 'Public key (PEM or base64) the bundle must be signed with; without it an unsigned bundle is only reported' }) as unknown as Argv<{ bundle: string; key?: string }>,
  handler: async (args) => {
    const [{ readImage }, { fingerprint, readPublicKeyFile }, { checkSignature, checkContents }] = await Promise.all([image(), signatures(), import('../../runtime/image/verify.js')]);
    const bundle = path.resolve(args.bundle);
    const trusted = args.key ? await guard(async () => readPublicKeyFile(path.resolve(args.key!))) : null;
    const img = await guard(async () => readImage(bundle));
    const problems: string[] = [];
    // The signature first: it covers every byte, the executable included.
    const sig = checkSignature(img);
    if (sig.state === 'invalid') {
      problems.push(`signature: INVALID (claims key ${sig.signer}); the bundle was modified after signing`);
    } else if (sig.state === 'valid' && trusted && !trusted.equals(sig.publicKey)) {
      problems.push(`signature: valid, but by key ${sig.signer}, not the trusted key ${fingerprint(trusted)}`);
    } else if (sig.state === 'valid') {
      say(`signature: valid, signed by ${sig.signer}${trusted ? ' (the trusted key)' : ' (pass --key to check it is the key you trust)'}`);
    } else if (trusted) {
      problems.push(`signature: none; the bundle is not signed, and --key ${args.key} asks for one`);
    } else {
      say('signature: none (not signed)');
    }
    const files = await guard(() => treeFiles(img));
    // Every distinct content, decoded piece by piece as the runtime reads it, and the addons.
    const bad = await checkContents(img, files);
    const items = files.length + img.index.addons.length;
    fs.closeSync(img.fd);
    if (bad.length) problems.push(`${bad.length} of ${items} items are corrupt:\n  ${bad.join('\n  ')}`);
    if (problems.length) fail(problems.join('\n'), 1);
    say(`ok: ${items} items match their hashes`);
  },
};
