/**
 * The runtime's signature policy: whether this launch needs a signed bundle, by which key, and
 * the check itself, done before any addon is extracted, anything is mounted or the app runs.
 *
 * A signature is required when the user names a key (--overpack-verify-signature <pub.pem> or
 * OVERPACK_VERIFY_SIGNATURE) or when the manifest asks for one (security.requireSignature,
 * security.publicKey). Checking means hashing every byte of the bundle (bench/README, figures
 * behind the code; more from a cold disk), so a successful check is remembered in the user's
 * cache, keyed by the file's device and inode and valid only while its size, mtime and ctime
 * (which no unprivileged process can set back) are unchanged. Without a requirement nothing is
 * hashed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { crypto } from '../builtins.js';
import type { OpenedImage } from '../image/format.js';
import { digestPrefix, fingerprint, parsePublicKeyText, readPublicKeyFile, signatureMatches, SignatureError } from '../image/signature.js';
import type { Manifest } from '../manifest/validate.js';

export interface SignatureRequirement {
  /** A key the user trusts, from the command line or the environment, with where it came from. */
  userKey: { raw: Buffer; from: string } | null;
  manifestKey: Buffer | null;
  required: boolean;
  /** Who asked for a signature, for messages. */
  requiredBy: string;
}

export type SignatureState =
  | { state: 'unsigned' }
  | { state: 'signed-unchecked'; signer: string }
  | { state: 'verified'; signer: string; cached: boolean; ms: number };

/** `keyFile`: the public key the user asked for (`from` says how: the flag or the environment, see flags.ts). */
export function signatureRequirement(manifest: Manifest, keyFile: string | undefined, from = 'the command line'): SignatureRequirement {
  const userKey = keyFile !== undefined ? { raw: readPublicKeyFile(path.resolve(keyFile)), from } : null;
  let manifestKey: Buffer | null = null;
  if (manifest.security?.publicKey !== undefined) {
    const parsed = parsePublicKeyText(manifest.security.publicKey);
    if ('raw' in parsed) manifestKey = parsed.raw; // validated with the manifest: never a problem here
  }
  const byManifest = manifest.security?.requireSignature === true || manifestKey !== null;
  const requiredBy = userKey ? userKey.from : byManifest ? "the app's manifest (security)" : '';
  return { userKey, manifestKey, required: userKey !== null || byManifest, requiredBy };
}

interface CacheRecord {
  size: string;
  mtimeNs: string;
  ctimeNs: string;
  signature: string;
  publicKey: string;
}

function cacheFile(cacheRoot: string, st: fs.BigIntStats): string {
  const key = crypto().createHash('sha256').update(`${st.dev}:${st.ino}`).digest('hex').slice(0, 32);
  return path.join(cacheRoot, 'overpack', 'verified', key);
}

function record(st: fs.BigIntStats, sig: { signature: Buffer; publicKey: Buffer }): CacheRecord {
  return { size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), signature: sig.signature.toString('base64'), publicKey: sig.publicKey.toString('base64') };
}

function sameRecord(a: CacheRecord, b: CacheRecord): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.signature === b.signature && a.publicKey === b.publicKey;
}

function readCache(file: string): CacheRecord | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as CacheRecord;
  } catch {
    return null;
  }
}

function writeCache(file: string, rec: CacheRecord): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${crypto().randomBytes(6).toString('hex')}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(rec), { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch {
    /* only a cache: the next launch checks again */
  }
}

/**
 * Enforces `req` on an opened bundle; throws SignatureError (exit 65 in the launcher) when a
 * required signature is missing, by another key, or does not match the bytes.
 */
export function enforceSignature(image: OpenedImage, bundle: string, req: SignatureRequirement, cacheRoot: string): SignatureState {
  const sig = image.signature;
  if (!req.required) return sig ? { state: 'signed-unchecked', signer: fingerprint(sig.publicKey) } : { state: 'unsigned' };
  const refuse = (why: string): never => {
    throw new SignatureError(bundle, 'verify-signature', `${why}; refusing to run it. Get the bundle again from its publisher, or ask them for the right key`);
  };
  if (!sig) refuse(`this bundle is not signed, and ${req.requiredBy} requires a signature`);
  const signer = fingerprint(sig!.publicKey);
  if (req.userKey && !req.userKey.raw.equals(sig!.publicKey)) refuse(`this bundle is signed by key ${signer}, not by the key you trust (${fingerprint(req.userKey.raw)}, from ${req.userKey.from})`);
  if (req.manifestKey && !req.manifestKey.equals(sig!.publicKey)) refuse(`this bundle is signed by key ${signer}, but its manifest requires key ${fingerprint(req.manifestKey)}`);
  const started = process.hrtime.bigint();
  const before = fs.fstatSync(image.fd, { bigint: true });
  const file = cacheFile(cacheRoot, before);
  const now = record(before, sig!);
  const cached = readCache(file);
  if (cached && sameRecord(cached, now)) return { state: 'verified', signer, cached: true, ms: Number(process.hrtime.bigint() - started) / 1e6 };
  const digest = digestPrefix(image.fd, sig!.signedLength, bundle);
  if (!signatureMatches(sig!, digest)) refuse(`this bundle's signature (key ${signer}) does not match its bytes: it was modified after it was signed`);
  const after = fs.fstatSync(image.fd, { bigint: true });
  if (sameRecord(record(after, sig!), now)) writeCache(file, now);
  return { state: 'verified', signer, cached: false, ms: Number(process.hrtime.bigint() - started) / 1e6 };
}
