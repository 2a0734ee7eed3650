/*
 * The system calls the engine needs and Node lacks, exported by the same addon as the FUSE
 * binding (it is the native code we already build and ship for every target):
 * mknod, fallocate, lseek (SEEK_DATA/SEEK_HOLE), utimensat with nanoseconds, restoring a
 * signal's default action, and copyRange (a ranged copy_file_range off the main thread, for
 * copy-up). Typed in runtime/native/addon.ts; registered by the addon's init.
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

/* ---------- copying a range between files, off the main thread ---------- */

/* copyRange(inFd, inOffset, outFd, outOffset, length, done(errno, copied)): what copy-up from
 * the image needs and Node lacks (fs.copyFile copies whole files only). copy_file_range keeps
 * the bytes in the kernel (page cache to page cache); where the kernel refuses it for these two
 * files (another filesystem type, an old kernel) a pread/pwrite loop does the same on this
 * worker thread. `copied` short of `length` with errno 0 means the source ended early. */
typedef struct copy_job {
  napi_async_work work;
  napi_ref done;
  int in_fd, out_fd;
  int64_t in_off, out_off, len, copied;
  int err;
} copy_job;

static int cfr_unsupported(int e) { return e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP || e == EPERM; }

static void copy_execute(napi_env env, void *data) {
  (void)env;
  copy_job *j = data;
  const size_t piece = 1 << 20;
  char *buf = NULL;
  int kernel = 1;
  while (j->copied < j->len) {
    int64_t left = j->len - j->copied;
    ssize_t n;
    if (kernel) {
      loff_t in = j->in_off + j->copied, out = j->out_off + j->copied;
      n = copy_file_range(j->in_fd, &in, j->out_fd, &out, left > (1 << 30) ? (size_t)1 << 30 : (size_t)left, 0);
      if (n < 0 && cfr_unsupported(errno) && j->copied == 0) {
        kernel = 0;
        continue;
      }
    } else {
      if (!buf && !(buf = malloc(piece))) {
        j->err = ENOMEM;
        break;
      }
      n = pread(j->in_fd, buf, left > (int64_t)piece ? piece : (size_t)left, j->in_off + j->copied);
      for (ssize_t w = 0; n > 0 && w < n;) {
        ssize_t m = pwrite(j->out_fd, buf + w, (size_t)(n - w), j->out_off + j->copied + w);
        if (m < 0 && errno == EINTR) continue;
        if (m < 0) {
          n = -1;
          break;
        }
        w += m;
      }
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      j->err = errno;
      break;
    }
    if (n == 0) break; /* the source ended early */
    j->copied += n;
  }
  free(buf);
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  copy_job *j = data;
  napi_value fn, global, argv[2], result;
  napi_get_reference_value(env, j->done, &fn);
  napi_get_global(env, &global);
  argv[0] = num(env, status == napi_ok ? j->err : ECANCELED);
  argv[1] = num(env, (double)j->copied);
  napi_call_function(env, global, fn, 2, argv, &result);
  napi_delete_reference(env, j->done);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_copy_range(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], name;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "copyRange(inFd, inOffset, outFd, outOffset, length, done)");
    return NULL;
  }
  copy_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "overpack-fuse3: out of memory");
    return NULL;
  }
  j->in_fd = (int)get_double(env, argv[0]);
  j->in_off = (int64_t)get_double(env, argv[1]);
  j->out_fd = (int)get_double(env, argv[2]);
  j->out_off = (int64_t)get_double(env, argv[3]);
  j->len = (int64_t)get_double(env, argv[4]);
  CHECK(napi_create_reference(env, argv[5], 1, &j->done));
  CHECK(napi_create_string_utf8(env, "overpack:copyRange", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, copy_execute, copy_complete, j, &j->work));
  CHECK(napi_queue_async_work(env, j->work));
  return NULL;
}

void register_syscalls(napi_env env, napi_value exports) {
  const struct { const char *name; napi_callback fn; } fns[] = {
    {"copyRange", js_copy_range}, {"mknod", js_mknod}, {"fallocate", js_fallocate}, {"seek", js_seek},
    {"utimens", js_utimens}, {"defaultSignal", js_default_signal},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  napi_value omit, now;
  napi_create_double(env, UTIME_OMIT, &omit);
  napi_create_double(env, UTIME_NOW, &now);
  napi_set_named_property(env, exports, "UTIME_OMIT", omit);
  napi_set_named_property(env, exports, "UTIME_NOW", now);
}
