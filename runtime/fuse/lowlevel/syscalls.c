/*
 * The system calls the engine needs and Node lacks, exported by the same addon as the FUSE
 * binding (it is the native code we already build and ship for every target):
 * mknod, fallocate, lseek (SEEK_DATA/SEEK_HOLE), utimensat with nanoseconds, restoring a
 * signal's default action. Typed in runtime/native/addon.ts; registered by the addon's init.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "napi_util.h"
#include "syscalls.h"





/* Each returns 0 or a positive errno (seek: the new offset, or -errno). */

/* A path argument into `buf` (PATH_MAX bytes): 0, or ENAMETOOLONG / EINVAL. */
static int get_path(napi_env env, napi_value v, char *buf) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, buf, PATH_MAX, &len) != napi_ok) return EINVAL;
  return len >= PATH_MAX - 1 ? ENAMETOOLONG : 0;
}

/* mknod(path, mode, rdev): fifos, sockets and device nodes in the upper. */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[PATH_MAX];
  int bad = get_path(env, argv[0], path);
  if (bad) return ret_int(env, bad);
  return ret_int(env, mknod(path, (mode_t)get_double(env, argv[1]), (dev_t)get_double(env, argv[2])) == 0 ? 0 : errno);
}

/* fallocate(fd, mode, offset, length) */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int rc = fallocate((int)get_double(env, argv[0]), (int)get_double(env, argv[1]), (off_t)get_double(env, argv[2]), (off_t)get_double(env, argv[3]));
  return ret_int(env, rc == 0 ? 0 : errno);
}

/* seek(fd, offset, whence): for SEEK_DATA and SEEK_HOLE. */
static napi_value js_seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  off_t r = lseek((int)get_double(env, argv[0]), (off_t)get_double(env, argv[1]), (int)get_double(env, argv[2]));
  return num(env, r < 0 ? -(double)errno : (double)r);
}

/* defaultSignal(signo): the default action back for a signal Node ignores (SIGPIPE), and the
 * signal unblocked, so that raising it afterwards ends the process as it ended the app. */
static napi_value js_default_signal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int signo = (int)get_double(env, argv[0]);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signo);
  int rc = sigaction(signo, &sa, NULL) == 0 && sigprocmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : errno;
  return ret_int(env, rc);
}

/* utimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec), never following a final symlink;
 * a nanosecond field may be UTIME_NOW or UTIME_OMIT (exported as constants). Node's utimes
 * takes seconds as one double and loses the last digits of a nanosecond time. */
static napi_value js_utimens(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[PATH_MAX];
  int bad = get_path(env, argv[0], path);
  if (bad) return ret_int(env, bad);
  struct timespec ts[2] = {
    {(time_t)get_double(env, argv[1]), (long)get_double(env, argv[2])},
    {(time_t)get_double(env, argv[3]), (long)get_double(env, argv[4])},
  };
  return ret_int(env, utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno);
}

void register_syscalls(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"mknod", js_mknod}, {"fallocate", js_fallocate}, {"seek", js_seek},
    {"utimens", js_utimens}, {"defaultSignal", js_default_signal},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
  napi_value omit, now;
  napi_create_double(env, UTIME_OMIT, &omit);
  napi_create_double(env, UTIME_NOW, &now);
  napi_set_named_property(env, exports, "UTIME_OMIT", omit);
  napi_set_named_property(env, exports, "UTIME_NOW", now);
}
