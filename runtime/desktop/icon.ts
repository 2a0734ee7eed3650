/**
 * What an icon file is: a square PNG of at least 128 px or an SVG, as a desktop shows it. The
 * builder refuses anything else (builder/icon.ts); integration picks the icon's directory by it.
 */
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
export const MIN_PNG_SIZE = 128;

export type IconKind = { kind: 'png'; size: number } | { kind: 'svg' };

/** The icon in `bytes` (its first 4 KiB are enough), or why it is not one. */
export function iconKind(bytes: Buffer): IconKind | { problem: string } {
  if (bytes.subarray(0, 8).equals(PNG_SIGNATURE)) {
    // The first chunk is IHDR: width and height, big-endian, at 16 and 20.
    if (bytes.length < 24 || bytes.toString('latin1', 12, 16) !== 'IHDR') return { problem: 'is a damaged PNG (no IHDR chunk)' };
    const width = bytes.readUInt32BE(16);
    const height = bytes.readUInt32BE(20);
    if (width !== height) return { problem: `is ${width}x${height}; an icon must be square` };
    if (width < MIN_PNG_SIZE) return { problem: `is ${width}x${height}; a PNG icon must be at least ${MIN_PNG_SIZE}x${MIN_PNG_SIZE} (or use an SVG)` };
    return { kind: 'png', size: width };
  }
  if (/<svg[\s>]/.test(bytes.toString('utf8', 0, Math.min(bytes.length, 4096)))) return { kind: 'svg' };
  return { problem: 'is neither a PNG nor an SVG' };
}
