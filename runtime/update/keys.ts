/**
 * The key rule of updates: a new bundle is accepted only when signed by the key that signed the
 * running bundle, or by a new key the user named explicitly (--accept-key).
 */
import fs from 'node:fs';
import { fingerprint, parsePublicKeyText, readPublicKeyFile, SignatureError } from '../image/signature.js';
import { UpdateError } from './errors.js';

/** The key the user named with --accept-key: base64, a PEM, or a file holding either. */
export function parseAcceptKey(spec: string): Buffer {
  const parsed = parsePublicKeyText(spec);
  if ('raw' in parsed) return parsed.raw;
  if (fs.existsSync(spec)) {
    try {
      return readPublicKeyFile(spec);
    } catch (err) {
      if (err instanceof SignatureError) throw new UpdateError('USAGE', 'accept-key', spec, err.message);
      throw err;
    }
  }
  throw new UpdateError('USAGE', 'accept-key', spec, `--accept-key ${spec}: ${parsed.problem} (give the base64 key \`overpack keygen\` printed, or its .pub file)`);
}

export class KeyRule {
  constructor(readonly pinned: Buffer | null, readonly accepted: Buffer | null) {}

  /** Throws REFUSED_KEY unless a bundle signed by `signer` (null: unsigned) may replace this one. */
  check(signer: Buffer | null, label: string): Buffer {
    if (!signer) throw new UpdateError('REFUSED_KEY', 'check-key', label, `the update at ${label} is not signed; refused (an update must be signed by this bundle's publisher)`);
    if (this.pinned?.equals(signer) || this.accepted?.equals(signer)) return signer;
    if (!this.pinned) throw new UpdateError('REFUSED_KEY', 'check-key', label, `this bundle is not signed, so nothing tells its publisher's updates from anyone else's; the update is signed by key ${fingerprint(signer)} (${signer.toString('base64')}): to trust it, pass --accept-key ${signer.toString('base64')}`);
    throw new UpdateError('REFUSED_KEY', 'check-key', label, `the update at ${label} is signed by key ${fingerprint(signer)}, not by this bundle's key ${fingerprint(this.pinned)}; refused. If the publisher told you their key changed, and to this one, pass --accept-key ${signer.toString('base64')}`);
  }
}

