/**
 * How a runtime executable is made for a given Node: which SEA tooling, and the strip tool
 * that takes the debug symbols out of the binary first (18-33 MB of an official build, which
 * nothing at run time reads: see the README for the launch times, stripped and not).
 */
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { hostTarget, type Target } from '../runtime/native/targets.js';
import { BuildError } from '../runtime/image/writer.js';
import type { ChosenNode } from './node-choice.js';

export interface StripTool {
  command: string;
  /** Its name and version: part of the runtime cache key, as another strip may give other bytes. */
  identity: string;
}

export interface SeaMethod {
  /** `build-sea`: `node --build-sea` (Node >= 25.5) writes the executable; `postject`: blob + injection. */
  name: 'build-sea' | 'postject';
  strip: StripTool | null;
}

function atLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/** binutils' strip for the target's architecture, as Debian names it; null if not installed. */
function stripTool(target: Target): StripTool | null {
  const candidates = target === hostTarget() ? ['strip'] : target === 'linux-arm64' ? ['aarch64-linux-gnu-strip'] : ['x86_64-linux-gnu-strip'];
  for (const command of candidates) {
    try {
      const out = execFileSync(command, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      return { command, identity: `${command}: ${out.split('\n')[0]}` };
    } catch {
      // not installed: try the next
    }
  }
  return null;
}

export function seaMethod(node: ChosenNode, warn: (m: string) => void): SeaMethod {
  const name = atLeast(node.version, 25, 5) ? 'build-sea' : 'postject';
  const strip = process.env.OVERPACK_STRIP === '0' ? null : stripTool(node.target);
  if (!strip && process.env.OVERPACK_STRIP !== '0') {
    warn(`no strip tool for ${node.target} found (${node.target === 'linux-arm64' ? 'apt-get install binutils-aarch64-linux-gnu' : 'apt-get install binutils'}): the bundle keeps Node's symbols and is about 20-33 MB bigger`);
  }
  return { name, strip };
}

/** Copies `node` to `dest` as the runtime's base, stripped of symbols when a strip tool exists. */
export function prepareRuntimeBinary(node: string, dest: string, method: SeaMethod): void {
  fs.copyFileSync(node, dest);
  fs.chmodSync(dest, 0o755);
  if (!method.strip) return;
  try {
    // --strip-all drops .symtab and debug info; .dynsym, which addons link against, stays.
    execFileSync(method.strip.command, ['--strip-all', dest], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    throw new BuildError(node, 'strip', `${method.strip.command} --strip-all failed on a copy of ${node}: ${(err as Error).message}; set OVERPACK_STRIP=0 to build without stripping`);
  }
}
