/**
 * What a binding does with an operation that failed: POSIX answers (ENOENT, EEXIST, ...) go
 * back to the caller silently; anything else (a bug, an I/O error) is also reported once on
 * stderr, since the app only sees a bare errno.
 */
import { toErrno } from '../vfs/index.js';

/** Returns the positive errno to answer with. */
export function failureErrno(op: string, err: unknown): number {
  const errno = toErrno(err);
  const e = err as { name?: string; code?: string } | undefined;
  if (e?.name !== 'FsError' && (errno === 5 || !e?.code)) {
    process.stderr.write(`overpack: ${op} failed: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  return errno;
}
