/** Sets of byte ranges [start, end): what an update has written, what it still needs. */
export type Range = [number, number];

/** Sorted, disjoint and merged (touching ranges become one). */
export function normalize(ranges: Range[]): Range[] {
  const sorted = ranges.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** `from` without anything in `minus` (both normalized or not). */
export function subtract(from: Range[], minus: Range[]): Range[] {
  const cut = normalize(minus);
  const out: Range[] = [];
  for (const [s0, e] of normalize(from)) {
    let s = s0;
    for (const [cs, ce] of cut) {
      if (ce <= s) continue;
      if (cs >= e) break;
      if (cs > s) out.push([s, cs]);
      s = Math.max(s, ce);
      if (s >= e) break;
    }
    if (s < e) out.push([s, e]);
  }
  return out;
}

/** Whether [start, end) lies wholly inside `ranges`. */
export function covers(ranges: Range[], start: number, end: number): boolean {
  return subtract([[start, end]], ranges).length === 0;
}

export function total(ranges: Range[]): number {
  return ranges.reduce((n, [s, e]) => n + (e - s), 0);
}

/**
 * Neighbouring ranges joined when the gap between them is at most `gap` bytes: one request
 * instead of two costs the gap's bytes again and saves a round trip.
 */
export function coalesce(ranges: Range[], gap: number): Range[] {
  const out: Range[] = [];
  for (const [s, e] of normalize(ranges)) {
    const last = out[out.length - 1];
    if (last && s - last[1] <= gap) last[1] = e;
    else out.push([s, e]);
  }
  return out;
}
