/**
 * Whether the app is a Node script: a `.js`, `.cjs` or `.mjs` entrypoint, or an npm-style bin
 * without that name (`bin/tsc`, `node_modules/.bin/x`) whose first line runs plain `node`. A
 * Node script runs on the bundle's Node directly (held at a gate while the mount comes up, or
 * in the launch's own process: in-process.ts) instead of through its `#!` line, which would
 * start it the same way one process later. A `#!` line that gives node options
 * (`#!/usr/bin/env -S node --flag`) keeps its own way: running it here would drop them.
 *
 * The name alone decides for the first kind; the second is read once from the image, before
 * the mount exists (`learnEntrypoint`), and remembered per manifest.
 */
import path from 'node:path';
import type { Manifest } from '../manifest/schema.js';
import { entryType, type Layer } from '../overlay/layer.js';

const JS_NAME = /\.(c|m)?js$/;
const NODE_SHEBANG = /^#!\s*(?:\/usr\/bin\/env\s+node|(?:\/\S*)?\/node)[ \t]*\r?$/;
/** Bytes enough for any `#!` line the kernel runs (it reads at most 256). */
const FIRST_LINE_BYTES = 256;
/** Links followed from the entrypoint before giving up (as the kernel's ELOOP would, sooner). */
const MAX_LINKS = 8;

const scripts = new WeakMap<Manifest, boolean>();

export function isJsEntrypoint(manifest: Manifest): boolean {
  return JS_NAME.test(manifest.entrypoint) || scripts.get(manifest) === true;
}

/** Reads, from the image, whether an entrypoint without a .js name is a Node script. */
export async function learnEntrypoint(manifest: Manifest, layer: Layer): Promise<void> {
  if (JS_NAME.test(manifest.entrypoint) || scripts.has(manifest)) return;
  scripts.set(manifest, await isNodeScript(layer, path.posix.resolve('/', manifest.entrypoint)));
}

async function isNodeScript(layer: Layer, start: string): Promise<boolean> {
  let p = start;
  for (let links = 0; links <= MAX_LINKS; links++) {
    const st = await layer.lstat(p);
    if (!st) return false;
    const type = entryType(st.mode);
    if (type === 'symlink') {
      p = path.posix.resolve(path.posix.dirname(p), await layer.readlink(p));
      if (JS_NAME.test(p)) return true;
      continue;
    }
    if (type !== 'file') return false;
    const file = await layer.open(p);
    try {
      const head = Buffer.alloc(FIRST_LINE_BYTES);
      const n = await file.read(head, 0, head.length, 0);
      const firstLine = head.subarray(0, n).toString('latin1').split('\n')[0]!;
      return NODE_SHEBANG.test(firstLine);
    } finally {
      await file.close();
    }
  }
  return false;
}
