/**
 * Compiled as CommonJS so these are plain require() calls: esbuild follows them into the
 * single-executable bundle, where nothing can be required from disk.
 */
export function loadBundledFuseNative(): unknown {
  return require('fuse-native');
}
