#ifndef OVERPACK_EXPRESS_H
#define OVERPACK_EXPRESS_H

/*
 * The express relaunch (express.c): where this bundle's mount server serves its mount and has
 * left a plan for it (runtime/launcher/express-plan.ts), runs the app in that mount at once, in
 * this process, without starting the runtime. Returns only when it does not; the loader then
 * starts the runtime as before. `cache_root`: $XDG_CACHE_HOME (or ~/.cache), where the plan is.
 * Returns 1 when the plan's server is gone but this launch is one it served: the runtime will
 * start a mount server again, and the loader may start it now (overpack_loader.c).
 */
int express_relaunch(const char *self, const char *cache_root, char **argv, char **envp);

#endif
