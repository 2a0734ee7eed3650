/** Fields of /proc/<pid>/stat after the command name: [0] is field 3 (state) of proc(5). */
import fs from 'node:fs';

export function procStatFields(pid: number | 'self'): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** The start time of process `pid` in clock ticks since boot (field 22): tells a process from a later one with its pid. */
export function processStartTime(pid: number | 'self'): string | null {
  return procStatFields(pid)?.[19] ?? null;
}
