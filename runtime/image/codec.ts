/**
 * How a frame of the image's data is stored: the one list of codecs, the `--compression`
 * setting, and encoding and decoding a frame. To add a codec: an id here, its encoder and
 * decoder in `encodeFrame`/`decodeFrame`, its name in COMPRESSIONS.
 *
 * zstd comes from our addon (runtime/fuse/lowlevel/codec.c), the same for the builder and
 * every runtime whatever their Node version. Each frame is independent: a read decodes only
 * the frame its bytes are in.
 */
import { loadAddon } from '../native/addon.js';
import { OverpackError } from '../errors/overpack-error.js';

/** Codec ids as stored in piece refs (tree-layout.ts). Never renumber: old images keep them. */
export const CODEC_IDS = { raw: 0, zero: 1, zstd: 2 } as const;
export type CodecName = keyof typeof CODEC_IDS;
const CODEC_NAMES = new Map<number, CodecName>(Object.entries(CODEC_IDS).map(([k, v]) => [v, k as CodecName]));

/** What `--compression` accepts. */
export const COMPRESSIONS = ['none', 'zstd'] as const;
export type Compression = { codec: 'none' } | { codec: 'zstd'; level: number };
/** Chosen by measurement (bench/README.md, "image writing"): near the best ratio at build speed. */
export const DEFAULT_COMPRESSION: Compression = { codec: 'zstd', level: 9 };
/**
 * The runtime executable's (builder/loader.ts): compressed once per runtime and cached, so a
 * slower level costs only the first build; decompressed once per machine.
 */
export const DEFAULT_RUNTIME_COMPRESSION: Compression = { codec: 'zstd', level: 12 };
const ZSTD_LEVELS = [1, 19] as const;

export class CodecError extends OverpackError {
  declare readonly op: 'parse' | 'encode' | 'decode';
  constructor(op: 'parse' | 'encode' | 'decode', message: string) {
    super('CODEC', op, null, message);
  }
}

export function codecName(id: number): CodecName | undefined {
  return CODEC_NAMES.get(id);
}

/** Parses `none`, `zstd` or `zstd:LEVEL`; throws CodecError saying what is accepted. */
export function parseCompression(spec: string, byDefault: Compression = DEFAULT_COMPRESSION): Compression {
  const [name, level, extra] = spec.split(':');
  if (name === 'none' && level === undefined) return { codec: 'none' };
  if (name === 'zstd' && extra === undefined) {
    if (level === undefined) return byDefault.codec === 'zstd' ? byDefault : DEFAULT_COMPRESSION;
    const n = Number(level);
    if (Number.isInteger(n) && n >= ZSTD_LEVELS[0] && n <= ZSTD_LEVELS[1]) return { codec: 'zstd', level: n };
  }
  throw new CodecError('parse', `unknown compression ${JSON.stringify(spec)}: use none, zstd or zstd:LEVEL (LEVEL ${ZSTD_LEVELS[0]}-${ZSTD_LEVELS[1]}; zstd alone is level ${(byDefault.codec === 'zstd' ? byDefault : DEFAULT_COMPRESSION as { level: number }).level})`);
}

export function describeCompression(c: Compression): string {
  return c.codec === 'none' ? 'none' : `zstd:${c.level}`;
}

/**
 * A frame's stored form: compressed when that makes it smaller, else raw (incompressible data
 * costs nothing to read). All-zero frames are not stored at all (CODEC_IDS.zero).
 */
export function encodeFrame(bytes: Buffer, c: Compression): { codec: number; stored: Buffer } {
  if (isZero(bytes)) return { codec: CODEC_IDS.zero, stored: Buffer.alloc(0) };
  if (c.codec === 'zstd') {
    const packed = loadAddon().zstdCompress(bytes, c.level);
    if (packed.length < bytes.length) return { codec: CODEC_IDS.zstd, stored: packed };
  }
  return { codec: CODEC_IDS.raw, stored: bytes };
}

/**
 * Decodes a frame into `out` (exactly its decoded length). Throws CodecError when the stored
 * bytes do not decode to exactly that many bytes: a damaged frame never yields wrong-sized data.
 */
export function decodeFrame(codec: number, stored: Buffer, out: Buffer): void {
  switch (codec) {
    case CODEC_IDS.zero:
      out.fill(0);
      return;
    case CODEC_IDS.raw:
      if (stored.length !== out.length) throw new CodecError('decode', `a raw frame of ${stored.length} bytes should hold ${out.length}`);
      stored.copy(out);
      return;
    case CODEC_IDS.zstd: {
      const rc = loadAddon().zstdDecompress(stored, out);
      if (rc === -1) throw new CodecError('decode', `the zstd frame does not say it holds ${out.length} bytes`);
      if (rc !== 0) throw new CodecError('decode', 'the zstd frame is damaged');
      return;
    }
    default:
      throw new CodecError('decode', `unknown codec ${codec}`);
  }
}

function isZero(b: Buffer): boolean {
  // Compare 8 bytes at a time where the buffer allows; most data fails on its first word.
  const n = b.length;
  let i = 0;
  if (b.byteOffset % 8 === 0) {
    const words = new BigUint64Array(b.buffer, b.byteOffset, Math.floor(n / 8));
    for (; i < words.length; i++) if (words[i] !== 0n) return false;
    i *= 8;
  }
  for (; i < n; i++) if (b[i] !== 0) return false;
  return n > 0;
}
