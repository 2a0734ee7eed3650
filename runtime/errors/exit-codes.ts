/**
 * Exit codes of the bundle runtime and of the `overpack` CLI, in one table. 70 is only ever a
 * bug of ours; every cause a user can fix has its own code and a message that names it.
 */
export const EXIT = {
  ok: 0,
  /** The command did not do what was asked, for the reason it names (a build error, nothing to remove). */
  failed: 1,
  /** A bad command line, option or environment setting. */
  usage: 2,
  /** This machine cannot do it: no FUSE, noexec everywhere, user namespaces blocked. */
  unavailable: 3,
  /** `overpack mount`: the mountpoint is already mounted. */
  mountpointBusy: 4,
  /** The bundle is damaged or refused (BSD's EX_DATAERR). */
  dataError: 65,
  /** A bug of ours (EX_SOFTWARE). */
  software: 70,
  /** Busy: another instance holds what is needed; try again when it is done (EX_TEMPFAIL). */
  tempFail: 75,
  /** The app's entrypoint cannot be executed / its interpreter is not found, as a shell says. */
  cannotExecute: 126,
  notFound: 127,
} as const;

/** The exit code of an error's code where it is not the command's own failure. */
export const EXIT_FOR_CODE: Readonly<Record<string, number>> = {
  NO_FUSE: EXIT.unavailable,
  NO_FUSERMOUNT: EXIT.unavailable,
  MOUNTPOINT_BUSY: EXIT.mountpointBusy,
};
