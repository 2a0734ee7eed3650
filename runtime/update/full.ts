/**
 * A server that ignores range requests: the whole bundle comes in answer to the first one. It
 * is written as it arrives (no resume is possible without ranges), then checked and put in
 * place like any update.
 */
import fs from 'node:fs';
import { ImageError, readImage, type OpenedImage } from '../image/format.js';
import { verifyImage } from '../image/verify.js';
import { validateManifest } from '../manifest/validate.js';
import { UpdateError } from './errors.js';
import { problemsOf, replace } from './finish.js';
import type { KeyRule } from './keys.js';
import { lockUpdate, PartFile, partPaths } from './part.js';
import { formatBytes, Progress } from './progress.js';
import { identityOf, IDENTITY_BYTES } from './remote.js';
import type { Fetched, RemoteSource } from './source.js';
import { refuseDowngrade, type UpdateOptions, type UpdateResult } from './update.js';

export async function fullDownload(opts: UpdateOptions, bundle: string, local: OpenedImage, source: RemoteSource, keys: KeyRule, first: Fetched, oldVersion: string | undefined): Promise<UpdateResult> {
  const label = source.label;
  const base = { from: label, size: first.total, fullDownload: true, resumed: 0, oldVersion };
  const localId = identityOf(local);
  if (opts.check) {
    // Only the end matters; nothing is written.
    let last = Buffer.alloc(0);
    for await (const c of first.chunks) last = Buffer.concat([last, c]).subarray(-IDENTITY_BYTES);
    const same = first.total === local.size && last.equals(localId);
    opts.say(same ? `up to date (${label}, which does not answer range requests: the whole bundle was read to tell)` : `update available at ${label} (${formatBytes(first.total)}, the server does not answer range requests: an update downloads all of it)`);
    return { ...base, state: same ? 'up-to-date' : 'available', fetched: first.total, copied: 0 };
  }
  if (opts.confirm && !(await opts.confirm(`Download the whole new bundle (${formatBytes(first.total)}) from ${label}? (the server does not answer range requests)`))) {
    first.abort();
    return { ...base, state: 'declined', fetched: 0, copied: 0 };
  }
  opts.say(`${label} does not answer range requests: downloading the whole bundle (${formatBytes(first.total)}), then checking it`);
  const unlock = lockUpdate(bundle);
  try {
    const { part } = PartFile.open(bundle, first.total, Buffer.from(`full:${first.total}`), label, false);
    let ok = false;
    try {
      const progress = new Progress(first.total, opts.progress ?? process.stderr);
      let pos = 0;
      try {
        for await (const c of first.chunks) {
          part.write(c, pos);
          pos += c.length;
          progress.add(c.length);
        }
      } catch (err) {
        if (err instanceof UpdateError && err.code === 'INTERRUPTED') throw new UpdateError('INTERRUPTED', err.op, err.where, `${err.message.replace(/; run the update again.*$/, '')}; without range requests it cannot resume: run the update again to start over`);
        throw err;
      } finally {
        progress.finish();
      }
      part.checkpoint();
      let img: OpenedImage;
      try {
        img = readImage(partPaths(bundle).part);
      } catch (err) {
        if (err instanceof ImageError) throw new UpdateError('DAMAGED', 'read-remote', label, `the update at ${label} is not a usable bundle: ${err.message}`);
        throw err;
      }
      let signer: Buffer;
      let remoteVersion: string | undefined;
      try {
        signer = keys.check(img.signature?.publicKey ?? null, label);
        if (first.total === local.size && identityOf(img).equals(localId)) {
          opts.say(`up to date (${label})`);
          return { ...base, state: 'up-to-date', fetched: first.total, copied: 0, version: oldVersion };
        }
        const report = await verifyImage(img, { executable: true });
        const problems = problemsOf(report, img, signer);
        remoteVersion = validateManifest(img.index.manifest).manifest?.version;
        refuseDowngrade(opts, oldVersion, remoteVersion, label);
        if (problems.length) throw new UpdateError('DAMAGED', 'verify', label, `the downloaded update does not check out (${problems.join('; ')}); refused, ${bundle} is unchanged`);
      } finally {
        fs.closeSync(img.fd);
      }
      replace(part, bundle);
      ok = true;
      opts.say(`updated ${bundle} to ${remoteVersion ?? '?'}: fetched the whole bundle (${formatBytes(first.total)}; the server does not answer range requests)`);
      return { ...base, state: 'updated', fetched: first.total, copied: 0, version: remoteVersion };
    } finally {
      if (!ok) part.discard();
    }
  } finally {
    unlock();
  }
}
