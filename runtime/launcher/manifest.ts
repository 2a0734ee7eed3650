/**
 * The app manifest, `overpack.json` at the root of an app directory. Its JSON Schema is
 * builder/overpack.schema.json; this validator checks the same rules and names the field and
 * the problem in every message. Unknown fields are errors, not silently ignored.
 */
import { parsePublicKeyText } from '../image/signature.js';

export interface Manifest {
  name: string;
  version: string;
  /** Path inside the app directory: a native binary, a script with a shebang, or .js/.mjs/.cjs. */
  entrypoint: string;
  args?: string[];
  env?: Record<string, string>;
  overlay?: { onExit?: 'preserve' | 'discard'; inodeMode?: 'virtual' | 'persistent' };
  /**
   * Signature policy, enforced by the runtime before anything is mounted or run:
   * `requireSignature` refuses a bundle without a valid signature; `publicKey` (base64 of the
   * raw Ed25519 key, or a PEM public key) names the key that must have signed it, and implies
   * `requireSignature`.
   */
  security?: { requireSignature?: boolean; publicKey?: string };
}

/**
 * Environment names the runtime sets or relies on: the manifest's `env` cannot set them (build
 * error), and the runtime drops them from a manifest anyway (an index made by hand).
 */
export const RESERVED_ENV = ['APPDIR', 'ARGV0', 'OWD', 'PATH', 'NODE_OPTIONS'];
export const RESERVED_ENV_PREFIX = 'OVERPACK_';

export function isReservedEnv(name: string): boolean {
  return RESERVED_ENV.includes(name) || name.startsWith(RESERVED_ENV_PREFIX);
}

const TOP = ['name', 'version', 'entrypoint', 'args', 'env', 'overlay', 'security', '$schema'];
const OVERLAY = ['onExit', 'inodeMode'];
const SECURITY = ['requireSignature', 'publicKey'];
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function validateManifest(value: unknown): { manifest: Manifest | null; problems: string[] } {
  const problems: string[] = [];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { manifest: null, problems: ['the manifest must be a JSON object'] };
  const m = value as Record<string, unknown>;
  for (const k of Object.keys(m)) if (!TOP.includes(k)) problems.push(`${k}: unknown field (known: ${TOP.filter((t) => t !== '$schema').join(', ')})`);
  const str = (k: string, re?: RegExp, hint?: string) => {
    if (typeof m[k] !== 'string' || (m[k] as string).length === 0) problems.push(`${k}: required, a non-empty string`);
    else if (re && !re.test(m[k] as string)) problems.push(`${k}: ${hint}`);
  };
  str('name', /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" and "-" only, starting with a letter or digit, at most 64 characters');
  str('version');
  str('entrypoint', /^(?!\/)(?!.*(^|\/)\.\.(\/|$)).+$/, 'must be a relative path inside the app directory (no leading "/", no "..")');
  if (m.args !== undefined && (!Array.isArray(m.args) || !m.args.every((a) => typeof a === 'string'))) problems.push('args: must be an array of strings');
  if (m.env !== undefined) {
    if (typeof m.env !== 'object' || m.env === null || Array.isArray(m.env)) problems.push('env: must be an object of strings');
    else {
      for (const [k, v] of Object.entries(m.env)) {
        if (!ENV_NAME.test(k)) problems.push(`env.${JSON.stringify(k)}: not a valid variable name (letters, digits and "_", not starting with a digit)`);
        else if (isReservedEnv(k)) problems.push(`env.${k}: reserved, the runtime sets it (reserved: ${RESERVED_ENV.join(', ')} and every ${RESERVED_ENV_PREFIX}* name)`);
        if (typeof v !== 'string') problems.push(`env.${k}: must be a string`);
        else if (v.includes('\0')) problems.push(`env.${k}: must not contain a NUL character`);
      }
    }
  }
  if (m.overlay !== undefined) {
    if (typeof m.overlay !== 'object' || m.overlay === null || Array.isArray(m.overlay)) problems.push('overlay: must be an object');
    else {
      const o = m.overlay as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!OVERLAY.includes(k)) problems.push(`overlay.${k}: unknown field (known: ${OVERLAY.join(', ')})`);
      if (o.onExit !== undefined && o.onExit !== 'preserve' && o.onExit !== 'discard') problems.push('overlay.onExit: must be "preserve" or "discard"');
      if (o.inodeMode !== undefined && o.inodeMode !== 'virtual' && o.inodeMode !== 'persistent') problems.push('overlay.inodeMode: must be "virtual" or "persistent"');
    }
  }
  if (m.security !== undefined) {
    if (typeof m.security !== 'object' || m.security === null || Array.isArray(m.security)) problems.push('security: must be an object');
    else {
      const o = m.security as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!SECURITY.includes(k)) problems.push(`security.${k}: unknown field (known: ${SECURITY.join(', ')})`);
      if (o.requireSignature !== undefined && typeof o.requireSignature !== 'boolean') problems.push('security.requireSignature: must be true or false');
      if (o.publicKey !== undefined) {
        if (typeof o.publicKey !== 'string') problems.push('security.publicKey: must be a string (base64 of the raw key, as `overpack keygen` prints it, or a PEM public key)');
        else {
          const parsed = parsePublicKeyText(o.publicKey);
          if ('problem' in parsed) problems.push(`security.publicKey: ${parsed.problem}`);
        }
        if (o.requireSignature === false) problems.push('security.publicKey: a required signer contradicts requireSignature: false (drop one of them)');
      }
    }
  }
  return { manifest: problems.length ? null : (m as unknown as Manifest), problems };
}
