/**
 * The app manifest (`overpack.json`), defined once: this JSON Schema is what `overpack build`
 * and the runtime validate against (ajv; see validator.ts), what the TypeScript type
 * `Manifest` is derived from, and what `npm run build` writes to `dist/overpack.schema.json`
 * for editors. `x-hint` is ours: the words an error about that field uses.
 */
import type { FromSchema } from 'json-schema-to-ts';
import { INODE_MODES } from '../overlay/inodes.js';

/**
 * Environment names the runtime sets or relies on: the manifest's `env` cannot set them (build
 * error), and the runtime drops them from a manifest anyway (an index made by hand).
 */
export const RESERVED_ENV = ['APPDIR', 'ARGV0', 'OWD', 'PATH', 'NODE_OPTIONS'] as const;
export const RESERVED_ENV_PREFIX = 'OVERPACK_';

export const ON_EXIT = ['preserve', 'discard'] as const;
/** Seconds a preserved app's mount stays served after its last launch exits (see mount-server.ts). */
export const LINGER_SECONDS = { default: 5, max: 3600 } as const;

export const MANIFEST_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://overpack.dev/schema/overpack.json',
  title: 'overpack app manifest (overpack.json)',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'entrypoint'],
  properties: {
    $schema: { type: 'string' },
    name: {
      type: 'string',
      pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$',
      description: 'App name; also names its data and mount directories',
      'x-hint': 'letters, digits, ".", "_" and "-" only, starting with a letter or digit, at most 64 characters',
    },
    version: { type: 'string', minLength: 1, 'x-hint': 'must be a non-empty string' },
    entrypoint: {
      type: 'string',
      minLength: 1,
      pattern: '^(?!/)(?!.*(^|/)\\.\\.(/|$)).+$',
      description: "Path inside the app dir: native binary, shebang script, or .js/.mjs/.cjs (run on the bundle's own Node)",
      'x-hint': 'must be a relative path inside the app directory (no leading "/", no "..")',
    },
    args: { type: 'array', items: { type: 'string' }, description: "Arguments put before the user's", 'x-hint': 'must be an array of strings' },
    env: {
      type: 'object',
      description: `Extra environment for the app. Names the runtime sets are reserved: ${RESERVED_ENV.join(', ')} and every ${RESERVED_ENV_PREFIX}* name`,
      'x-hint': 'must be an object of strings',
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]*$', not: { anyOf: [{ enum: RESERVED_ENV }, { pattern: `^${RESERVED_ENV_PREFIX}` }] } },
      additionalProperties: { type: 'string', pattern: '^[^\\u0000]*$', 'x-hint': 'must be a string without NUL characters' },
    },
    overlay: {
      type: 'object',
      additionalProperties: false,
      'x-hint': 'must be an object',
      properties: {
        onExit: { enum: ON_EXIT, default: 'preserve' },
        inodeMode: { enum: INODE_MODES, default: 'virtual' },
        writeback: {
          type: 'boolean',
          default: false,
          description: "The kernel's writeback cache for the app's writes: far fewer FUSE requests for many small writes (SQLite); costs: README, FUSE bindings",
          'x-hint': 'must be true or false',
        },
        passthrough: {
          type: 'boolean',
          default: false,
          description: "FUSE passthrough of the app's upper files where the mount server may have it (root, Linux >= 6.9): the kernel reads and writes them with no request each (SQLite, large writes); every open and close then costs a request; README, FUSE bindings",
          'x-hint': 'must be true or false',
        },
        linger: {
          type: 'number',
          minimum: 0,
          maximum: LINGER_SECONDS.max,
          default: LINGER_SECONDS.default,
          description: 'Seconds the mount stays served after the app exits, so a relaunch starts with warm caches; 0 unmounts at once (the environment variable OVERPACK_LINGER overrides it)',
          'x-hint': `must be a number of seconds from 0 to ${LINGER_SECONDS.max}`,
        },
      },
    },
    desktop: {
      type: 'object',
      additionalProperties: false,
      description: 'The menu entry and icon that --overpack-integrate (or `overpack integrate`) installs for desktop users',
      'x-hint': 'must be an object',
      properties: {
        name: { type: 'string', minLength: 1, pattern: '^[^\\n\\r]+$', description: 'Shown name [default: the app name]', 'x-hint': 'must be a non-empty string on one line' },
        comment: { type: 'string', minLength: 1, pattern: '^[^\\n\\r]+$', description: 'A one-line description (a tooltip)', 'x-hint': 'must be a non-empty string on one line' },
        icon: {
          type: 'string',
          minLength: 1,
          pattern: '^(?!/)(?!.*(^|/)\\.\\.(/|$)).+$',
          description: 'Path inside the app dir of a PNG (square, at least 128 px) or an SVG; checked at build',
          'x-hint': 'must be a relative path inside the app directory (no leading "/", no "..") to a PNG or SVG',
        },
        categories: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9-]+$' }, description: 'freedesktop menu categories, e.g. ["Utility"]', 'x-hint': 'must be an array of category names (letters, digits and "-"), e.g. ["Utility", "Development"]' },
        mimeTypes: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$' }, description: 'File types the app opens: the entry then passes files (%F)', 'x-hint': 'must be an array of MIME types such as "text/plain"' },
        keywords: { type: 'array', items: { type: 'string', minLength: 1, pattern: '^[^;\\n\\r]+$' }, description: 'Search words for the menu', 'x-hint': 'must be an array of words (no ";" or newlines)' },
        terminal: { type: 'boolean', default: false, description: 'Run in a terminal window', 'x-hint': 'must be true or false' },
        startupWMClass: { type: 'string', minLength: 1, pattern: '^[^\\n\\r]+$', description: "The app window's WM_CLASS, so the dock groups it with its entry", 'x-hint': 'must be a non-empty string on one line' },
      },
    },
    update: {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      description: 'Where new versions of this bundle are published: --overpack-update (or `overpack update`) fetches only what changed. A bundle with an update section must be signed, and an update is accepted only when signed by the same key',
      'x-hint': 'must be an object with the url that always serves the latest bundle, e.g. { "url": "https://example.org/myapp-latest.run" }',
      properties: {
        url: {
          type: 'string',
          pattern: '^(https?|file)://[^\\s]+$',
          description: 'The URL that always serves the latest bundle (http range requests are all the server needs); {channel} in it is replaced by the channel',
          'x-hint': 'must be an http://, https:// or file:// URL without spaces',
        },
        channel: {
          type: 'string',
          pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$',
          description: 'The release line this bundle follows ("stable", "beta"): replaces {channel} in the url',
          'x-hint': 'letters, digits, ".", "_" and "-" only, starting with a letter or digit, at most 64 characters',
        },
      },
    },
    security: {
      type: 'object',
      additionalProperties: false,
      description: 'Signature policy, enforced by the runtime before anything is mounted or run',
      'x-hint': 'must be an object',
      properties: {
        requireSignature: { type: 'boolean', default: false, description: 'Refuse to run unless the bundle carries a valid Ed25519 signature (overpack build --sign)', 'x-hint': 'must be true or false' },
        publicKey: {
          type: 'string',
          description: 'The Ed25519 key that must have signed the bundle: base64 of its raw 32 bytes (as `overpack keygen` prints it) or a PEM public key; implies requireSignature',
          'x-hint': 'must be a string (base64 of the raw key, as `overpack keygen` prints it, or a PEM public key)',
        },
      },
      not: { type: 'object', required: ['publicKey', 'requireSignature'], properties: { requireSignature: { const: false } } },
      'x-not-hint': 'publicKey: a required signer contradicts requireSignature: false (drop one of them)',
    },
  },
} as const;

export type Manifest = FromSchema<typeof MANIFEST_SCHEMA>;
