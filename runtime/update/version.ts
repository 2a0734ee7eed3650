/**
 * Whether an update would go back to an older version: a replayed old bundle, genuinely signed,
 * is how an attacker who can answer for the update URL keeps users on a version with a known
 * hole. Versions are the manifest's free-form strings; two that both read as semantic versions
 * (1, 1.2, 1.2.3, with a -prerelease and +build) are compared as such, others are not compared.
 */
interface Parsed {
  nums: [number, number, number];
  pre: string[];
}

function parse(v: string): Parsed | null {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/.exec(v.trim());
  if (!m) return null;
  return { nums: [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)], pre: m[4] ? m[4].split('.') : [] };
}

/** <0 when a is older than b, 0 when the same, >0 when newer; null when they cannot be compared. */
export function compareVersions(a: string, b: string): number | null {
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb) return null;
  for (let i = 0; i < 3; i++) if (pa.nums[i] !== pb.nums[i]) return pa.nums[i]! - pb.nums[i]!;
  // A release is newer than its prereleases; prereleases compare field by field (semver 2.0 §11).
  if (!pa.pre.length || !pb.pre.length) return pb.pre.length - pa.pre.length;
  for (let i = 0; i < Math.max(pa.pre.length, pb.pre.length); i++) {
    const x = pa.pre[i];
    const y = pb.pre[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (x === y) continue;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) return Number(x) - Number(y);
    if (nx !== ny) return nx ? -1 : 1;
    return x < y ? -1 : 1;
  }
  return 0;
}
