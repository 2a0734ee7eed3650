/**
 * BLAKE3, the one place it comes from. @napi-rs/blake-hash is native, many times faster than
 * the `blake3` npm package's wasm (bench/README, figures behind the code). Swap the
 * implementation here only.
 */
import { fsPromises } from '../builtins.js';
import blakeHash from '@napi-rs/blake-hash';

interface Blake3HasherLike {
  update(input: Buffer | Uint8Array): this;
  digestBuffer(): Buffer;
}
interface BlakeHashModule {
  blake3(input: Buffer | Uint8Array): Buffer;
  Blake3Hasher: new () => Blake3HasherLike;
}
// A static import, so esbuild can bundle it into the single-executable runtime.
const blake = blakeHash as unknown as BlakeHashModule;

export const HASH_BYTES = 32;

export function blake3(data: Uint8Array): Buffer {
  return blake.blake3(data);
}

export class Blake3 {
  private readonly hasher = new blake.Blake3Hasher();
  update(data: Uint8Array): this {
    this.hasher.update(data);
    return this;
  }
  digest(): Buffer {
    return this.hasher.digestBuffer();
  }
}

/** Hash a file's contents, streaming in 1 MiB chunks. */
export async function blake3File(path: string): Promise<Buffer> {
  const fh = await fsPromises().open(path, 'r');
  try {
    const h = new Blake3();
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest();
  } finally {
    await fh.close();
  }
}
