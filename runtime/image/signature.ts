/**
 * Optional Ed25519 signatures of whole bundles, with Node's built-in crypto only (the check must
 * not depend on an addon that the signature is meant to vouch for).
 *
 * A signed bundle ends with a fixed-size trailer after the image footer:
 *
 *   [executable][image data][index][footer, flag SIGNED set][signature trailer]
 *
 * trailer (little-endian, TRAILER_SIZE bytes):
 *    0  magic "OVPKSIG\0" (8)      8  trailer version u32 (1)     12  algorithm u32 (1)
 *   16  signed length u64: every byte before the trailer (so: the trailer's own offset)
 *   24  signer's Ed25519 public key, raw (32)
 *   56  Ed25519 signature (64)
 *
 * The signed message is SIGNED_CONTEXT, the signed length as u64 and the SHA-256 of all the
 * bytes before the trailer (runtime executable, data, addons, index, footer). Node has no
 * streaming Ed25519 (and no Ed25519ph), so the bundle is hashed in chunks and the digest is
 * signed: forging a signature then needs a SHA-256 collision or an Ed25519 forgery.
 *
 * The footer carries a SIGNED flag that the signature covers: cutting the trailer off leaves a
 * bundle that says it was signed and is refused as damaged. Whoever rewrites the whole bundle can
 * of course clear the flag too; only a key the user trusts (not one carried by the bundle) tells
 * a genuine bundle from a re-signed or unsigned one.
 */
import fs from 'node:fs';
import { crypto } from '../builtins.js';
import type { KeyObject } from 'node:crypto';
import { OverpackError } from '../errors/overpack-error.js';

export const SIG_MAGIC = Buffer.from('OVPKSIG\0', 'latin1');
export const TRAILER_SIZE = 120;
export const TRAILER_VERSION = 1;
export const ALGO_ED25519_SHA256 = 1;
const SIGNED_CONTEXT = Buffer.from('overpack bundle signature v1\0', 'latin1');
/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface SignatureTrailer {
  version: number;
  algorithm: number;
  signedLength: number;
  publicKey: Buffer; // raw, 32 bytes
  signature: Buffer; // 64 bytes
}

/** Something wrong with a key or a signature: the file involved, what was being done, why. */
export class SignatureError extends OverpackError {
  constructor(readonly file: string, op: string, message: string) {
    super('SIGNATURE', op, file, message);
  }
}

export function isTrailer(b: Buffer): boolean {
  return b.length >= TRAILER_SIZE && b.subarray(0, 8).equals(SIG_MAGIC);
}

export function encodeTrailer(t: SignatureTrailer): Buffer {
  const b = Buffer.alloc(TRAILER_SIZE);
  SIG_MAGIC.copy(b, 0);
  b.writeUInt32LE(t.version, 8);
  b.writeUInt32LE(t.algorithm, 12);
  b.writeBigUInt64LE(BigInt(t.signedLength), 16);
  t.publicKey.copy(b, 24);
  t.signature.copy(b, 56);
  return b;
}

/** Decodes a trailer read from the last TRAILER_SIZE bytes of a file of `fileSize` bytes. */
export function decodeTrailer(b: Buffer, fileSize: number, bundle: string): SignatureTrailer {
  const t: SignatureTrailer = {
    version: b.readUInt32LE(8),
    algorithm: b.readUInt32LE(12),
    signedLength: Number(b.readBigUInt64LE(16)),
    publicKey: Buffer.from(b.subarray(24, 56)),
    signature: Buffer.from(b.subarray(56, 120)),
  };
  if (t.version !== TRAILER_VERSION || t.algorithm !== ALGO_ED25519_SHA256) {
    throw new SignatureError(bundle, 'read-signature', `signature block version ${t.version}, algorithm ${t.algorithm} is not supported by this overpack (it reads version ${TRAILER_VERSION}, Ed25519); use a newer overpack`);
  }
  if (t.signedLength !== fileSize - TRAILER_SIZE) {
    throw new SignatureError(bundle, 'read-signature', 'the signature block does not sit at the end of the bundle it signs: the bundle is truncated or was modified (download or build it again)');
  }
  return t;
}

/** SHA-256 of bytes [0, length) of an open file, read in 4 MiB chunks. */
export function digestPrefix(fd: number, length: number, bundle: string): Buffer {
  const h = crypto().createHash('sha256');
  const buf = Buffer.allocUnsafe(4 << 20);
  for (let pos = 0; pos < length; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, length - pos), pos);
    if (n === 0) throw new SignatureError(bundle, 'hash', 'the bundle shrank while it was being checked');
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return h.digest();
}

function signedMessage(signedLength: number, digest: Buffer): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(signedLength));
  return Buffer.concat([SIGNED_CONTEXT, len, digest]);
}

export function rawPublicKey(key: KeyObject): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  return Buffer.from(der.subarray(der.length - 32));
}

export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return crypto().createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** A short, stable name for a key: SHA-256 of its raw bytes, first 16 bytes in hex. */
export function fingerprint(raw: Buffer): string {
  return crypto().createHash('sha256').update(raw).digest('hex').slice(0, 32).replace(/(.{4})(?!$)/g, '$1:');
}

/**
 * Parses a public key given as text: an SPKI PEM ("-----BEGIN PUBLIC KEY-----") or the base64
 * of the raw 32 bytes (what `overpack keygen` prints and the manifest's `security.publicKey`
 * holds). Returns the raw key, or a reason.
 */
export function parsePublicKeyText(text: string): { raw: Buffer } | { problem: string } {
  const t = text.trim();
  try {
    if (t.startsWith('-----BEGIN')) {
      if (/PRIVATE KEY/.test(t)) return { problem: 'this is a private key; give the public key (the .pub file written by `overpack keygen`)' };
      const key = crypto().createPublicKey(t);
      if (key.asymmetricKeyType !== 'ed25519') return { problem: `a ${key.asymmetricKeyType ?? 'unknown'} key, not Ed25519` };
      return { raw: rawPublicKey(key) };
    }
    if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) return { problem: 'neither a PEM public key nor the base64 of a 32-byte Ed25519 key' };
    const raw = Buffer.from(t, 'base64');
    publicKeyFromRaw(raw); // throws on bytes that are not a key
    return { raw };
  } catch (err) {
    return { problem: `not a valid Ed25519 public key (${(err as Error).message})` };
  }
}

export function readPublicKeyFile(file: string): Buffer {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new SignatureError(file, 'read-key', `cannot read the public key ${file}: ${(err as Error).message}`);
  }
  const parsed = parsePublicKeyText(text);
  if ('problem' in parsed) throw new SignatureError(file, 'read-key', `${file}: ${parsed.problem}`);
  return parsed.raw;
}

export function readPrivateKeyFile(file: string): KeyObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new SignatureError(file, 'read-key', `cannot read the signing key ${file}: ${(err as Error).message}`);
  }
  if (!/-----BEGIN (ENCRYPTED )?PRIVATE KEY-----/.test(text)) {
    throw new SignatureError(file, 'read-key', `${file} is not a PEM private key${/PUBLIC KEY/.test(text) ? ' (it is a public key: sign with the .key file, verify with the .pub file)' : ''}; make one with \`overpack keygen <prefix>\``);
  }
  let key: KeyObject;
  try {
    key = crypto().createPrivateKey(text);
  } catch (err) {
    throw new SignatureError(file, 'read-key', `${file}: cannot load the private key (${(err as Error).message}); encrypted keys are not supported`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new SignatureError(file, 'read-key', `${file} is a ${key.asymmetricKeyType ?? 'unknown'} key; overpack signs with Ed25519 keys (\`overpack keygen <prefix>\`)`);
  return key;
}

/** Signs bundle bytes [0, size) of `file` and appends the trailer. Returns the signer's raw key. */
export function signBundleFile(file: string, privateKey: KeyObject): Buffer {
  const fd = fs.openSync(file, 'r+');
  try {
    const size = fs.fstatSync(fd).size;
    const digest = digestPrefix(fd, size, file);
    const publicKey = rawPublicKey(crypto().createPublicKey(privateKey));
    const signature = crypto().sign(null, signedMessage(size, digest), privateKey);
    const trailer = encodeTrailer({ version: TRAILER_VERSION, algorithm: ALGO_ED25519_SHA256, signedLength: size, publicKey, signature });
    fs.writeSync(fd, trailer, 0, trailer.length, size);
    return publicKey;
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether `signature` is the trailer's signer's signature of a bundle whose prefix hashes to `digest`. */
export function signatureMatches(t: SignatureTrailer, digest: Buffer): boolean {
  try {
    return crypto().verify(null, signedMessage(t.signedLength, digest), publicKeyFromRaw(t.publicKey), t.signature);
  } catch {
    return false;
  }
}
