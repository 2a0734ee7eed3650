/*
 * overpack-loader: the first bytes of a bundle whose runtime is stored compressed.
 *
 * Bundle: [this loader][the runtime executable, one zstd frame][image]. The builder fills in
 * `info` below (found by its magic) with where the frame is. The loader becomes the runtime
 * with the same argv, environment and PID (execve), telling it which bundle it runs through
 * OVERPACK_LOADED_FROM (the runtime reads its image from there instead of its own file):
 *
 * 1. The runtime decompressed before, content-addressed in the user's cache:
 *    $XDG_CACHE_HOME/overpack/runtime/<hash>/overpack-runtime (~/.cache without XDG_CACHE_HOME), shared
 *    by every bundle with the same runtime: exec it. Nothing is decompressed, so a warm launch
 *    costs one exec more than a bundle stored raw. (Not named `node`: a runtime run
 *    under that name acts as node.)
 * 2. Not there: decompress it there (a temporary name, then rename), and exec it.
 * 3. The cache cannot be written, or exec from it is refused (noexec): decompress into a
 *    sealed memfd and exec that (fexecve). 4. memfd exec refused too: a clear error, exit 3.
 * The frame carries zstd's checksum: damaged bytes never run (exit 65, as any damaged bundle).
 * Before all this, a relaunch that finds this bundle's mount server serving may run the app
 * itself, in that mount, without the runtime (express.c).
 *
 * Linked statically (libc and libzstd), so it runs on any Linux of its architecture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <zstd.h>

#include "express.h"

#define EXIT_DAMAGED 65
#define EXIT_CANNOT_RUN 3

/* Filled in by the builder (builder/loader.ts): the magic stays, the zeros become values. */
struct loader_info {
  char magic[16];         /* "OVERPACK-LOADER1" */
  uint64_t frame_offset;  /* where the runtime's zstd frame starts in the bundle */
  uint64_t frame_length;
  uint64_t runtime_size;  /* bytes of the runtime decompressed */
  char key[65];           /* hex SHA-256 of the runtime: the cache's name for it */
};
__attribute__((used)) static volatile const struct loader_info info = {{'O', 'V', 'E', 'R', 'P', 'A', 'C', 'K', '-', 'L', 'O', 'A', 'D', 'E', 'R', '1'}, 0, 0, 0, {0}};

static const char *self_path;

static void fail(int code, const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "overpack: error: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  exit(code);
}

/* Decompresses the frame from `in` into `out` (at its start); NULL, or a message, with
 * *damaged set when the bundle's bytes are at fault (not the output's file system). */
static const char *inflate_runtime(int in, int out, int *damaged) {
  *damaged = 1;
  static char src[1 << 17], dst[1 << 18];
  ZSTD_DStream *ds = ZSTD_createDStream();
  if (!ds) return "out of memory";
  ZSTD_initDStream(ds);
  uint64_t left = info.frame_length, written = 0;
  off_t at = (off_t)info.frame_offset;
  size_t last = 1;
  while (left > 0) {
    ssize_t n = pread(in, src, left < sizeof src ? left : sizeof src, at);
    if (n <= 0) return "the bundle ends inside its runtime (damaged or cut short)";
    at += n;
    left -= (uint64_t)n;
    ZSTD_inBuffer ib = {src, (size_t)n, 0};
    while (ib.pos < ib.size) {
      ZSTD_outBuffer ob = {dst, sizeof dst, 0};
      last = ZSTD_decompressStream(ds, &ob, &ib);
      if (ZSTD_isError(last)) return "its runtime does not decompress (damaged)";
      if (written + ob.pos > info.runtime_size) return "its runtime decompresses to more bytes than recorded (damaged)";
      for (size_t done = 0; done < ob.pos;) {
        ssize_t w = write(out, dst + done, ob.pos - done);
        if (w < 0) {
          *damaged = 0;
          return strerror(errno);
        }
        done += (size_t)w;
      }
      written += ob.pos;
    }
  }
  ZSTD_freeDStream(ds);
  if (last != 0 || written != info.runtime_size) return "its runtime is cut short (damaged)";
  return NULL;
}

static char **env_with_bundle(char **envp) {
  size_t n = 0;
  while (envp[n]) n++;
  char **env = calloc(n + 2, sizeof *env);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], "OVERPACK_LOADED_FROM=", 21) != 0 && strncmp(envp[i], "OVERPACK_SERVER_STARTING=", 25) != 0) env[k++] = envp[i];
  size_t len = strlen(self_path) + 22;
  env[k] = malloc(len);
  snprintf(env[k], len, "OVERPACK_LOADED_FROM=%s", self_path);
  return env;
}

/*
 * The mount server this launch's runtime would start (runtime/launcher/start-mount-server.ts),
 * started now, while the runtime starts up: the same runtime with OVERPACK_SERVE_BUILD and
 * OVERPACK_SERVE_LINGER_MS "auto" (it reads both from its image and manifest, and exits when
 * the app does not linger), in a session of its own with no stdio of ours, cwd /, and its status
 * pipe on descriptor 3. The launch is told the pipe's other end in OVERPACK_SERVER_STARTING and
 * waits on it instead of starting a server (or, if it says nothing good, starts one as before).
 * Returns the launch's environment, with that variable when the server could be started.
 */
static char **with_started_server(char **env, const char *runtime, const char *argv0) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return env;
  pid_t pid = fork();
  if (pid < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return env;
  }
  if (pid == 0) {
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (pipefd[0] != 3) close(pipefd[0]); /* the launch's end (dup2 replaces it if it is 3) */
    if (null < 0 || dup2(pipefd[1], 3) < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 || chdir("/") != 0) _exit(127);
    if (pipefd[1] != 3) close(pipefd[1]);
    if (null > 3) close(null);
    size_t n = 0;
    while (env[n]) n++;
    char **senv = calloc(n + 3, sizeof *senv);
    size_t k = 0;
    if (!senv) _exit(127);
    /* The server makes no TLS connection: the CA file would only slow its Node's start-up. */
    for (size_t i = 0; i < n; i++)
      if (strncmp(env[i], "NODE_EXTRA_CA_CERTS=", 20) != 0) senv[k++] = env[i];
    senv[k++] = "OVERPACK_SERVE_BUILD=auto";
    senv[k++] = "OVERPACK_SERVE_LINGER_MS=auto";
    char *sargv[] = {(char *)argv0, NULL};
    execve(runtime, sargv, senv);
    _exit(127);
  }
  close(pipefd[1]);
  size_t n = 0;
  while (env[n]) n++;
  char **lenv = calloc(n + 2, sizeof *lenv);
  if (!lenv) return env;
  memcpy(lenv, env, n * sizeof *lenv);
  lenv[n] = malloc(48);
  snprintf(lenv[n], 48, "OVERPACK_SERVER_STARTING=%d", pipefd[0]);
  return lenv;
}

/* mkdir -p with private (0700) directories; 0 or -1. */
static int make_dirs(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    int r = mkdir(path, 0700);
    *p = '/';
    if (r != 0 && errno != EEXIST) return -1;
  }
  return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* $XDG_CACHE_HOME, else ~/.cache (as runtime/paths/xdg.ts); 0, or -1 when neither is an absolute path. */
static int cache_root(char *out, size_t size) {
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int n;
  if (xdg && xdg[0] == '/') n = snprintf(out, size, "%s", xdg);
  else if (home && home[0] == '/') n = snprintf(out, size, "%s/.cache", home);
  else return -1;
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The cached runtime's path into `out`; 0, or -1 when there is no cache directory. */
static int cache_path(const char *root, char *out, size_t size, char *dir, size_t dir_size) {
  int n = snprintf(dir, dir_size, "%s/overpack/runtime/%.32s", root, (const char *)info.key);
  if (n < 0 || (size_t)n >= dir_size) return -1;
  n = snprintf(out, size, "%s/overpack-runtime", dir);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

int main(int argc, char **argv, char **envp) {
  (void)argc;
  static char self[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) fail(EXIT_CANNOT_RUN, "cannot find this bundle's own file (/proc/self/exe: %s)%s", strerror(errno), "");
  self[len] = 0;
  self_path = self;
  if (info.frame_length == 0 || info.key[0] == 0) fail(EXIT_DAMAGED, "%s: this bundle's loader was not filled in by overpack build (damaged)%s", self, "");
  char root[PATH_MAX];
  int have_root = cache_root(root, sizeof root) == 0;
  /* A relaunch that joins a lingering mount server: the app at once, no runtime (express.c). */
  int wants_server = have_root && express_relaunch(self, root, argv, envp);
  char **env = env_with_bundle(envp);

  char dir[PATH_MAX] = "(none)", file[PATH_MAX];
  const char *why_no_cache = "no XDG_CACHE_HOME or HOME";
  if (have_root && cache_path(root, file, sizeof file, dir, sizeof dir) == 0) {
    struct stat st;
    if (stat(file, &st) == 0 && (uint64_t)st.st_size == info.runtime_size) {
      if (wants_server) env = with_started_server(env, file, argv[0]);
      execve(file, argv, env);
      why_no_cache = strerror(errno); /* noexec, most likely: memfd below */
    } else if (make_dirs(dir) == 0) {
      char tmp[PATH_MAX + 32];
      snprintf(tmp, sizeof tmp, "%s.tmp-%d", file, (int)getpid());
      int in = open(self, O_RDONLY | O_CLOEXEC);
      int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
      if (in < 0) fail(EXIT_CANNOT_RUN, "cannot read %s: %s", self, strerror(errno));
      if (out >= 0) {
        int damaged;
        const char *err = inflate_runtime(in, out, &damaged);
        if (err && damaged) {
          unlink(tmp);
          fail(EXIT_DAMAGED, "%s: %s; download or build it again", self, err);
        }
        if (close(out) == 0 && !err && rename(tmp, file) == 0) {
          close(in);
          execve(file, argv, env);
        }
        why_no_cache = err ? err : strerror(errno);
        unlink(tmp);
      } else {
        why_no_cache = strerror(errno);
      }
      close(in);
    } else {
      why_no_cache = strerror(errno);
    }
  }

  /* No usable cache: the runtime from memory. */
  int mem = (int)syscall(SYS_memfd_create, "overpack-runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int in = open(self, O_RDONLY | O_CLOEXEC);
  if (in < 0) fail(EXIT_CANNOT_RUN, "cannot read %s: %s", self, strerror(errno));
  if (mem < 0) fail(EXIT_CANNOT_RUN, "cannot start this bundle's runtime: the cache (%s) is unusable and memfd_create failed; set XDG_CACHE_HOME to a writable directory on a filesystem that allows exec%s", why_no_cache, "");
  int damaged;
  const char *err = inflate_runtime(in, mem, &damaged);
  if (err) fail(damaged ? EXIT_DAMAGED : EXIT_CANNOT_RUN, "%s: %s; download or build it again", self, err);
  fcntl(mem, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  fexecve(mem, argv, env);
  fprintf(stderr,
          "overpack: error: cannot start this bundle's runtime: the cache directory %s is unusable (%s) and this system refuses to run programs from memory (%s). "
          "Set XDG_CACHE_HOME to a writable directory on a filesystem mounted without noexec.\n",
          dir, why_no_cache, strerror(errno));
  return EXIT_CANNOT_RUN;
}
