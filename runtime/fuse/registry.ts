/** The FUSE bindings by name: OVERPACK_FUSE_BINDING picks one, the default is the fastest. */
import type { FuseBinding } from './binding.js';
import { OverpackError } from '../errors/overpack-error.js';

const BINDINGS: Record<string, () => Promise<FuseBinding>> = {
  fuse3: async () => (await import('./fuse3.js')).fuse3Binding,
  'fuse-native': async () => (await import('./fuse-native.js')).fuseNativeBinding,
};
const DEFAULT_BINDING = 'fuse3';

/** OVERPACK_FUSE_BINDING names a binding that does not exist. */
export class UnknownBindingError extends OverpackError {
  constructor(readonly wanted: string) {
    super('UNKNOWN_BINDING', 'choose-binding', null, `unknown FUSE binding "${wanted}" in OVERPACK_FUSE_BINDING (known: ${Object.keys(BINDINGS).join(', ')})`);
  }
}

/** The binding OVERPACK_FUSE_BINDING names, else the default where its addon loads, else fuse-native. */
export async function chooseBinding(wanted = process.env.OVERPACK_FUSE_BINDING): Promise<FuseBinding> {
  if (!wanted) {
    // The default binding's addon is optional (built only where libfuse3-dev was present).
    const binding = await BINDINGS[DEFAULT_BINDING]!();
    if (binding.available()) return binding;
    return BINDINGS['fuse-native']!();
  }
  const load = BINDINGS[wanted];
  if (!load) throw new UnknownBindingError(wanted);
  return load();
}
