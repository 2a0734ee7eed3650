/**
 * The new bundle's footer, signature trailer, index and tree, read from the bytes fetched of
 * its end, with the checks the runtime makes of its own bundle (format.ts: footer bounds, the
 * index's SHA-256, the tree's location and root; tree pages against their hashes as they are
 * read). Nothing here trusts the server: a remote that fails a check is a damaged download.
 */
import fs from 'node:fs';
import { decodeFooter, FOOTER_SIZE, FLAG_SIGNED, ImageError, openTree, sha256, type Footer, type ImageIndex, type OpenedImage } from '../image/format.js';
import { decodeTrailer, isTrailer, SignatureError, TRAILER_SIZE, type SignatureTrailer } from '../image/signature.js';
import type { ImageTree } from '../image/tree.js';
import { UpdateError } from './errors.js';

/** Bytes of the remote bundle held in memory, at their positions. */
export class KnownBytes {
  private readonly parts: Array<{ start: number; bytes: Buffer }> = [];

  add(start: number, bytes: Buffer): void {
    this.parts.push({ start, bytes });
    this.parts.sort((a, b) => a.start - b.start);
  }

  /** Where the contiguous bytes that end the file start (everything from there on is known). */
  lowestStart(): number {
    return this.parts.length ? this.parts[0]!.start : Infinity;
  }

  /** Copies bytes at `position` into `buf`; returns how many were known there (stops at a gap). */
  read(buf: Buffer, position: number): number {
    let done = 0;
    while (done < buf.length) {
      const at = position + done;
      const part = this.parts.find((p) => p.start <= at && at < p.start + p.bytes.length);
      if (!part) break;
      done += part.bytes.copy(buf, done, at - part.start, Math.min(part.bytes.length, at - part.start + buf.length - done));
    }
    return done;
  }

  slice(start: number, end: number): Buffer | null {
    const b = Buffer.alloc(end - start);
    return this.read(b, start) === b.length ? b : null;
  }
}

export interface RemoteEnd {
  size: number;
  footer: Footer;
  signature: SignatureTrailer | null;
  /** The last bytes (footer, and trailer when signed): the same bytes mean the same bundle. */
  identity: Buffer;
}

export interface RemoteImage extends RemoteEnd {
  index: ImageIndex;
  tree: ImageTree;
}

/** How many bytes of the end identify a bundle: the footer (with its index hash) and the trailer. */
export const IDENTITY_BYTES = FOOTER_SIZE + TRAILER_SIZE;

function damaged(label: string, message: string): UpdateError {
  return new UpdateError('DAMAGED', 'read-remote', label, `the update at ${label} is not a usable bundle: ${message}`);
}

/** Footer and trailer from the known end of a file of `size` bytes. */
export function readEnd(known: KnownBytes, size: number, label: string): RemoteEnd {
  try {
    let footerEnd = size;
    let signature: SignatureTrailer | null = null;
    if (size >= FOOTER_SIZE + TRAILER_SIZE) {
      const tb = known.slice(size - TRAILER_SIZE, size);
      if (!tb) throw damaged(label, 'its end was not fetched');
      if (isTrailer(tb)) {
        signature = decodeTrailer(tb, size, label);
        footerEnd = size - TRAILER_SIZE;
      }
    }
    const fb = size >= FOOTER_SIZE ? known.slice(footerEnd - FOOTER_SIZE, footerEnd) : null;
    if (!fb) throw damaged(label, 'it is too small to be a bundle');
    const footer = decodeFooter(fb, footerEnd, label);
    const flagged = ((footer.flags ?? 0) & FLAG_SIGNED) !== 0;
    if (flagged !== (signature !== null)) throw damaged(label, flagged ? 'it says it is signed but has no signature block' : 'a signature block follows a footer that does not announce one');
    const identity = known.slice(Math.max(0, size - IDENTITY_BYTES), size)!;
    return { size, footer, signature, identity };
  } catch (err) {
    if (err instanceof ImageError || err instanceof SignatureError) throw damaged(label, err.message.replace(`${label}: `, ''));
    throw err;
  }
}

/** The index and the tree, once the bytes from the tree's start to the end are known. */
export function readIndexAndTree(known: KnownBytes, end: RemoteEnd, label: string): RemoteImage {
  const { footer } = end;
  const ib = known.slice(footer.indexOffset, footer.indexOffset + footer.indexLength);
  if (!ib) throw damaged(label, 'its index was not fetched');
  if (!sha256(ib).equals(footer.indexHash)) throw damaged(label, 'its index does not match its hash');
  let index: ImageIndex;
  try {
    index = JSON.parse(ib.toString('utf8')) as ImageIndex;
  } catch {
    throw damaged(label, 'its index is not valid JSON');
  }
  try {
    const tree = openTree(index, footer, (buf, position) => known.read(buf, position), label);
    return { ...end, index, tree };
  } catch (err) {
    if (err instanceof ImageError) throw damaged(label, err.message.replace(`${label}: `, ''));
    throw err;
  }
}

/** Where the index starts, then (after it is known) where the tree starts: what to fetch before reading them. */
export function treeStart(known: KnownBytes, end: RemoteEnd): number | null {
  const ib = known.slice(end.footer.indexOffset, end.footer.indexOffset + end.footer.indexLength);
  if (!ib || !sha256(ib).equals(end.footer.indexHash)) return null;
  try {
    const t = (JSON.parse(ib.toString('utf8')) as ImageIndex).tree;
    return typeof t?.offset === 'number' && t.offset >= end.footer.imageStart && t.offset <= end.footer.indexOffset ? t.offset : null;
  } catch {
    return null;
  }
}

/** A local bundle's last IDENTITY_BYTES: equal to a remote's, it is the same bundle. */
export function identityOf(img: OpenedImage): Buffer {
  const n = Math.min(IDENTITY_BYTES, img.size);
  const b = Buffer.alloc(n);
  fs.readSync(img.fd, b, 0, n, img.size - n);
  return b;
}
