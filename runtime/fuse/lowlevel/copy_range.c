/*
 * copyRange: a ranged copy between two descriptors by the kernel, off the main thread (a libuv
 * worker). Copy-up of a big file stored raw in the image keeps its bytes in the kernel while
 * JS hashes the same range (runtime/image/image-layer.ts). Typed in runtime/native/addon.ts.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "napi_util.h"
#include "copy_range.h"

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

void register_copy_range(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "copyRange", NAPI_AUTO_LENGTH, js_copy_range, NULL, &f);
  napi_set_named_property(env, exports, "copyRange", f);
}
