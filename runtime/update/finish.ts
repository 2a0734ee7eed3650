/**
 * The end of an update: the assembled bundle checked completely (verify.ts: signature by the
 * accepted key, every file's BLAKE3, the addons, the runtime front; the manifest), and put in
 * the old bundle's place with one rename.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ImageError, readImage, type OpenedImage } from '../image/format.js';
import { fingerprint } from '../image/signature.js';
import { verifyImage, type VerifyReport } from '../image/verify.js';
import { validateManifest } from '../manifest/validate.js';
import { UpdateError } from './errors.js';
import { partPaths, type PartFile } from './part.js';
import { normalize, subtract, type Range } from './ranges.js';
import type { RemoteImage } from './remote.js';

/** What is wrong with a checked bundle (empty: nothing), signed by `signer` when given. */
export function problemsOf(report: VerifyReport, img: OpenedImage, signer: Buffer | null): string[] {
  const problems: string[] = [];
  if (report.signature.state !== 'valid') problems.push(report.signature.state === 'none' ? 'it is not signed' : 'its signature does not match its bytes');
  else if (signer && !report.signature.publicKey.equals(signer)) problems.push(`it is signed by ${report.signature.signer}, not ${fingerprint(signer)}`);
  if (report.bad.length) problems.push(`${report.bad.length} item(s) do not match their hashes: ${report.bad.slice(0, 5).join(', ')}${report.bad.length > 5 ? ', ...' : ''}`);
  if (!validateManifest(img.index.manifest).manifest) problems.push('its manifest is invalid');
  return problems;
}

/** The complete check of the assembled bundle; on failure, the copied ranges worth fetching instead. */
export async function checkAssembled(part: PartFile, remote: RemoteImage, signer: Buffer): Promise<{ problem: string | null; retry: Range[] }> {
  const file = partPaths(part.bundle).part;
  let img: OpenedImage;
  try {
    img = readImage(file);
  } catch (err) {
    if (err instanceof ImageError) return { problem: err.message.replace(`${file}: `, ''), retry: [] };
    throw err;
  }
  try {
    if (!img.footer.indexHash.equals(remote.footer.indexHash)) return { problem: 'its index is not the one announced', retry: [] };
    const report = await verifyImage(img, { executable: true });
    const problems = problemsOf(report, img, signer);
    if (!problems.length) return { problem: null, retry: [] };
    return { problem: problems.join('; '), retry: copiedSuspects(part, report.bad, img, remote) };
  } finally {
    fs.closeSync(img.fd);
  }
}

/**
 * Which copied ranges to fetch again after a failed check: those of the bad items when every
 * bad item was copied (a damaged old bundle); everything copied when only the signature failed
 * (a copied frame whose stored bytes differ). A bad item that was fetched means the download
 * itself is damaged: nothing to retry.
 */
function copiedSuspects(part: PartFile, bad: string[], img: OpenedImage, remote: RemoteImage): Range[] {
  const copied = part.copiedRanges;
  if (!copied.length) return [];
  const itemRanges: Range[] = [];
  for (const item of bad) {
    if (item === 'executable') itemRanges.push([0, img.footer.imageStart]);
    else if (item.startsWith('addon ')) {
      const a = img.index.addons.find((x) => `addon ${x.name}` === item);
      if (a) itemRanges.push([a.offset, a.offset + a.size]);
    } else {
      const r = remote.tree.lookup(item);
      if (r?.type === 'file') for (let k = 0; k * (1 << 20) < r.size; k++) {
        const ref = remote.tree.pieceRef(r, k);
        if (ref.storedLength) itemRanges.push([ref.position, ref.position + ref.storedLength]);
      }
    }
  }
  if (!itemRanges.length) return copied;
  const ranges = normalize(itemRanges);
  return subtract(ranges, copied).length === 0 ? ranges : [];
}

/** The assembled bundle takes the old one's place: mode (and owner, as root) kept, one rename. */
export function replace(part: PartFile, bundle: string): void {
  const { part: file, state } = partPaths(bundle);
  try {
    const st = fs.statSync(bundle);
    fs.fchmodSync(part.fd, st.mode & 0o7777);
    if (process.getuid?.() === 0) {
      try {
        fs.fchownSync(part.fd, st.uid, st.gid);
      } catch {
        /* keep ours */
      }
    }
    fs.fsyncSync(part.fd);
    part.close();
    fs.renameSync(file, bundle);
    fs.rmSync(state, { force: true });
    try {
      const dir = fs.openSync(path.dirname(bundle), 'r');
      fs.fsyncSync(dir);
      fs.closeSync(dir);
    } catch {
      /* the rename is done; syncing the directory only makes it durable sooner */
    }
  } catch (err) {
    throw new UpdateError('CANT_WRITE', 'replace', bundle, `cannot put the new bundle in place of ${bundle}: ${(err as Error).message}`);
  }
}

