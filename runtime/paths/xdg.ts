/**
 * The XDG base directories, computed in one place for the runtime and the builder: the cache
 * root (`$XDG_CACHE_HOME`, default `~/.cache`), the data and state homes, and overpack's own
 * directory in the cache. An empty variable counts as unset, as the XDG spec says. The loader
 * (runtime/loader/overpack_loader.c) computes the cache root the same way in C.
 */
import os from 'node:os';
import path from 'node:path';

export function cacheHome(): string {
  return process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
}

export function dataHome(): string {
  return process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
}

export function stateHome(): string {
  return process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
}

/** `$XDG_CACHE_HOME/overpack` (default `~/.cache/overpack`): what overpack caches, builder and runtime alike. */
export function overpackCache(): string {
  return path.join(cacheHome(), 'overpack');
}
