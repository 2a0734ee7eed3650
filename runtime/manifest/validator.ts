/**
 * The manifest schema compiled by ajv, for the `overpack` CLI (loaded on first use: ajv is not
 * part of `overpack mount`'s start-up). Inside a bundle this module is replaced, when the
 * builder bundles the runtime, by ajv's standalone code for the same schema (see
 * `builder/build.ts`): small, nothing compiled at launch (bench/README, one-off measurements).
 */
import { createRequire } from 'node:module';
import type { ValidateFunction } from 'ajv';
import { MANIFEST_SCHEMA } from './schema.js';

let compiled: ValidateFunction | undefined;

export function manifestValidator(): ValidateFunction {
  if (compiled) return compiled;
  const require = createRequire(import.meta.url);
  const { Ajv2020 } = require('ajv/dist/2020.js') as { Ajv2020: new (opts: object) => { compile(schema: object): ValidateFunction } };
  const fn = new Ajv2020(MANIFEST_OPTIONS).compile(MANIFEST_SCHEMA);
  compiled = fn;
  return fn;
}

/** The options both the CLI's and the bundle's validator are compiled with. */
export const MANIFEST_OPTIONS = { allErrors: true, strict: false } as const;
