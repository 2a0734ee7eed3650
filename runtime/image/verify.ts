/**
 * Checking a whole bundle: its signature over every byte, every file against its BLAKE3 (and
 * big files piece by piece, as the runtime reads them), every addon against its SHA-256, and
 * optionally the runtime executable against its record. `overpack verify` and the updater
 * (runtime/update/) use this one implementation.
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { Blake3, blake3 } from '../hash/blake3.js';
import { ContentError, ContentReader } from './content.js';
import { ImageError, type ImageEntry, type OpenedImage } from './format.js';
import { digestPrefix, fingerprint, signatureMatches } from './signature.js';
import { TreeError } from './tree-layout.js';
import { HASH_SIZE } from './tree-layout.js';
import { loadAddon } from '../native/addon.js';

export type SignatureCheck =
  | { state: 'none' }
  | { state: 'valid'; signer: string; publicKey: Buffer }
  | { state: 'invalid'; signer: string; publicKey: Buffer };

export interface VerifyReport {
  signature: SignatureCheck;
  /** Paths of files (and `addon NAME`, `executable`) whose bytes do not match. */
  bad: string[];
  /** Files and addons checked. */
  items: number;
  /** The runtime executable against index.executable: null when not asked or not recorded. */
  executable: boolean | null;
}

/** The files of an image's tree; an inconsistent tree is an ImageError naming it. */
export function treeFiles(img: OpenedImage): ImageEntry[] {
  try {
    return [...img.tree.walk()].filter((e) => e.type === 'file');
  } catch (err) {
    if (err instanceof TreeError) throw new ImageError(img.bundle, 'read-index', err.message);
    throw err;
  }
}

/** The signature trailer's check: the SHA-256 of every byte before it, against the signer's key. */
export function checkSignature(img: OpenedImage): SignatureCheck {
  const sig = img.signature;
  if (!sig) return { state: 'none' };
  const signer = fingerprint(sig.publicKey);
  const ok = signatureMatches(sig, digestPrefix(img.fd, sig.signedLength, img.bundle));
  return { state: ok ? 'valid' : 'invalid', signer, publicKey: sig.publicKey };
}

/**
 * Every distinct content decoded piece by piece: the whole file's BLAKE3, and for big files
 * each piece's; then the addons (stored raw, SHA-256). Returns the paths that do not match.
 */
export async function checkContents(img: OpenedImage, files: ImageEntry[] = treeFiles(img)): Promise<string[]> {
  const bad: string[] = [];
  const reader = new ContentReader(img.fd, img.tree);
  const checked = new Map<string, boolean>();
  for (const e of files) {
    let ok = checked.get(e.hash!);
    if (ok === undefined) {
      const r = img.tree.lookup(e.path)!;
      const h = new Blake3();
      ok = true;
      try {
        for (let k = 0; k < e.pieces!.length; k++) {
          const bytes = await reader.piece(r, k);
          h.update(bytes);
          if (e.pieceHashes && blake3(bytes).compare(e.pieceHashes, k * HASH_SIZE, (k + 1) * HASH_SIZE) !== 0) ok = false;
        }
      } catch (err) {
        if (!(err instanceof ContentError)) throw err;
        ok = false;
      }
      if (h.digest().toString('hex') !== e.hash) ok = false;
      checked.set(e.hash!, ok);
    }
    if (!ok) bad.push(e.path);
  }
  for (const a of img.index.addons) {
    const buf = Buffer.allocUnsafe(a.size);
    const n = fs.readSync(img.fd, buf, 0, a.size, a.offset);
    if (n !== a.size || createHash('sha256').update(buf).digest('hex') !== a.hash) bad.push(`addon ${a.name}`);
  }
  return bad;
}

/**
 * The runtime executable against index.executable: the bundle's first bytes when stored raw,
 * else the loader's zstd frame decompressed. null when the index does not record it.
 */
export function checkExecutable(img: OpenedImage): boolean | null {
  const exe = img.index.executable;
  if (!exe) return null;
  const loader = img.index.loader;
  if (!loader) return digestPrefix(img.fd, exe.size, img.bundle).toString('hex') === exe.sha256;
  // The front as stored, where the index records its hash: the builder hashed the loader and
  // the frame it made of this very runtime (and the loader checks zstd's checksum of the frame
  // when it decompresses it), so decompressing 100+ MB again here would prove nothing more.
  if (loader.sha256 !== undefined) return digestPrefix(img.fd, loader.size + loader.frameLength, img.bundle).toString('hex') === loader.sha256;
  const frame = Buffer.allocUnsafe(loader.frameLength);
  if (fs.readSync(img.fd, frame, 0, frame.length, loader.size) !== frame.length) return false;
  const out = Buffer.allocUnsafe(exe.size);
  if (loadAddon().zstdDecompress(frame, out) !== 0) return false;
  return createHash('sha256').update(out).digest('hex') === exe.sha256;
}

/** Everything above, in that order: the signature first (it covers every byte). */
export async function verifyImage(img: OpenedImage, opts: { executable?: boolean } = {}): Promise<VerifyReport> {
  const signature = checkSignature(img);
  const files = treeFiles(img);
  const bad = await checkContents(img, files);
  const executable = opts.executable ? checkExecutable(img) : null;
  if (executable === false) bad.push('executable');
  return { signature, bad, items: files.length + img.index.addons.length, executable };
}
