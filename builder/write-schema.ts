/**
 * Build step: writes the manifest's JSON Schema, for editors and other tools, to
 * `dist/overpack.schema.json` (from runtime/manifest/schema.ts, the one definition).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MANIFEST_SCHEMA } from '../runtime/manifest/schema.js';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Our own `x-*` annotations are for messages; a published schema leaves them out. */
const published = JSON.stringify(MANIFEST_SCHEMA, (k, v: unknown) => (k.startsWith('x-') ? undefined : v), 2);
fs.writeFileSync(path.join(dist, 'overpack.schema.json'), `${published}\n`);
