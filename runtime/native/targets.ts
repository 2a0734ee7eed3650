/**
 * The platforms a bundle can be built for. A target names the architecture of the Node
 * runtime and of the native addons a bundle carries (dist/native/<target>/).
 */
export const TARGETS = ['linux-x64', 'linux-arm64'] as const;
export type Target = typeof TARGETS[number];

export function isTarget(value: string): value is Target {
  return (TARGETS as readonly string[]).includes(value);
}

/** The target of the machine running this process. */
export function hostTarget(): Target {
  const tag = `${process.platform}-${process.arch}`;
  if (!isTarget(tag)) throw new Error(`this machine (${tag}) is not one of the supported targets: ${TARGETS.join(', ')}`);
  return tag;
}
