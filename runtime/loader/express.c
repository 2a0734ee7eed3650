/*
 * The express relaunch: a relaunch that joins this bundle's lingering mount server without
 * starting the runtime. The server leaves a plan (its format and why each check is enough:
 * runtime/launcher/express-plan.ts); this file checks the launch against it, registers as the
 * server's client the way a launch of the runtime does (runtime/launcher/instance.ts), and
 * execs the app with the environment runApp would give it (runtime/launcher/app-process.ts).
 * The app then is this process: its pid, stdio, signals and exit status are the bundle's, and
 * the server, which looks at its clients' pids, sees it leave when it exits.
 *
 * Whatever does not check out returns to the loader, which starts the runtime as before: this
 * path may only ever be a faster way to the same result, never another result.
 */
#define _GNU_SOURCE
#include "express.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLAN_MAGIC "OVERPACK-EXPRESS-1"
#define PLAN_MAX (1 << 20)
#define LOCK_MAX (1 << 16)
#define LIST_MAX 100000

/* A whole small file into a malloc'd NUL-terminated buffer; NULL when it cannot be read or is bigger than `max`. */
static char *read_file(int fd, size_t max, size_t *length) {
  char *buf = malloc(max + 1);
  size_t n = 0;
  if (!buf) return NULL;
  for (;;) {
    ssize_t r = read(fd, buf + n, max + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    if (r == 0) {
      buf[n] = 0;
      *length = n;
      return buf;
    }
    n += (size_t)r;
    if (n > max) break;
  }
  free(buf);
  return NULL;
}

static char *read_path(const char *path, size_t max, size_t *length) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  char *buf = read_file(fd, max, length);
  close(fd);
  return buf;
}

struct plan {
  const char *buf;
  size_t length, at;
  int broken;
};

/* The next NUL-terminated field; "" (and `broken` set) past the end. */
static const char *field(struct plan *p) {
  if (p->broken || p->at >= p->length) {
    p->broken = 1;
    return "";
  }
  const char *f = p->buf + p->at;
  const char *end = memchr(f, 0, p->length - p->at);
  if (!end) {
    p->broken = 1;
    return "";
  }
  p->at = (size_t)(end - p->buf) + 1;
  return f;
}

/* A list: its count, then its items; the items stay in the plan's buffer. */
static const char **list(struct plan *p, long *count) {
  char *end;
  const char *f = field(p);
  long n = strtol(f, &end, 10);
  if (!*f || *end || n < 0 || n > LIST_MAX) {
    p->broken = 1;
    *count = 0;
    return NULL;
  }
  const char **items = calloc((size_t)n + 1, sizeof *items);
  if (!items) {
    p->broken = 1;
    *count = 0;
    return NULL;
  }
  for (long i = 0; i < n; i++) items[i] = field(p);
  *count = n;
  return items;
}

/* The identity express-plan.ts records of a file: device, inode, size, mtime and ctime in ns. */
static void identity(const struct stat *st, char *out, size_t size) {
  snprintf(out, size, "%llu %llu %lld %lld %lld", (unsigned long long)st->st_dev, (unsigned long long)st->st_ino, (long long)st->st_size,
           (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec);
}

static int state_is(const char *path, const char *want) {
  struct stat st;
  char now[128];
  if (stat(path, &st) != 0) return errno == ENOENT && strcmp(want, "absent") == 0;
  if (S_ISDIR(st.st_mode)) return strcmp(want, "dir") == 0;
  identity(&st, now, sizeof now);
  return strcmp(want, now) == 0;
}

/* Field 22 of /proc/<pid>/stat (the start time in clock ticks), or -1. */
static long long start_time(const char *pid) {
  char path[64];
  size_t n;
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  char *stat = read_path(path, 4096, &n);
  if (!stat) return -1;
  long long value = -1;
  char *p = strrchr(stat, ')'); /* the command name may hold spaces and parentheses */
  for (int i = 2; p && *p; p++) {
    if (*p != ' ') continue;
    if (++i == 22) {
      value = strtoll(p + 1, NULL, 10);
      break;
    }
  }
  free(stat);
  return value;
}

/* Within two ticks, as runtime/launcher/proc-stat.ts: qemu-user's emulated /proc/self/stat is a tick or so off. */
static int same_process(const char *pid, const char *started) {
  char *end;
  long long want = strtoll(started, &end, 10), now = start_time(pid);
  return *started && !*end && now >= 0 && llabs(now - want) <= 2;
}

/* Whether `escaped` (spelled as mountinfo spells it) is a mountpoint of this process's mount namespace. */
static int mounted(const char *escaped) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return 0;
  char *line = NULL;
  size_t size = 0, want = strlen(escaped);
  int found = 0;
  while (!found && getline(&line, &size, f) > 0) {
    char *p = line;
    for (int i = 0; i < 4 && p; i++) p = strchr(p, ' '), p = p ? p + 1 : NULL; /* to field 5 */
    found = p && strncmp(p, escaped, want) == 0 && p[want] == ' ';
  }
  free(line);
  fclose(f);
  return found;
}

static int has_name(const char *entry, const char *name) {
  size_t n = strlen(name);
  return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

static int listed(const char *entry, const char **names, long count) {
  for (long i = 0; i < count; i++)
    if (has_name(entry, names[i])) return 1;
  return 0;
}

/* OVERPACK_LINGER as a plain number of seconds up to `max` changes nothing for a launch that joins; anything else is the runtime's to judge. */
static int harmless_linger(const char *value, const char *max) {
  const char *p = value;
  if (!*p) return 1; /* empty counts as unset */
  while (*p >= '0' && *p <= '9') p++;
  if (p == value) return 0;
  if (*p == '.') {
    const char *d = ++p;
    while (*p >= '0' && *p <= '9') p++;
    if (p == d) return 0;
  }
  return *p == 0 && strtod(value, NULL) <= strtod(max, NULL);
}

/* The data home the runtime would use ($XDG_DATA_HOME, else ~/.local/share), or 0. */
static int data_home(char *out, size_t size) {
  const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
  int n;
  if (xdg && *xdg && *xdg != '/') return 0; /* relative: the runtime would read it against its cwd */
  if (xdg && *xdg) n = snprintf(out, size, "%s", xdg);
  else if (home && *home) n = snprintf(out, size, "%s/.local/share", home);
  else return 0;
  return n > 0 && (size_t)n < size;
}

static int ascii(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s >= 0x80) return 0;
  return 1;
}

/* Whether an entry before `v` in `envp` has the same name: the runtime's environment keeps the first. */
static int seen_before(char **envp, char **v) {
  const char *eq = strchr(*v, '=');
  size_t n = eq ? (size_t)(eq - *v) + 1 : strlen(*v);
  for (char **u = envp; u < v; u++)
    if (strncmp(*u, *v, n) == 0) return 1;
  return 0;
}

static int only_spaces(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v') return 0;
  return 1;
}

static char *joined(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s%s", a, b, c);
  return s;
}

/* FNV-1a, 64 bits, as express-plan.ts names plans. */
static unsigned long long fnv1a64(const char *s) {
  unsigned long long h = 0xcbf29ce484222325ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h;
}

/* The plan's file for this bundle and its data directory (see planFile in express-plan.ts),
 * private to this user; NULL when there is none (no server offers one). */
static char *read_plan(const char *cache_root, const char *self, const struct stat *self_st, size_t *length) {
  char dir[PATH_MAX], path[64], data[PATH_MAX];
  struct stat st;
  if (snprintf(data, sizeof data, "%s.data", self) >= (int)sizeof data) return NULL;
  if (!(stat(data, &st) == 0 && S_ISDIR(st.st_mode)) && !data_home(data, sizeof data)) return NULL;
  if (snprintf(dir, sizeof dir, "%s/overpack/express", cache_root) >= (int)sizeof dir) return NULL;
  if (snprintf(path, sizeof path, "%llu-%llu-%016llx", (unsigned long long)self_st->st_dev, (unsigned long long)self_st->st_ino, fnv1a64(data)) >= (int)sizeof path) return NULL;
  /* What is exec'd comes from here: it must be this user's and nobody else's to write. The
   * directory is checked on the descriptor the plan is then opened from (no swap between). */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return NULL;
  char *plan = NULL;
  if (fstat(dfd, &st) == 0 && st.st_uid == geteuid() && !(st.st_mode & 022)) {
    int fd = openat(dfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd >= 0) {
      if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022)) plan = read_file(fd, PLAN_MAX, length);
      close(fd);
    }
  }
  close(dfd);
  return plan;
}

static int lock_reads(const char *lock, const char *text) {
  size_t n;
  char *now = read_path(lock, LOCK_MAX, &n);
  int same = now && n == strlen(text) && memcmp(now, text, n) == 0;
  free(now);
  return same;
}

int express_relaunch(const char *self, const char *cache_root, char **argv, char **envp) {
  const char *off = getenv("OVERPACK_EXPRESS");
  if (off && strcmp(off, "0") == 0) return 0;
  if (!argv[0]) return 0;
  const char *base = strrchr(argv[0], '/');
  if (strcmp(base ? base + 1 : argv[0], "node") == 0) return 0; /* run as node: node mode is the runtime's (entry.cts) */
  const char *cache = getenv("XDG_CACHE_HOME");
  if (cache && *cache && *cache != '/') return 0; /* relative: the runtime would read it against its cwd */
  for (int i = 1; argv[i]; i++)
    if (strncmp(argv[i], "--overpack-", 11) == 0) return 0; /* a runtime option: the runtime's job */
  struct stat self_st;
  if (stat(self, &self_st) != 0) return 0;
  size_t length;
  char *buf = read_plan(cache_root, self, &self_st, &length);
  if (!buf) return 0;

  struct plan p = {buf, length, 0, 0};
  const char *magic = field(&p), *bundle = field(&p), *ident = field(&p), *home = field(&p), *data_dir = field(&p);
  const char *lock_text = field(&p), *server = field(&p), *server_started = field(&p), *mountpoint = field(&p);
  const char *program = field(&p), *argv0 = field(&p);
  long n_fixed, n_unset, n_set, n_harmless, n_watched;
  const char **fixed = list(&p, &n_fixed), **unset = list(&p, &n_unset), **set = list(&p, &n_set);
  const char *bin_dir = field(&p);
  const char **harmless = list(&p, &n_harmless);
  const char *linger_max = field(&p);
  const char **watched = list(&p, &n_watched);
  if (p.broken || p.at != p.length || strcmp(magic, PLAN_MAGIC) != 0 || strcmp(bundle, self) != 0 || n_watched % 2) return 0;

  /* The same file the server read, unchanged. */
  char now[128];
  identity(&self_st, now, sizeof now);
  if (strcmp(ident, now) != 0) return 0;
  /* Nothing in the environment the runtime would act on. */
  int no_linger = 0;
  for (char **e = envp; *e; e++) {
    if (has_name(*e, "NODE_OPTIONS") && !ascii(*e)) return 0; /* blank by the runtime's trim()? the runtime's to judge */
    if (strncmp(*e, "OVERPACK_", 9) != 0 || listed(*e, harmless, n_harmless) || has_name(*e, "OVERPACK_EXPRESS")) continue;
    if (has_name(*e, "OVERPACK_LINGER") && harmless_linger(*e + 16, linger_max)) {
      no_linger = (*e)[16] != 0 && strtod(*e + 16, NULL) == 0;
      continue;
    }
    return 0;
  }
  /* The same data directory, and nothing changed that would change what the runtime does. */
  char dh[PATH_MAX];
  if (!data_home(dh, sizeof dh) || strcmp(dh, home) != 0) return 0;
  for (long i = 0; i < n_watched; i += 2)
    if (!state_is(watched[i], watched[i + 1])) return 0;
  /* The server still serves, this mount, and takes clients. */
  char *lock = joined(data_dir, "/lock", "");
  if (!lock) return 0;
  if (!same_process(server, server_started) || !mounted(mountpoint) || !lock_reads(lock, lock_text)) {
    /* Not serving now, but this launch is one a server lingered for before (same file, data,
     * and nothing in the launch the runtime would act on): it will start one again. */
    return !no_linger && !getenv("NODE_OPTIONS");
  }

  /* Registered as the runtime registers (instance.ts), then the lock read again: a server that
   * began closing meanwhile will not serve this client, one that reads the same lock will. */
  char me[32], started[32];
  long long my_start = start_time("self");
  snprintf(me, sizeof me, "%d", (int)getpid());
  snprintf(started, sizeof started, "%lld", my_start);
  char *client = joined(data_dir, "/clients/", me);
  if (!client || my_start < 0) return 0;
  int fd = open(client, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return 0;
  int wrote = write(fd, started, strlen(started)) == (ssize_t)strlen(started);
  close(fd);
  char cwd[PATH_MAX];
  if (!wrote || !lock_reads(lock, lock_text) || !same_process(server, server_started) || !getcwd(cwd, sizeof cwd)) {
    unlink(client);
    return 0;
  }

  /* argv: the program's argv[0], the plan's fixed arguments, then the launch's. */
  int argc = 0;
  while (argv[argc]) argc++;
  char **args = calloc((size_t)(n_fixed + argc + 1), sizeof *args);
  size_t env_count = 0;
  while (envp[env_count]) env_count++;
  char **env = calloc(env_count + (size_t)n_set + 4, sizeof *env);
  if (!args || !env) {
    unlink(client);
    return 0;
  }
  int k = 0;
  args[k++] = (char *)(*argv0 ? argv0 : argv[0]);
  for (long i = 0; i < n_fixed; i++) args[k++] = (char *)fixed[i];
  for (int i = 1; i < argc; i++) args[k++] = argv[i];

  /* env: the user's without what is unset or set below, then the plan's, then the launch's own (appEnv). */
  const char *user_path = getenv("PATH");
  size_t e = 0;
  for (char **v = envp; *v; v++) {
    if (seen_before(envp, v) || listed(*v, unset, n_unset) || has_name(*v, "ARGV0") || has_name(*v, "OWD") || has_name(*v, "PATH")) continue;
    if (has_name(*v, "NODE_OPTIONS") && only_spaces(*v + 13)) continue; /* the runtime drops a blank one */
    int replaced = 0;
    for (long i = 0; i < n_set && !replaced; i++) {
      const char *eq = strchr(set[i], '=');
      replaced = eq && strncmp(*v, set[i], (size_t)(eq - set[i]) + 1) == 0;
    }
    if (!replaced) env[e++] = *v;
  }
  for (long i = 0; i < n_set; i++) env[e++] = (char *)set[i];
  env[e++] = joined("ARGV0=", argv[0], "");
  env[e++] = joined("OWD=", cwd, "");
  env[e++] = joined("PATH=", bin_dir, user_path ? joined(":", user_path, "") : ":/usr/bin:/bin");
  execve(program, args, env);
  unlink(client); /* the runtime will say what is wrong */
  return 0;
}
