/*
 * Requests, kernel to JS: libfuse's low-level callbacks, each handing its request to the single
 * JS dispatcher (fuse3-server.ts) with its arguments as JS values. Some requests are answered
 * without a trip to JS: OPENDIR (see ll_opendir), a GETXATTR of security.capability on a node
 * known to have none (see NO_CAPS_SLOTS), a LOOKUP under a lent directory (fuse3_entries.c),
 * and READ/WRITE of registered descriptors (fuse3_direct.c). ll_init chooses the protocol capabilities.
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "napi_util.h"
#include "fuse3_session.h"

/* Operation codes shared with fuse3-wire.ts (OP there). */
enum {
  OP_EXIT = 0, OP_LOOKUP = 1, OP_FORGET = 2, OP_GETATTR = 3, OP_SETATTR = 4, OP_READLINK = 5,
  OP_MKNOD = 6, OP_MKDIR = 7, OP_UNLINK = 8, OP_RMDIR = 9, OP_SYMLINK = 10, OP_RENAME = 11,
  OP_LINK = 12, OP_OPEN = 13, OP_READ = 14, OP_WRITE = 15, OP_RELEASE = 16, OP_FSYNC = 17,
  OP_READDIR = 18, OP_READDIRPLUS = 19, OP_STATFS = 20, OP_SETXATTR = 21, OP_GETXATTR = 22,
  OP_LISTXATTR = 23, OP_REMOVEXATTR = 24, OP_CREATE = 25, OP_FALLOCATE = 26, OP_LSEEK = 27
};

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

/* Under a lent directory the answer is here (fuse3_entries.c). */
static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  session *s = S();
  if (s->lent && lent_lookup(s, req, parent, name)) return;
  napi_value a[2] = {num(s->env, parent), str(s->env, name)};
  dispatch(s, req, OP_LOOKUP, 2, a);
}

static void forget_one(session *s, fuse_ino_t ino, uint64_t nlookup) {
  uint64_t rest = take_forgotten(s, ino, nlookup);
  if (rest == 0) return;
  napi_value a[2] = {num(s->env, ino), num(s->env, (double)rest)};
  dispatch(s, NULL, OP_FORGET, 2, a);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  forget_one(S(), ino, nlookup);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  session *s = S();
  for (size_t i = 0; i < count; i++) forget_one(s, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

/* The handle JS knows (see js_handle), -1 for none. */
static napi_value fh_of(session *s, struct fuse_file_info *fi) { return num(s->env, fi ? (double)js_handle(s, fi) : -1); }

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  napi_value a[2] = {num(ENV, ino), fh_of(S(), fi)};
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
  napi_value a[4] = {num(env, ino), num(env, to_set), values, fh_of(S(), fi)};
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
  napi_value a[5] = {num(ENV, ino), num(ENV, mode), num(ENV, (double)offset), num(ENV, (double)length), fh_of(S(), fi)};
  dispatch(S(), req, OP_FALLOCATE, 5, a);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)off), num(ENV, whence), fh_of(S(), fi)};
  dispatch(S(), req, OP_LSEEK, 4, a);
}

/* Without passthrough JS answers ENOSYS (zero-message opens); with it, only an open that may
 * be passed through reaches JS, which names the upper descriptor (fuse3_passthrough.c). */
static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  session *s = S();
  if (s->passthrough_mode && passthrough_open(s, req, ino, fi)) return;
  napi_value a[3] = {num(s->env, ino), num(s->env, fi->flags), num(s->env, s->passthrough_mode)};
  dispatch(s, req, OP_OPEN, 3, a);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  direct_slot *d = direct_find(S(), ino, js_handle(S(), fi));
  if (d) {
    /* As replyFd: up to size bytes of the descriptor, spliced where the kernel allows it. */
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
    bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
    bv.buf[0].fd = d->fd;
    bv.buf[0].pos = off;
    S()->direct_reads++;
    fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_NONBLOCK);
    return;
  }
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(S(), fi)};
  dispatch(S(), req, OP_READ, 4, a);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  direct_slot *d = direct_find(S(), ino, js_handle(S(), fi));
  if (d && d->writable) {
    /* One pwrite, its count or its errno: what the engine's write does with the same descriptor. */
    ssize_t n = pwrite(d->fd, buf, size, off);
    S()->direct_writes++;
    if (n < 0) fuse_reply_err(req, errno);
    else fuse_reply_write(req, (size_t)n);
    return;
  }
  /* The data lives in the session buffer, which the next request overwrites: JS gets a copy. */
  napi_value data;
  void *copy;
  if (napi_create_buffer_copy(ENV, size, buf, &copy, &data) != napi_ok) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  napi_value a[4] = {num(ENV, ino), data, num(ENV, (double)off), fh_of(S(), fi)};
  dispatch(S(), req, OP_WRITE, 4, a);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  if (S()->passthrough_mode) {
    passthrough_release(S(), req, ino, fi);
    return;
  }
  napi_value a[2] = {num(ENV, ino), fh_of(S(), fi)};
  dispatch(S(), req, OP_RELEASE, 2, a);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  napi_value a[3] = {num(ENV, ino), num(ENV, datasync), fh_of(S(), fi)};
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
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(S(), fi)};
  dispatch(S(), req, OP_READDIR, 4, a);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  napi_value a[4] = {num(ENV, ino), num(ENV, (double)size), num(ENV, (double)off), fh_of(S(), fi)};
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

const struct fuse_lowlevel_ops overpack_ll_ops = {
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

void dispatch_exit(session *s) { dispatch(s, NULL, OP_EXIT, 0, NULL); }
