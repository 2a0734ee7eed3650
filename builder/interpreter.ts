/**
 * The interpreter a script entrypoint names in its `#!` line, and whether the build machine or
 * the app itself has it. A missing one is worth a warning at build time: at run time the
 * script cannot start wherever the interpreter is missing too.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The program a `#!` line runs: its first word, or for `/usr/bin/env [-S] [opts] NAME` the NAME. */
export function shebangProgram(firstLine: string): { program: string; viaEnv: boolean } | null {
  if (!firstLine.startsWith('#!')) return null;
  const words = firstLine.slice(2).trim().split(/\s+/).filter(Boolean);
  const first = words[0];
  if (!first) return null;
  if (path.basename(first) !== 'env') return { program: first, viaEnv: false };
  const name = words.slice(1).find((w) => !w.startsWith('-') && !w.includes('='));
  return name ? { program: name, viaEnv: true } : null;
}

function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

/** A warning for an entrypoint whose interpreter is nowhere to be found, or null. */
export function missingInterpreter(appDir: string, entrypoint: string): string | null {
  let first: string;
  try {
    const fd = fs.openSync(path.join(appDir, entrypoint), 'r');
    const buf = Buffer.alloc(256);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    fs.closeSync(fd);
    first = buf.subarray(0, n).toString('utf8').split('\n')[0]!;
  } catch {
    return null;
  }
  const shebang = shebangProgram(first);
  if (!shebang) return null;
  const { program, viaEnv } = shebang;
  // The bundle puts its own Node on the app's PATH.
  if (viaEnv && program === 'node') return null;
  const found = viaEnv ? onPath(program) || fs.existsSync(path.join(appDir, 'bin', program)) : fs.existsSync(program);
  if (found) return null;
  return `${entrypoint} starts with "${first.trim()}", but ${program} is not installed on this machine${viaEnv ? ' (not on PATH)' : ''}; the bundle will not start where it is missing too. Install it, point the #! line at an interpreter the target machines have, or ship the interpreter inside the app`;
}
