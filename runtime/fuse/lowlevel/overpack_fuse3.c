/*
 * overpack's FUSE binding: libfuse 3's low-level API served on Node's event loop.
 *
 * The session's /dev/fuse descriptor is non-blocking and watched by a uv_poll on the main
 * thread. When the kernel has requests queued, the poll callback reads them one after another
 * (up to a batch limit) and hands each to a single JS dispatcher; there is no thread and no
 * hand-over per request. JS replies through the reply functions below, either at once or later
 * (after asynchronous I/O): a request stays valid until it is answered exactly once.
 *
 * Everything about paths, nodes and lookup counts lives in TypeScript (node-table.ts,
 * fuse3-paths.ts; fuse3-server.ts dispatches, fuse3-wire.ts holds the encoding). This file
 * only moves requests and replies across, and owns the few protocol decisions that must be made
 * in C: which capabilities to ask for at INIT, packing directory entries into the reply, and
 * answering a READ straight from a file descriptor (replyFd). The system calls the engine
 * needs and Node lacks are in syscalls.c, exported by the same addon.
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
#include <math.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>
#include "napi_util.h"
#include "syscalls.h"
#include "codec.h"
#include "copy_range.h"

/* Operation codes shared with fuse3-wire.ts (OP there). */
enum {
  OP_EXIT = 0, OP_LOOKUP = 1, OP_FORGET = 2, OP_GETATTR = 3, OP_SETATTR = 4, OP_READLINK = 5,
  OP_MKNOD = 6, OP_MKDIR = 7, OP_UNLINK = 8, OP_RMDIR = 9, OP_SYMLINK = 10, OP_RENAME = 11,
  OP_LINK = 12, OP_OPEN = 13, OP_READ = 14, OP_WRITE = 15, OP_RELEASE = 16, OP_FSYNC = 17,
  OP_READDIR = 18, OP_READDIRPLUS = 19, OP_STATFS = 20, OP_SETXATTR = 21, OP_GETXATTR = 22,
  OP_LISTXATTR = 23, OP_REMOVEXATTR = 24, OP_CREATE = 25, OP_FALLOCATE = 26, OP_LSEEK = 27
};

/* Open reply flags (bits of a JS number). */
#define OPEN_KEEP_CACHE 1
#define OPEN_DIRECT_IO 2
#define OPEN_CACHE_DIR 4

/* Attributes travel as 16 doubles: ino mode nlink uid gid rdev size blksize blocks, atime mtime
 * ctime (whole seconds), dev, then the nanoseconds of atime mtime ctime. Seconds and nanoseconds
 * apart because one double of milliseconds cannot hold a nanosecond time exactly. */
#define ATTR_FIELDS 16

/* Requests handled per poll wakeup before yielding to the rest of the event loop. */
#define BATCH 64

/* Before every write the kernel asks for the file's security.capability (to drop it, as a
 * write must); almost no file has one. The answer "none" is remembered per node here, so those
 * requests are answered without a trip to JS, and forgotten when that xattr is set or removed
 * through the mount. Node ids are never reused (node-table.ts), so a remembered id stays right; a
 * slot taken by another id only means asking JS again. */
#define NO_CAPS_SLOTS 4096
static const char CAPS_XATTR[] = "security.capability";

typedef struct session {
  napi_env env;
  struct fuse_session *se;
  struct fuse_buf buf;
  uv_poll_t poll;
  napi_ref dispatcher;
  napi_ref resource;
  napi_async_context async;
  int polling;
  int closed;
  /* Requests handed to JS and not answered yet: the session is destroyed only when this is 0,
   * so a late answer (after unmount) never touches freed memory. */
  size_t outstanding;
  uint32_t max_write;
  /* Ask for the kernel's writeback cache at INIT (MOUNT_WRITEBACK). */
  int writeback;
  /* Nodes known to carry no security.capability (see ll_getxattr), direct-mapped by id. */
  fuse_ino_t no_caps[NO_CAPS_SLOTS];
} session;

static void finish_session(session *s);


/* ---------- calling into JS ---------- */


static napi_value str(napi_env env, const char *s) {
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

static double req_id(fuse_req_t req) { return (double)(uintptr_t)req; }

/* Calls the dispatcher with (op, req, ...args). A throwing dispatcher is a bug in fuse3-server.ts,
 * which catches everything itself; report it and answer EIO so the caller is not left hanging. */
static void dispatch(session *s, fuse_req_t req, int op, size_t argc, napi_value *args) {
  napi_env env = s->env;
  napi_value fn, global, argv[8], result;
  napi_get_reference_value(env, s->dispatcher, &fn);
  napi_get_global(env, &global);
  argv[0] = num(env, op);
  argv[1] = num(env, req ? req_id(req) : 0);
  for (size_t i = 0; i < argc && i < 6; i++) argv[2 + i] = args[i];
  if (req) s->outstanding++;
  if (napi_call_function(env, global, fn, 2 + argc, argv, &result) != napi_ok) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    fprintf(stderr, "overpack: FUSE dispatcher threw on op %d (answered EIO)\n", op);
    if (req) {
      fuse_reply_err(req, EIO);
      s->outstanding--;
    }
  }
}

#define S() ((session *)fuse_req_userdata(req))
#define ENV (S()->env)

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  napi_value a[2] = {num(ENV, parent), str(ENV, name)};
  dispatch(S(), req, OP_LOOKUP, 2, a);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  napi_value a[2] = {num(ENV, ino), num(ENV, (double)nlookup)};
  dispatch(S(), NULL, OP_FORGET, 2, a);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  for (size_t i = 0; i < count; i++) {
    napi_value a[2] = {num(ENV, forgets[i].ino), num(ENV, (double)forgets[i].nlookup)};
    dispatch(S(), NULL, OP_FORGET, 2, a);
  }
  fuse_reply_none(req);
}

static napi_value fh_of(napi_env env, struct fuse_file_info *fi) { return num(env, fi ? (double)fi->fh : -1); }

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  napi_value a[2] = {num(ENV, ino), fh_of(ENV, fi)};
  dispatch(S(), req, OP_GETATTR, 2, a);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  napi_env env = ENV;
  napi_value values;
  napi_value arr;
  void *data;
  /* mode uid gid size, atime (s, ns), mtime (s, ns): times exact to the nanosecond. */
  napi_create_arraybuffer(env, 8 * sizeof(double), &data, &arr);
  double *v = data;
  v[0] = attr->st_mode;
  v[1] = attr->st_uid;
  v[2] = attr->st_gid;
  v[3] = (double)attr->st_size;
  v[4] = (double)attr->st_atim.tv_sec;
  v[5] = (double)attr->st_atim.tv_nsec;
  v[6] = (double)attr->st_mtim.tv_sec;
  v[7] = (double)attr->st_mtim.tv_nsec;
  napi_create_typedarray(env, napi_float64_array, 8, arr, 0, &values);
  napi_value a[4] = {num(env, ino), num(env, to_set), values, fh_of(env, fi)};
  dispatch(S(), req, OP_SETATTR, 4, a);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  napi_value a[1] = {num(ENV, ino)};
  dispatch(S(), req, OP_READLINK, 1, a);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  napi_value a[4] = {num(ENV, parent), str(ENV, name), num(ENV, mode), num(ENV, (double)rdev)};
  dispatch(S(), req, OP_MKNOD, 4, a);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  napi_value a[3] = {num(ENV, parent), str(ENV, name), num(ENV, mode)};
  dispatch(S(), req, OP_MKDIR, 3, a);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  napi_value a[2] = {num(ENV, parent), str(ENV, name)};
  dispatch(S(), req, OP_UNLINK, 2, a);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  napi_value a[2] = {num(ENV, parent), str(ENV, name)};
  dispatch(S(), req, OP_RMDIR, 2, a);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  napi_value a[3] = {num(ENV, parent), str(ENV, name), str(ENV, link)};
  dispatch(S(), req, OP_SYMLINK, 3, a);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  napi_value a[5] = {num(ENV, parent), str(ENV, name), num(ENV, newparent), str(ENV, newname), num(ENV, flags)};
  dispatch(S(), req, OP_RENAME, 5, a);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  napi_value a[3] = {num(ENV, ino), num(ENV, newparent), str(ENV, newname)};
  dispatch(S(), req, OP_LINK, 3, a);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  napi_value a[5] = {num(ENV, ino), num(ENV, mode), num(ENV, (double)offset), num(ENV, (double)length), fh_of(ENV, fi)};
  dispatch(S(), req, OP_FALLOCATE, 5, a);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)off), num(ENV, whence), fh_of(ENV, fi)};
  dispatch(S(), req, OP_LSEEK, 4, a);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  napi_value a[2] = {num(ENV, ino), num(ENV, fi->flags)};
  dispatch(S(), req, OP_OPEN, 2, a);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(ENV, fi)};
  dispatch(S(), req, OP_READ, 4, a);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  /* The data lives in the session buffer, which the next request overwrites: JS gets a copy. */
  napi_value data;
  void *copy;
  if (napi_create_buffer_copy(ENV, size, buf, &copy, &data) != napi_ok) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  napi_value a[4] = {num(ENV, ino), data, num(ENV, (double)off), fh_of(ENV, fi)};
  dispatch(S(), req, OP_WRITE, 4, a);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  napi_value a[2] = {num(ENV, ino), fh_of(ENV, fi)};
  dispatch(S(), req, OP_RELEASE, 2, a);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  napi_value a[3] = {num(ENV, ino), num(ENV, datasync), fh_of(ENV, fi)};
  dispatch(S(), req, OP_FSYNC, 3, a);
}

/* ENOSYS once makes the kernel stop sending OPENDIR/RELEASEDIR (FUSE_CAP_NO_OPENDIR_SUPPORT)
 * and open every directory as if we had answered keep_cache + cache_readdir: a directory's
 * listing is then read once and served by the kernel until it changes through this mount. */
static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, ENOSYS);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(ENV, fi)};
  dispatch(S(), req, OP_READDIR, 4, a);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(ENV, fi)};
  dispatch(S(), req, OP_READDIRPLUS, 4, a);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  napi_value a[1] = {num(ENV, ino)};
  dispatch(S(), req, OP_STATFS, 1, a);
}

static void forget_no_caps(session *s, fuse_ino_t ino, const char *name) {
  if (s->no_caps[ino % NO_CAPS_SLOTS] == ino && strcmp(name, CAPS_XATTR) == 0) s->no_caps[ino % NO_CAPS_SLOTS] = 0;
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  forget_no_caps(S(), ino, name);
  napi_value data;
  void *copy;
  if (napi_create_buffer_copy(ENV, size, value, &copy, &data) != napi_ok) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  napi_value a[4] = {num(ENV, ino), str(ENV, name), data, num(ENV, flags)};
  dispatch(S(), req, OP_SETXATTR, 4, a);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  if (ino && S()->no_caps[ino % NO_CAPS_SLOTS] == ino && strcmp(name, CAPS_XATTR) == 0) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  napi_value a[3] = {num(ENV, ino), str(ENV, name), num(ENV, (double)size)};
  dispatch(S(), req, OP_GETXATTR, 3, a);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  napi_value a[2] = {num(ENV, ino), num(ENV, (double)size)};
  dispatch(S(), req, OP_LISTXATTR, 2, a);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  forget_no_caps(S(), ino, name);
  napi_value a[2] = {num(ENV, ino), str(ENV, name)};
  dispatch(S(), req, OP_REMOVEXATTR, 2, a);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, parent), str(ENV, name), num(ENV, mode), num(ENV, fi->flags)};
  dispatch(S(), req, OP_CREATE, 4, a);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  session *s = userdata;
  unsigned want = FUSE_CAP_READDIRPLUS | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_NO_OPENDIR_SUPPORT | FUSE_CAP_NO_OPEN_SUPPORT |
                  FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_ASYNC_READ;
  conn->want |= want & conn->capable;
  /* Plain READDIRPLUS for every listing (not "auto"): the walk is what we optimise for, and a
   * listing with attributes saves one LOOKUP per entry. */
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  /* libfuse turns ATOMIC_O_TRUNC on by default: the kernel then trusts OPEN to truncate and
   * sends no SETATTR for O_TRUNC. With zero-message open (OPEN answered ENOSYS) nothing would
   * truncate at all, so it must stay off: the truncation then arrives as SETATTR(size=0). */
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  /* Incoming writes through the session buffer are copied once into JS; splicing them in
   * gains nothing. Outgoing: replyFd answers a READ by splicing the backing file's pages
   * into /dev/fuse through a pipe (libfuse's fuse_reply_data), so the data is copied once, by
   * the kernel, instead of into a JS buffer and out again. SPLICE_MOVE is left off: the
   * kernel no longer moves pages, it copies them either way. */
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE);
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (s->max_write && s->max_write < conn->max_write) conn->max_write = s->max_write;
  conn->max_readahead = conn->max_write;
  /* Opt-in (README, FUSE bindings): the kernel then keeps written pages dirty and sends them in
   * large WRITEs, owning size, mtime and ctime of a file while it does; it also READs pages of
   * files opened write-only and handles O_APPEND itself, which the engine's handle-less
   * descriptors (read-write, never O_APPEND) allow. */
  if (s->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .readlink = ll_readlink,
  .mknod = ll_mknod,
  .mkdir = ll_mkdir,
  .unlink = ll_unlink,
  .rmdir = ll_rmdir,
  .symlink = ll_symlink,
  .rename = ll_rename,
  .link = ll_link,
  .open = ll_open,
  .read = ll_read,
  .write = ll_write,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .readdirplus = ll_readdirplus,
  .statfs = ll_statfs,
  .setxattr = ll_setxattr,
  .getxattr = ll_getxattr,
  .listxattr = ll_listxattr,
  .removexattr = ll_removexattr,
  .create = ll_create,
  .fallocate = ll_fallocate,
  .lseek = ll_lseek,
  /* flush, access, locks: left out, so libfuse answers ENOSYS once and the kernel
   * stops asking (access and permission checks are the kernel's, with default_permissions). */
};

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
    fuse_session_process_buf(s->se, &s->buf);
  }
  if (ended) {
    /* Unmounted from outside (fusermount -u, umount) or the connection was aborted. */
    stop_polling(s);
    dispatch(s, NULL, OP_EXIT, 0, NULL);
  }
  napi_close_callback_scope(env, cscope);
  napi_close_handle_scope(env, hscope);
}

static session *get_session(napi_env env, napi_value v) {
  session *s = NULL;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok || !s) {
    napi_throw_type_error(env, NULL, "overpack-fuse3: not a session");
    return NULL;
  }
  return s;
}

/* Bits of mount()'s flags. */
#define MOUNT_WRITEBACK 1

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
  struct fuse_args args = FUSE_ARGS_INIT((int)nargs, cargv);
  s->se = fuse_session_new(&args, &ll_ops, sizeof ll_ops, s);
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
  free(s->buf.mem);
  free(s);
}

static void finish_session(session *s) {
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
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s || s->closed) return NULL;
  s->closed = 1;
  stop_polling(s);
  fuse_session_unmount(s->se);
  if (s->outstanding == 0) finish_session(s);
  return NULL;
}

/* ---------- replies ---------- */

static fuse_req_t get_req(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return (fuse_req_t)(uintptr_t)d;
}

/* Every reply function ends with this: one request fewer outstanding. */
static napi_value answered(napi_env env, session *s, int rc) {
  if (s->outstanding > 0) s->outstanding--;
  if (s->closed && s->outstanding == 0 && s->se) finish_session(s);
  return num(env, rc);
}

/* The session is taken before the reply: replying frees the request. */
#define REPLY(call)                          \
  session *replying = fuse_req_userdata(req); \
  return answered(env, replying, (call))

static void fill_stat(napi_env env, napi_value arr, size_t index, struct stat *st) {
  void *data;
  size_t length;
  napi_get_typedarray_info(env, arr, NULL, &length, &data, NULL, NULL);
  memset(st, 0, sizeof *st);
  if ((index + 1) * ATTR_FIELDS > length) return;
  double *v = (double *)data + index * ATTR_FIELDS;
  st->st_ino = (ino_t)v[0];
  st->st_mode = (mode_t)v[1];
  st->st_nlink = (nlink_t)v[2];
  st->st_uid = (uid_t)v[3];
  st->st_gid = (gid_t)v[4];
  st->st_rdev = (dev_t)v[5];
  st->st_size = (off_t)v[6];
  st->st_blksize = (blksize_t)v[7];
  st->st_blocks = (blkcnt_t)v[8];
  struct timespec *ts[3] = {&st->st_atim, &st->st_mtim, &st->st_ctim};
  for (int i = 0; i < 3; i++) {
    ts[i]->tv_sec = (time_t)v[9 + i];
    long ns = (long)v[13 + i];
    ts[i]->tv_nsec = ns < 0 ? 0 : ns > 999999999L ? 999999999L : ns;
  }
}



/* replyErr(req, errno) — errno 0 is success for requests that carry no data. */
static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_err(req, (int)get_double(env, argv[1])));
}

static void fill_entry(napi_env env, napi_value *argv, struct fuse_entry_param *e) {
  memset(e, 0, sizeof *e);
  e->ino = (fuse_ino_t)get_double(env, argv[0]);
  if (e->ino) fill_stat(env, argv[1], 0, &e->attr);
  e->entry_timeout = get_double(env, argv[2]);
  e->attr_timeout = get_double(env, argv[3]);
}

/* replyEntry(req, nodeid, attr, entryTimeout, attrTimeout) — nodeid 0: a cached "no such entry". */
static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fuse_entry_param e;
  fill_entry(env, argv + 1, &e);
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_entry(req, &e));
}

static void fill_open(napi_env env, napi_value fh, napi_value flags, struct fuse_file_info *fi) {
  memset(fi, 0, sizeof *fi);
  fi->fh = (uint64_t)get_double(env, fh);
  int f = (int)get_double(env, flags);
  fi->keep_cache = (f & OPEN_KEEP_CACHE) != 0;
  fi->direct_io = (f & OPEN_DIRECT_IO) != 0;
  fi->cache_readdir = (f & OPEN_CACHE_DIR) != 0;
}

/* replyCreate(req, nodeid, attr, entryTimeout, attrTimeout, fh, openFlags) */
static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  fill_entry(env, argv + 1, &e);
  fill_open(env, argv[5], argv[6], &fi);
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_create(req, &e, &fi));
}

/* replyAttr(req, attr, timeout) */
static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct stat st;
  fill_stat(env, argv[1], 0, &st);
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_attr(req, &st, get_double(env, argv[2])));
}

/* replyBuf(req, buffer, length) */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data = NULL;
  size_t blen = 0;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &blen));
  size_t n = (size_t)get_double(env, argv[2]);
  if (n > blen) n = blen;
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_buf(req, data, n));
}

/* replyFd(req, fd, size, offset): the answer to a READ is up to `size` bytes of `fd` from
 * `offset` (fewer at end of file). libfuse splices them through a pipe when the kernel
 * allows it, else preads them into a buffer of its own; either way no JS buffer is involved.
 * An I/O error reading `fd` is sent as the answer's errno. */
static napi_value js_reply_fd(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)get_double(env, argv[2]));
  bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
  bv.buf[0].fd = (int)get_double(env, argv[1]);
  bv.buf[0].pos = (off_t)get_double(env, argv[3]);
  REPLY(fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_NONBLOCK));
}

/* replyWrite(req, count) */
static napi_value js_reply_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_write(req, (size_t)get_double(env, argv[1])));
}

/* replyXattrSize(req, size) */
static napi_value js_reply_xattr(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_xattr(req, (size_t)get_double(env, argv[1])));
}

/* replyReadlink(req, target) */
static napi_value js_reply_readlink(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t len;
  CHECK(napi_get_value_string_utf8(env, argv[1], NULL, 0, &len));
  char *target = malloc(len + 1);
  napi_get_value_string_utf8(env, argv[1], target, len + 1, &len);
  fuse_req_t req = get_req(env, argv[0]);
  session *s = fuse_req_userdata(req);
  int rc = fuse_reply_readlink(req, target);
  free(target);
  return answered(env, s, rc);
}

/* replyStatfs(req, Float64Array[bsize frsize blocks bfree bavail files ffree favail fsid flag namemax]) */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t length;
  CHECK(napi_get_typedarray_info(env, argv[1], NULL, &length, &data, NULL, NULL));
  double *v = data;
  struct statvfs st;
  memset(&st, 0, sizeof st);
  if (length >= 11) {
    st.f_bsize = (unsigned long)v[0];
    st.f_frsize = (unsigned long)v[1];
    st.f_blocks = (fsblkcnt_t)v[2];
    st.f_bfree = (fsblkcnt_t)v[3];
    st.f_bavail = (fsblkcnt_t)v[4];
    st.f_files = (fsfilcnt_t)v[5];
    st.f_ffree = (fsfilcnt_t)v[6];
    st.f_favail = (fsfilcnt_t)v[7];
    st.f_fsid = (unsigned long)v[8];
    st.f_flag = (unsigned long)v[9];
    st.f_namemax = (unsigned long)v[10];
  }
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_statfs(req, &st));
}

/*
 * replyDir(req, size, base, names, attrs, nodeids, plus, entryTimeout, attrTimeout) -> count
 * Packs the given entries (a window of the listing that starts at listing position `base`)
 * into one reply of at most `size` bytes; window entry i gets offset base + i + 1 (the offset
 * the kernel sends back to continue after it). Returns how many entries went in, so JS can
 * count a lookup for each readdirplus entry with a nodeid.
 */
static napi_value js_reply_dir(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  size_t size = (size_t)get_double(env, argv[1]);
  double base = get_double(env, argv[2]);
  uint32_t count;
  CHECK(napi_get_array_length(env, argv[3], &count));
  void *ids_data;
  size_t ids_len;
  CHECK(napi_get_typedarray_info(env, argv[5], NULL, &ids_len, &ids_data, NULL, NULL));
  bool plus;
  CHECK(napi_get_value_bool(env, argv[6], &plus));
  double entry_timeout = get_double(env, argv[7]);
  double attr_timeout = get_double(env, argv[8]);
  char *buf = malloc(size ? size : 1);
  size_t used = 0;
  uint32_t added = 0;
  char name[4096]; /* FUSE names are at most 1024 bytes */
  for (uint32_t i = 0; i < count; i++) {
    napi_value item;
    size_t nlen;
    napi_get_element(env, argv[3], i, &item);
    napi_get_value_string_utf8(env, item, name, sizeof name, &nlen);
    struct stat st;
    fill_stat(env, argv[4], i, &st);
    size_t need;
    if (plus) {
      struct fuse_entry_param e;
      memset(&e, 0, sizeof e);
      e.ino = i < ids_len ? (fuse_ino_t)((double *)ids_data)[i] : 0;
      e.attr = st;
      e.entry_timeout = entry_timeout;
      e.attr_timeout = attr_timeout;
      need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)base + i + 1);
    } else {
      need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)base + i + 1);
    }
    if (need > size - used) break;
    used += need;
    added++;
  }
  session *s = fuse_req_userdata(req);
  fuse_reply_buf(req, buf, used);
  free(buf);
  answered(env, s, 0);
  return num(env, added);
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

/* replyLseek(req, offset) */
static napi_value js_reply_lseek(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_lseek(req, (off_t)get_double(env, argv[1])));
}

static napi_value js_version(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, fuse_version());
}

static napi_value init(napi_env env, napi_value exports) {
  const struct { const char *name; napi_callback fn; } fns[] = {
    {"mount", js_mount}, {"close", js_close}, {"replyErr", js_reply_err}, {"replyEntry", js_reply_entry},
    {"replyCreate", js_reply_create}, {"replyAttr", js_reply_attr}, {"replyBuf", js_reply_buf},
    {"replyFd", js_reply_fd}, {"replyWrite", js_reply_write}, {"replyXattrSize", js_reply_xattr},
    {"replyReadlink", js_reply_readlink}, {"replyStatfs", js_reply_statfs}, {"replyDir", js_reply_dir},
    {"invalInode", js_inval_inode}, {"libfuseVersion", js_version}, {"replyLseek", js_reply_lseek},
    {"noCapability", js_no_capability},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  register_syscalls(env, exports);
  register_codec(env, exports);
  register_copy_range(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
