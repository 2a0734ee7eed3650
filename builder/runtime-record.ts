/**
 * What the index records of the runtime executable (`RuntimeRecord`): its size, SHA-256 and
 * where its single-executable fuse is. Kept beside a cached runtime executable, so a build
 * reads the 100 MB file once per runtime, not once per bundle.
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import type { RuntimeRecord } from '../runtime/image/format.js';

/** The sentinel postject and `node --build-sea` look for; the byte after the colon is the fuse. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export function runtimeRecord(exe: string): RuntimeRecord {
  const sidecar = `${exe}.record.json`;
  try {
    const cached = JSON.parse(fs.readFileSync(sidecar, 'utf8')) as RuntimeRecord;
    if (cached.size === fs.statSync(exe).size) return cached;
  } catch {
    /* not made yet */
  }
  const bytes = fs.readFileSync(exe);
  const marker = Buffer.from(`${SEA_FUSE}:`);
  const at = bytes.indexOf(marker);
  if (at < 0 || bytes[at + marker.length] !== 0x31) throw new Error(`${exe} is not a single-executable application (no flipped SEA fuse)`);
  const record: RuntimeRecord = { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), seaFuse: at + marker.length };
  fs.writeFileSync(sidecar, JSON.stringify(record));
  return record;
}
