/*
 * overpack's FUSE binding: libfuse 3's low-level API served on Node's event loop.
 *
 * The session's /dev/fuse descriptor is non-blocking and watched by a uv_poll on the main
 * thread. When the kernel has requests queued, the poll callback reads them one after another
 * (up to a batch limit) and hands each to a single JS dispatcher; there is no thread and no
 * hand-over per request. JS replies through the reply functions (fuse3_replies.c), either at once or later
 * (after asynchronous I/O): a request stays valid until it is answered exactly once.
 *
 * Everything about paths, nodes and lookup counts lives in TypeScript (node-table.ts,
 * fuse3-paths.ts; fuse3-server.ts dispatches, fuse3-wire.ts holds the encoding). The C side
 * only moves requests and replies across, and owns the few protocol decisions that must be
 * made in C: which capabilities to ask for at INIT and the requests answered without JS
 * (fuse3_requests.c), packing directory entries and answering a READ straight from a file
 * descriptor (fuse3_replies.c). This file is the session's life: mount, the poll on the
 * device, close, and the module's exports. The system calls the engine needs and Node lacks
 * (syscalls.c), zstd (codec.c) and a threaded copy_file_range (copy_range.c) are exported by
 * the same addon.
 *
 * Request ids handed to JS are the fuse_req_t pointers as doubles (user-space pointers fit in
 * 53 bits on every Linux ABI we build for).
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "napi_util.h"
#include "fuse3_session.h"
#include "syscalls.h"
#include "codec.h"
#include "copy_range.h"

/* Requests handled per poll wakeup before yielding to the rest of the event loop. */
#define BATCH 64

/* ---------- the event loop side ---------- */

static void stop_polling(session *s) {
  if (s->polling) {
    uv_poll_stop(&s->poll);
    s->polling = 0;
  }
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  session *s = handle->data;
  napi_env env = s->env;
  napi_handle_scope hscope;
  napi_callback_scope cscope;
  napi_value resource;
  int ended = status < 0;
  napi_open_handle_scope(env, &hscope);
  napi_get_reference_value(env, s->resource, &resource);
  /* A callback scope: when it closes, Node runs the microtasks and next-ticks that the
   * dispatcher queued, so promise-based answers go out before we sleep again. */
  napi_open_callback_scope(env, resource, s->async, &cscope);
  for (int i = 0; i < BATCH && !ended; i++) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EAGAIN || res == -EINTR) break;
    if (res <= 0 || fuse_session_exited(s->se)) {
      ended = 1;
      break;
    }
    if (!s->init_seen && passthrough_init(s, &s->buf)) continue;
    fuse_session_process_buf(s->se, &s->buf);
  }
  if (ended) {
    /* Unmounted from outside (fusermount -u, umount) or the connection was aborted. */
    stop_polling(s);
    dispatch_exit(s);
  }
  napi_close_callback_scope(env, cscope);
  napi_close_handle_scope(env, hscope);
}

session *get_session(napi_env env, napi_value v) {
  session *s = NULL;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok || !s) {
    napi_throw_type_error(env, NULL, "overpack-fuse3: not a session");
    return NULL;
  }
  return s;
}

session *session_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "overpack-fuse3: a session expected");
    return NULL;
  }
  return get_session(env, argv[0]);
}

/* Bits of mount()'s flags (fuse3-wire.ts). Passthrough is asked for only where it can work:
 * the kernel refuses backing files to a server without CAP_SYS_ADMIN. STACKED: the upper
 * directory is itself on a stacked filesystem (overlayfs), so the mount declares depth 2.
 * OWN_CALLERS: no allow_other, so only the server's user can use the mount (passthrough_init). */
#define MOUNT_WRITEBACK 1
#define MOUNT_PASSTHROUGH 2
#define MOUNT_STACKED 4
#define MOUNT_OWN_CALLERS 8

/* mount(mountPoint, args: string[], dispatcher, maxWrite, flags) -> session */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char mnt[4096];
  size_t len;
  CHECK(napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &len));
  uint32_t nargs;
  CHECK(napi_get_array_length(env, argv[1], &nargs));
  char **cargv = calloc(nargs + 1, sizeof(char *));
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value item;
    char tmp[4096];
    napi_get_element(env, argv[1], i, &item);
    napi_get_value_string_utf8(env, item, tmp, sizeof tmp, &len);
    cargv[i] = strdup(tmp);
  }
  uint32_t max_write = 0, flags = 0;
  napi_get_value_uint32(env, argv[3], &max_write);
  if (argc >= 5) napi_get_value_uint32(env, argv[4], &flags);

  session *s = calloc(1, sizeof *s);
  s->env = env;
  s->max_write = max_write;
  s->writeback = (flags & MOUNT_WRITEBACK) != 0;
  s->want_passthrough = !s->writeback && (flags & MOUNT_PASSTHROUGH) != 0 && passthrough_capable();
  s->stack_depth = (flags & MOUNT_STACKED) ? 2 : 1;
  s->own_callers = (flags & MOUNT_OWN_CALLERS) != 0;
  struct fuse_args args = FUSE_ARGS_INIT((int)nargs, cargv);
  s->se = fuse_session_new(&args, &overpack_ll_ops, sizeof overpack_ll_ops, s);
  fuse_opt_free_args(&args);
  for (uint32_t i = 0; i < nargs; i++) free(cargv[i]);
  free(cargv);
  if (!s->se) {
    free(s);
    napi_throw_error(env, "EINVAL", "fuse_session_new failed (bad mount options?)");
    return NULL;
  }
  if (fuse_session_mount(s->se, mnt) != 0) {
    fuse_session_destroy(s->se);
    free(s);
    napi_throw_error(env, "EMOUNT", "fuse_session_mount failed (see the message above)");
    return NULL;
  }
  int fd = fuse_session_fd(s->se);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);

  napi_value resource;
  CHECK(napi_create_object(env, &resource));
  CHECK(napi_create_reference(env, resource, 1, &s->resource));
  CHECK(napi_create_reference(env, argv[2], 1, &s->dispatcher));
  CHECK(napi_async_init(env, resource, str(env, "overpack-fuse3"), &s->async));

  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  uv_poll_init(loop, &s->poll, fd);
  s->poll.data = s;
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  s->polling = 1;

  napi_value ext;
  CHECK(napi_create_external(env, s, NULL, NULL, &ext));
  return ext;
}

static void free_session(uv_handle_t *h) {
  session *s = h->data;
  free_lent(s);
  free_opens(s);
  free(s->buf.mem);
  free(s);
}

void finish_session(session *s) {
  napi_env env = s->env;
  fuse_session_destroy(s->se);
  s->se = NULL;
  napi_async_destroy(env, s->async);
  napi_delete_reference(env, s->dispatcher);
  napi_delete_reference(env, s->resource);
  uv_close((uv_handle_t *)&s->poll, free_session);
}

/* close(session): stop reading and detach the mount (lazily, closing the device first so
 * nothing can wait on us). The session itself goes when the last unanswered request is
 * answered (answers then go nowhere: the device is closed). */
static napi_value js_close(napi_env env, napi_callback_info info) {
  session *s = session_arg(env, info);
  if (!s || s->closed) return NULL;
  s->closed = 1;
  stop_polling(s);
  fuse_session_unmount(s->se);
  if (s->outstanding == 0) finish_session(s);
  return NULL;
}

/* invalInode(session, ino): tell the kernel to drop what it caches of a node, for a change it
 * did not see go through the mount. Offset -1: attributes only: dropping pages could wait on a
 * READ of that inode that this very thread has yet to answer; attributes never wait. */
static napi_value js_inval_inode(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s || s->closed) return NULL;
  return ret_int(env, fuse_lowlevel_notify_inval_inode(s->se, (fuse_ino_t)get_double(env, argv[1]), -1, 0));
}

/* noCapability(session, ino): JS found no security.capability on this node (see NO_CAPS_SLOTS). */
static napi_value js_no_capability(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s || s->closed) return NULL;
  fuse_ino_t ino = (fuse_ino_t)get_double(env, argv[1]);
  s->no_caps[ino % NO_CAPS_SLOTS] = ino;
  return NULL;
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, fuse_version());
}

static napi_value init(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"mount", js_mount}, {"close", js_close}, {"invalInode", js_inval_inode},
    {"noCapability", js_no_capability}, {"libfuseVersion", js_version},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
  register_replies(env, exports);
  register_direct(env, exports);
  register_passthrough(env, exports);
  register_entries(env, exports);
  register_syscalls(env, exports);
  register_codec(env, exports);
  register_copy_range(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
