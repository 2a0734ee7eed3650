/**
 * Which Node lines this overpack knows, and what each is: the one table to update per release.
 * Dates from the Node release schedule (https://github.com/nodejs/release#release-schedule).
 */
export interface NodeLine {
  major: number;
  /** 'active' and 'maintenance' are LTS; 'current' is an odd or not yet LTS line. */
  status: 'active' | 'maintenance' | 'current';
  endOfLife: string; // YYYY-MM-DD
}

export const NODE_LINES: readonly NodeLine[] = [
  { major: 26, status: 'active', endOfLife: '2029-04-30' },
  { major: 24, status: 'maintenance', endOfLife: '2028-04-30' },
  { major: 22, status: 'maintenance', endOfLife: '2027-04-30' },
  { major: 27, status: 'current', endOfLife: '2027-06-01' },
];

/**
 * The line a bundle gets when no Node is named: 24, because the official Node 26 builds need
 * libatomic.so.1, which minimal systems lack (a Debian 11 minbase root, slim containers), so a
 * Node 26 bundle does not even start there. See the README ("Bundles": the default Node).
 */
export const DEFAULT_LINE = 24;

/** The newest line in LTS: what `--node-version lts` means. */
export function newestLtsLine(): number {
  return Math.max(...NODE_LINES.filter((l) => l.status !== 'current').map((l) => l.major));
}

/**
 * Why a Node version is past its end of life, or null. Lines this table does not list are
 * judged by their number: even lines older than the oldest listed one and odd lines older
 * than the newest listed odd one are over (an odd line lives about 8 months).
 */
export function endOfLifeReason(version: string, today = new Date()): string | null {
  const major = Number(/^v?(\d+)/.exec(version)?.[1]);
  if (!Number.isFinite(major)) return null;
  const line = NODE_LINES.find((l) => l.major === major);
  if (line) return today.toISOString().slice(0, 10) > line.endOfLife ? `Node ${major} reached its end of life on ${line.endOfLife}` : null;
  const oldestEven = Math.min(...NODE_LINES.filter((l) => l.major % 2 === 0).map((l) => l.major));
  const newestOdd = Math.max(...NODE_LINES.filter((l) => l.major % 2 === 1).map((l) => l.major));
  if (major % 2 === 0 && major < oldestEven) return `Node ${major} is past its end of life (Node ${oldestEven} is the oldest line still supported)`;
  if (major % 2 === 1 && major < newestOdd) return `Node ${major} is past its end of life (odd lines are supported until about two months after the next even line)`;
  return null;
}
