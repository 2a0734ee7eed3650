/**
 * Validating an app manifest (`overpack.json`) against its schema (`schema.ts`), with
 * messages that name the field and the problem. Unknown fields are errors, not silently
 * ignored. What a schema cannot say (a public key that parses) is checked here after it.
 */
import type { ErrorObject } from 'ajv';
import { parsePublicKeyText } from '../image/signature.js';
import { MANIFEST_SCHEMA, RESERVED_ENV, RESERVED_ENV_PREFIX, type Manifest } from './schema.js';
import { manifestValidator } from './validator.js';

export { RESERVED_ENV, RESERVED_ENV_PREFIX, type Manifest };

export function isReservedEnv(name: string): boolean {
  return (RESERVED_ENV as readonly string[]).includes(name) || name.startsWith(RESERVED_ENV_PREFIX);
}

interface SchemaNode {
  type?: string;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
  enum?: readonly string[];
  'x-hint'?: string;
  'x-not-hint'?: string;
}

/** The schema node an instance path leads to (a path into the manifest, `/overlay/onExit`). */
function nodeAt(segments: string[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = MANIFEST_SCHEMA as unknown as SchemaNode;
  for (const s of segments) {
    const next: SchemaNode | boolean | undefined = node?.properties?.[s] ?? node?.additionalProperties;
    node = typeof next === 'object' ? next : undefined;
  }
  return node;
}

/** `overlay.onExit`, `env."A=B"`: how a message names a field. */
function fieldName(segments: string[]): string {
  return segments.map((s, i) => (i > 0 && !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s) ? JSON.stringify(s) : s)).join('.');
}

function known(node: SchemaNode | undefined): string {
  return Object.keys(node?.properties ?? {}).filter((k) => k !== '$schema').join(', ');
}

function message(e: ErrorObject): string | null {
  let segments = e.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  // An item of an array is reported as the array: "args: must be an array of strings".
  const arrayAt = segments.findIndex((_, i) => nodeAt(segments.slice(0, i))?.type === 'array');
  if (arrayAt > 0) segments = segments.slice(0, arrayAt);
  const node = nodeAt(segments);
  const at = (extra: string[]) => fieldName([...segments, ...extra]);
  const params = e.params as Record<string, unknown>;
  // A name that fails propertyNames is reported once, by the propertyNames error itself.
  if (e.schemaPath.includes('/propertyNames/')) return null;
  switch (e.keyword) {
    case 'required':
      return `${at([String(params.missingProperty)])}: required`;
    case 'additionalProperties':
      return `${at([String(params.additionalProperty)])}: unknown field (known: ${known(node)})`;
    case 'propertyNames': {
      const name = String(params.propertyName);
      if (isReservedEnv(name)) return `${at([name])}: reserved, the runtime sets it (reserved: ${RESERVED_ENV.join(', ')} and every ${RESERVED_ENV_PREFIX}* name)`;
      return `${at([name])}: not a valid variable name (letters, digits and "_", not starting with a digit)`;
    }
    case 'enum':
      return `${at([])}: must be ${(node?.enum ?? []).map((v) => JSON.stringify(v)).join(' or ')}`;
    case 'not':
      return node?.['x-not-hint'] ? `${at([])}.${node['x-not-hint']}` : `${at([])}: not allowed`;
    default:
      return `${at([])}: ${node?.['x-hint'] ?? e.message ?? 'invalid'}`;
  }
}

export function validateManifest(value: unknown): { manifest: Manifest | null; problems: string[] } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { manifest: null, problems: ['the manifest must be a JSON object'] };
  const validate = manifestValidator();
  const problems: string[] = [];
  if (!validate(value)) {
    for (const e of validate.errors ?? []) {
      const m = message(e);
      if (m && !problems.includes(m)) problems.push(m);
    }
  }
  const key = (value as { security?: { publicKey?: unknown } }).security?.publicKey;
  if (typeof key === 'string') {
    const parsed = parsePublicKeyText(key);
    if ('problem' in parsed) problems.push(`security.publicKey: ${parsed.problem}`);
  }
  return { manifest: problems.length ? null : (value as Manifest), problems };
}
