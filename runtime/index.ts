/**
 * The library's public API (package.json `main`): OverlayFS, the controller that serves the
 * overlay engine at a mountpoint through a FUSE binding (runtime/mount), and the engine's own
 * types and tools (runtime/overlay).
 */
export { OverlayFS, DEFAULT_CACHE_SECONDS, type OverlayHandle, type MountTuning } from './mount/overlayfs.js';
export * from './overlay/index.js';
