/**
 * Node built-ins loaded where they are first used, not when the runtime starts. esbuild turns
 * each top-level `import` of a built-in into a `require` run when the runtime's script starts,
 * so a launch that never spawns, inflates or hashes would still pay for compiling and running
 * those modules (and what they load: streams, net) before its app runs. A module that needs
 * one on some paths only asks for it here at the use site; types stay those of the module.
 */
import type * as ChildProcess from 'node:child_process';
import type * as Crypto from 'node:crypto';
import type * as FsPromises from 'node:fs/promises';
import type * as Tty from 'node:tty';
import type * as Zlib from 'node:zlib';

interface Lazy {
  'node:child_process': typeof ChildProcess;
  'node:crypto': typeof Crypto;
  'node:fs/promises': typeof FsPromises;
  'node:tty': typeof Tty;
  'node:zlib': typeof Zlib;
}

/**
 * Both ways give the built-in Node has already loaded, or load it now. getBuiltinModule works
 * in an ES module (the compiled dist/ this file also runs as) and needs Node 20.16; a bundle's
 * Node may be older, and there the runtime is CommonJS, whose require loads built-ins.
 */
function builtin<K extends keyof Lazy>(id: K): Lazy[K] {
  const get = process.getBuiltinModule as ((id: string) => unknown) | undefined;
  return (get ? get(id) : require(id)) as Lazy[K];
}

export const childProcess = (): typeof ChildProcess => builtin('node:child_process');
export const crypto = (): typeof Crypto => builtin('node:crypto');
export const fsPromises = (): typeof FsPromises => builtin('node:fs/promises');
export const tty = (): typeof Tty => builtin('node:tty');
export const zlib = (): typeof Zlib => builtin('node:zlib');
