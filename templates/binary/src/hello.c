/* A native binary app: prints its arguments and the app dir, exits with the number given by
 * `--exit N`. Build: cc -O2 -static -o bin/hello src/hello.c (done by the template's build.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  const char *appdir = getenv("APPDIR");
  printf("hello from a native binary in %s\n", appdir ? appdir : "(no APPDIR)");
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc) return atoi(argv[i + 1]);
    printf("arg: %s\n", argv[i]);
  }
  return 0;
}
