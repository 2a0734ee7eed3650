/**
 * Updating a bundle in place from the URL its manifest names (or `--from`): read the new
 * bundle's end (footer, signature, index, tree) with one or two range requests, refuse it
 * unless it is signed by this bundle's key (or a new key the user named), plan what can be
 * copied from this bundle (plan.ts), fetch the rest into `<bundle>.part` (part.ts: resumable),
 * check the result completely (signature by the pinned key, index, every file's BLAKE3, the
 * addons, the runtime executable) and rename it over this bundle, keeping its mode. A running
 * instance keeps its old inode; the app's preserved data is never touched.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ImageError, readImage, type OpenedImage } from '../image/format.js';
import { fingerprint } from '../image/signature.js';
import { validateManifest, type Manifest } from '../manifest/validate.js';
import { UpdateError } from './errors.js';
import { checkAssembled, replace } from './finish.js';
import { fullDownload } from './full.js';
import { KeyRule, parseAcceptKey } from './keys.js';
import { lockUpdate, PartFile } from './part.js';
import { makePlan, type Plan } from './plan.js';
import { formatBytes, Progress } from './progress.js';
import { covers, subtract, total } from './ranges.js';
import { compareVersions } from './version.js';
import { identityOf, KnownBytes, readEnd, readIndexAndTree, treeStart } from './remote.js';
import { openSource, type Fetched, type RemoteSource } from './source.js';

/**
 * The first request asks for this much of the end: the footer, the signature, the index and,
 * for most apps, the tree. Bigger trees cost one more request; a bigger first request would
 * fetch data bytes that may be copied from the old bundle instead.
 */
export const TAIL_BYTES = 64 << 10;
/** Retries of a cut transfer within one run (then the run stops and the next resumes). */
const RETRIES = [1000, 3000];

export interface UpdateOptions {
  /** The bundle to update (a symlink is followed: its target is replaced). */
  bundle: string;
  /** A URL or a file; default: the manifest's update.url. */
  from?: string;
  /** Substituted for `{channel}` in the URL [default: the manifest's update.channel]. */
  channel?: string;
  /** Only say whether an update exists. */
  check?: boolean;
  /** The new signer's key (base64 as `overpack keygen` prints it, a PEM, or a .pub file): a key change is accepted only when named. */
  acceptKey?: string;
  /** Accept a version older than this bundle's (refused by default: see version.ts). */
  allowDowngrade?: boolean;
  /** Asked before anything is downloaded (the launcher's prompt); false stops with nothing changed. */
  confirm?: (question: string) => Promise<boolean>;
  say: (message: string) => void;
  env?: NodeJS.ProcessEnv;
  progress?: NodeJS.WriteStream;
}

export interface UpdateResult {
  state: 'up-to-date' | 'available' | 'updated' | 'declined';
  /** What was (or, with check, would be) downloaded, and copied from the old bundle. */
  fetched: number;
  copied: number;
  size: number;
  fullDownload: boolean;
  resumed: number;
  from: string;
  version?: string;
  oldVersion?: string;
  sameRuntime?: boolean;
}

function manifestOf(img: OpenedImage): Manifest | null {
  return validateManifest(img.index.manifest).manifest;
}

/** Where updates come from: --from, else the manifest's URL with its channel. */
export function updateSource(manifest: Manifest | null, from: string | undefined, channel: string | undefined): string {
  if (from) return from;
  const u = manifest?.update;
  if (!u) throw new UpdateError('USAGE', 'source', '', `this bundle names no update URL (its manifest has no update.url); pass the new bundle's URL or file with --from`);
  const ch = channel ?? u.channel;
  if (u.url.includes('{channel}') && !ch) throw new UpdateError('USAGE', 'source', u.url, `the update URL ${u.url} needs a channel; pass one with --channel`);
  return ch ? u.url.replaceAll('{channel}', encodeURIComponent(ch)) : u.url;
}

async function collect(f: Fetched): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of f.chunks) parts.push(c);
  return Buffer.concat(parts);
}


/** Throws DOWNGRADE when `version` is older than `current` (and the user did not allow it). */
export function refuseDowngrade(opts: UpdateOptions, current: string | undefined, version: string | undefined, label: string): void {
  if (opts.allowDowngrade || current === undefined || version === undefined) return;
  const c = compareVersions(version, current);
  if (c !== null && c < 0) throw new UpdateError('DOWNGRADE', 'check-version', label, `the bundle at ${label} is version ${version}, older than this one (${current}); refused (an old bundle served again would bring its old bugs back). To go back on purpose, pass --allow-downgrade (--overpack-allow-downgrade)`);
}

export async function runUpdate(opts: UpdateOptions): Promise<UpdateResult> {
  let bundle: string;
  try {
    bundle = fs.realpathSync(opts.bundle);
  } catch (err) {
    throw new UpdateError('USAGE', 'open', opts.bundle, `${opts.bundle}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such bundle' : (err as Error).message}`);
  }
  let local: OpenedImage;
  try {
    local = readImage(bundle);
  } catch (err) {
    if (err instanceof ImageError) throw new UpdateError('DAMAGED', 'read-local', bundle, `${err.message}; it cannot be updated in place: download it again`);
    throw err;
  }
  try {
    const manifest = manifestOf(local);
    const spec = updateSource(manifest, opts.from, opts.channel);
    const keys = new KeyRule(local.signature?.publicKey ?? null, opts.acceptKey ? parseAcceptKey(opts.acceptKey) : null);
    const source = openSource(spec, opts.env ?? process.env);
    try {
      return await updateFrom(opts, bundle, local, manifest, source, keys);
    } finally {
      source.close();
    }
  } finally {
    fs.closeSync(local.fd);
  }
}

async function updateFrom(opts: UpdateOptions, bundle: string, local: OpenedImage, manifest: Manifest | null, source: RemoteSource, keys: KeyRule): Promise<UpdateResult> {
  const label = source.label;
  const oldVersion = manifest?.version;
  const name = manifest?.name ?? path.basename(bundle);
  const tail = await source.tail(TAIL_BYTES);
  if (!tail.ranged) return fullDownload(opts, bundle, local, source, keys, tail, oldVersion);
  const known = new KnownBytes();
  known.add(tail.start, await collect(tail));
  const end = readEnd(known, tail.total, label);
  const signer = keys.check(end.signature?.publicKey ?? null, label);
  const base = { from: label, size: end.size, fullDownload: false, resumed: 0, oldVersion };
  if (end.size === local.size && end.identity.equals(identityOf(local))) {
    opts.say(`${name} ${oldVersion ?? ''} is up to date (${label})`);
    return { ...base, state: 'up-to-date', fetched: 0, copied: 0, version: oldVersion };
  }
  // The index, then the tree: whatever of them the first request did not cover.
  const fetchBefore = async (start: number) => {
    const lowest = known.lowestStart();
    if (start < lowest) known.add(start, await collect(await source.range(start, lowest, end.size)));
  };
  await fetchBefore(end.footer.indexOffset);
  const ts = treeStart(known, end);
  if (ts === null) throw new UpdateError('DAMAGED', 'read-remote', label, `the update at ${label} is not a usable bundle: its index does not match its hash or does not say where its tree is`);
  await fetchBefore(ts);
  const remote = readIndexAndTree(known, end, label);
  const remoteManifest = validateManifest(remote.index.manifest);
  if (!remoteManifest.manifest) throw new UpdateError('DAMAGED', 'read-remote', label, `the update at ${label} has an invalid manifest:\n  ${remoteManifest.problems.join('\n  ')}`);
  const version = remoteManifest.manifest.version;
  refuseDowngrade(opts, oldVersion, version, label);
  if (manifest && remoteManifest.manifest.name !== manifest.name) opts.say(`warning: the update is the app "${remoteManifest.manifest.name}", this bundle is "${manifest.name}" (its preserved data is kept under the old name)`);
  let plan = makePlan(local, remote, [[known.lowestStart(), end.size]]);
  const summary = `${name} ${oldVersion ?? '?'} -> ${version}: download ${formatBytes(plan.fetchBytes + end.size - known.lowestStart())} of ${formatBytes(end.size)} (${plan.sameRuntime ? 'same runtime' : 'new runtime'}), signed by ${fingerprint(signer)}`;
  if (opts.check) {
    opts.say(`update available: ${summary}`);
    return { ...base, state: 'available', fetched: plan.fetchBytes, copied: plan.copyBytes, version, sameRuntime: plan.sameRuntime };
  }
  if (opts.confirm && !(await opts.confirm(`Update ${summary}?`))) return { ...base, state: 'declined', fetched: 0, copied: 0, version };
  const unlock = lockUpdate(bundle);
  try {
    const { part, resumed } = PartFile.open(bundle, end.size, end.identity, label);
    if (resumed > 0) opts.say(`resuming an interrupted update: ${formatBytes(resumed)} already in place`);
    let ok = false;
    try {
      // What the first requests brought is part of the new bundle too.
      for (const [s, e] of subtract([[known.lowestStart(), end.size]], part.done)) {
        part.write(known.slice(s, e)!, s);
        part.mark(s, e);
      }
      plan = makePlan(local, remote, part.done);
      opts.say(`updating ${summary.replace(/: download [^(]*\(/, ': fetching ' + formatBytes(plan.fetchBytes) + ' (')}${plan.copyBytes ? `; ${formatBytes(plan.copyBytes)} copied from this bundle` : ''}`);
      await assemble(opts, local, source, part, plan, end.size);
      let verified = await checkAssembled(part, remote, signer);
      if (verified.problem && verified.retry.length) {
        // Bytes copied from this bundle were not what the new bundle has (this bundle is damaged,
        // or a frame's stored bytes differ): fetched instead, once.
        opts.say(`${verified.problem}; fetching those ${formatBytes(total(verified.retry))} from ${label} instead of copying them`);
        part.unmark(verified.retry);
        const again = makePlan(local, remote, part.done, false);
        await assemble(opts, local, source, part, again, end.size);
        verified = await checkAssembled(part, remote, signer);
      }
      if (verified.problem) throw new UpdateError('DAMAGED', 'verify', label, `the downloaded update does not check out (${verified.problem}); refused, ${bundle} is unchanged. The download was discarded: run the update again, and if it fails the same way, the bundle at ${label} is damaged`);
      replace(part, bundle);
      ok = true;
      opts.say(`updated ${bundle}: ${name} ${oldVersion ?? '?'} -> ${version}; fetched ${formatBytes(source.received)} (${plan.copyBytes ? `${formatBytes(plan.copyBytes)} copied from the old bundle` : 'nothing copied'})`);
      return { ...base, state: 'updated', fetched: source.received, copied: plan.copyBytes, resumed, version, sameRuntime: plan.sameRuntime };
    } catch (err) {
      if (err instanceof UpdateError && (err.code === 'INTERRUPTED' || err.code === 'NO_NETWORK')) {
        // Kept for the next run (the state names only bytes that are on disk).
        part.checkpoint();
        part.close();
        if (err.code === 'NO_NETWORK') throw new UpdateError('INTERRUPTED', err.op, err.where, `${err.message}. The part downloaded so far is kept: run the update again to continue`);
        throw err;
      }
      if (!ok) part.discard();
      throw err;
    }
  } finally {
    unlock();
  }
}

/** Copies from the old bundle, then fetches (with a progress bar and a few retries); returns bytes fetched. */
async function assemble(opts: UpdateOptions, local: OpenedImage, source: RemoteSource, part: PartFile, plan: Plan, size: number): Promise<number> {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const c of plan.copies) {
    for (let done = 0; done < c.length; ) {
      const n = fs.readSync(local.fd, buf, 0, Math.min(buf.length, c.length - done), c.from + done);
      if (n === 0) throw new UpdateError('DAMAGED', 'read-local', local.bundle, `${local.bundle} ends before its own records say: it is damaged; download it again`);
      part.write(buf.subarray(0, n), c.to + done);
      done += n;
    }
    part.markCopied(c.to, c.to + c.length);
  }
  part.checkpoint();
  const progress = new Progress(plan.fetchBytes, opts.progress ?? process.stderr);
  let fetched = 0;
  try {
    for (const range of plan.fetches) {
      for (let attempt = 0; ; attempt++) {
        const todo = subtract([range], part.done);
        if (todo.length === 0) break;
        try {
          for (const [s, e] of todo) {
            const f = await source.range(s, e, size);
            let pos = s;
            for await (const chunk of f.chunks) {
              part.write(chunk, pos);
              part.mark(pos, pos + chunk.length);
              pos += chunk.length;
              fetched += chunk.length;
              progress.add(chunk.length);
            }
          }
        } catch (err) {
          if (!(err instanceof UpdateError) || (err.code !== 'INTERRUPTED' && err.code !== 'NO_NETWORK') || attempt >= RETRIES.length) throw err;
          part.checkpoint();
          await new Promise((r) => setTimeout(r, RETRIES[attempt]));
        }
      }
    }
  } finally {
    progress.finish();
  }
  part.checkpoint();
  if (!covers(part.done, 0, size)) throw new UpdateError('INTERRUPTED', 'assemble', part.bundle, 'the new bundle is not complete; run the update again');
  return fetched;
}

