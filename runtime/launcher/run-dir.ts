/**
 * The run directory: private (mkdtemp, 0700) in the temporary directory, holding this launch's
 * `bin/node`, a discarded run's upper and the private fusermount link. It is removed when the
 * launch ends; a runtime killed with SIGKILL cannot do that, so every launch first removes the
 * run directories of launches that are gone. Each records who made it (`owner`: the pid and
 * the process's start time, so a reused pid is not taken for the same process).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processStartTime as startTime } from './proc-stat.js';

const PREFIX = 'overpack-';
const OWNER = 'owner';

export function makeRunDir(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}${name}-`));
  // Written beside and renamed into place: a launch cleaning up at this moment must never read
  // an empty owner file (and take the directory for abandoned).
  const tmp = path.join(dir, `${OWNER}.tmp`);
  fs.writeFileSync(tmp, `${process.pid} ${startTime('self') ?? ''}\n`);
  fs.renameSync(tmp, path.join(dir, OWNER));
  return dir;
}

/** Removes run directories of ours whose launch no longer runs. Best effort, never throws. */
export function removeAbandonedRunDirs(): void {
  const tmp = os.tmpdir();
  let names: string[];
  try {
    names = fs.readdirSync(tmp).filter((n) => n.startsWith(PREFIX));
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const n of names) {
    const dir = path.join(tmp, n);
    try {
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== uid) continue;
      const [pid, started] = fs.readFileSync(path.join(dir, OWNER), 'utf8').trim().split(' ');
      if (started && startTime(Number(pid)) === started) continue; // still running
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* not one of ours (no owner file), or already gone */
    }
  }
}
