/**
 * A ranged copy between two descriptors done by the kernel (copy_file_range), off the main
 * thread: what copy-up from the image needs and Node lacks (`fs.copyFile` copies whole files
 * only). It lives in our libfuse 3 addon because that is the native code we already build and
 * ship; where the addon cannot load, callers fall back to reading and writing in JS.
 */
import { tryAddon } from './addon.js';
import { errnoError } from './syscalls.js';

/** Copies `length` bytes; resolves with the bytes copied (fewer: the source ended early). */
export type CopyRange = (inFd: number, inOffset: number, outFd: number, outOffset: number, length: number) => Promise<number>;

let cached: CopyRange | null | undefined;

/** The addon's copy, or null where the addon is not available (fuse-native only). */
export function kernelCopyRange(): CopyRange | null {
  if (cached !== undefined) return cached;
  const copy = tryAddon()?.copyRange;
  // An addon built from older sources lacks it.
  if (typeof copy !== 'function') return (cached = null);
  const native = copy;
  cached = (inFd, inOffset, outFd, outOffset, length) =>
    new Promise((resolve, reject) =>
      native(inFd, inOffset, outFd, outOffset, length, (errno, copied) => {
        if (errno === 0) return resolve(copied);
        reject(errnoError(errno, 'copy_file_range'));
      }),
    );
  return cached;
}
