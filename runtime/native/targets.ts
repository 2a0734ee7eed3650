/**
 * The platforms a bundle can be built for. Each has its own directory of natives
 * (`dist/native/<target>/`) holding what a bundle for it ships.
 */
import { OverpackError } from '../errors/overpack-error.js';
export const TARGETS = ['linux-x64', 'linux-arm64'] as const;
export type Target = (typeof TARGETS)[number];

export function isTarget(value: string): value is Target {
  return (TARGETS as readonly string[]).includes(value);
}

/** The target of the machine this runs on, or null on a platform no bundle is built for. */
export function hostTargetOrNull(): Target | null {
  const tag = `${process.platform}-${process.arch}`;
  return isTarget(tag) ? tag : null;
}

export class UnsupportedPlatformError extends OverpackError {
  constructor(readonly platform: string) {
    super('UNSUPPORTED_PLATFORM', 'host-target', null, `overpack builds bundles for ${TARGETS.join(' and ')}; this machine is ${platform}`);
  }
}

/** The target of the machine this runs on; throws on any other platform. */
export function hostTarget(): Target {
  const target = hostTargetOrNull();
  if (!target) throw new UnsupportedPlatformError(`${process.platform}-${process.arch}`);
  return target;
}
