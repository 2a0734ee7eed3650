/**
 * What happens to the writable layer once the overlay is unmounted:
 * - preserve: the upper stays (minus the engine's scratch dir) and mounts again next time;
 * - discard: the upper is deleted;
 * - commit / commit-atomic: the upper is merged into the lower, then deleted (see commit.ts);
 *   on failure the upper is kept and the error says why.
 */
import { promises as fsp } from 'node:fs';
import { OverlayError } from './errors.js';
import { WORK_DIR } from './whiteout.js';
import { commitUpper, commitUpperAtomic, describeCommit } from './commit.js';

export type OverlayAction = 'preserve' | 'discard' | 'commit' | 'commit-atomic';
export const OVERLAY_ACTIONS: readonly OverlayAction[] = ['preserve', 'discard', 'commit', 'commit-atomic'];

export interface FinalizeResult {
  action: OverlayAction;
  /** Human-readable one-line summary. */
  summary: string;
}

export async function finalizeUpper(action: OverlayAction, lower: string | null, upper: string): Promise<FinalizeResult> {
  switch (action) {
    case 'preserve':
      await fsp.rm(`${upper}/${WORK_DIR}`, { recursive: true, force: true });
      return { action, summary: `kept the writable layer at ${upper}` };
    case 'discard':
      await fsp.rm(upper, { recursive: true, force: true });
      return { action, summary: `discarded the writable layer ${upper}` };
    case 'commit':
    case 'commit-atomic':
      if (lower === null) {
        throw new OverlayError('FINALIZE_FAILED', action, upper, `${action} needs a lower directory on disk; this lower is read-only`);
      }
      try {
        const sum = action === 'commit' ? await commitUpper(lower, upper) : await commitUpperAtomic(lower, upper);
        return {
          action,
          summary: describeCommit(sum, upper, lower),
        };
      } catch (err) {
        throw new OverlayError('FINALIZE_FAILED', action, upper, (err as Error).message, { cause: err });
      }
  }
}
