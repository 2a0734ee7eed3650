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

/**
 * Whether `pid` is still the process that recorded `started` as its start time. Within two
 * clock ticks: a runtime under qemu-user reads an emulated /proc/self/stat whose start time is
 * the emulator's own reading, a tick or so off the kernel's; a pid reused that fast by another
 * process is not a concern.
 */
export function sameProcess(pid: number, started: string): boolean {
  return startedAs(processStartTime(pid), started);
}

/** Whether a start time read now (`now`, field 22) is the one recorded (`started`), as sameProcess says. */
export function startedAs(now: string | null, started: string): boolean {
  return now !== null && started !== '' && Math.abs(Number(now) - Number(started)) <= 2;
}
