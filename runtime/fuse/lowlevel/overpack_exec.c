/*
 * overpack-exec PARENT_PID PROGRAM [ARGS...]: runs PROGRAM so that it dies with the runtime.
 *
 * The runtime serves the app's filesystem; an app that outlives a runtime killed with SIGKILL
 * keeps running on a dead mount (and holding its ports, so the next launch fails). The kernel
 * can kill a process when its parent dies (PR_SET_PDEATHSIG), but only the process itself can
 * ask for that, between fork and exec, which Node's spawn does not let us reach. So the runtime
 * spawns this program, which asks for it and then becomes PROGRAM (the setting survives exec).
 * If the runtime died before the request took effect, the parent is no longer PARENT_PID: exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: overpack-exec PARENT_PID PROGRAM [ARGS...]\n");
    return 2;
  }
  long parent = strtol(argv[1], NULL, 10);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) perror("overpack-exec: prctl");
  if ((long)getppid() != parent) return 0; /* the runtime is gone already: nothing to run for */
  execv(argv[2], argv + 2);
  fprintf(stderr, "overpack: error: cannot start %s: %s\n", argv[2], strerror(errno));
  return errno == ENOENT ? 127 : 126;
}
