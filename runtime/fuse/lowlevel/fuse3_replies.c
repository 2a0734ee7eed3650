/*
 * Replies, JS to kernel: the functions JS answers a request with, each exactly once per
 * request (a request is freed by its reply). Attributes, entries and directory listings are
 * decoded from the flat arrays fuse3-wire.ts encodes; replyFd answers a READ straight from a
 * file descriptor. A reply after the session was closed goes nowhere, and the last one
 * outstanding frees the session.
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include "napi_util.h"
#include "fuse3_session.h"

/* Open reply flags (bits of a JS number). */
#define OPEN_KEEP_CACHE 1
#define OPEN_DIRECT_IO 2
#define OPEN_CACHE_DIR 4

/* Attributes travel as 16 doubles: ino mode nlink uid gid rdev size blksize blocks, atime mtime
 * ctime (whole seconds), dev, then the nanoseconds of atime mtime ctime. Seconds and nanoseconds
 * apart because one double of milliseconds cannot hold a nanosecond time exactly. */
#define ATTR_FIELDS 16

static fuse_req_t get_req(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return (fuse_req_t)(uintptr_t)d;
}

/* Every reply function ends with this: one request fewer outstanding. */
napi_value answered(napi_env env, session *s, int rc) {
  if (s->outstanding > 0) s->outstanding--;
  if (s->closed && s->outstanding == 0 && s->se) finish_session(s);
  return num(env, rc);
}

/* The session is taken before the reply: replying frees the request. */
#define REPLY(call)                          \
  session *replying = fuse_req_userdata(req); \
  return answered(env, replying, (call))

void fill_stat(napi_env env, napi_value arr, size_t index, struct stat *st) {
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

/* replyCreate(req, nodeid, attr, entryTimeout, attrTimeout, fh, openFlags, passthroughFd):
 * under passthrough the open is passed through to passthroughFd (-1: cached), fh and flags unused. */
static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  fill_entry(env, argv + 1, &e);
  fill_open(env, argv[5], argv[6], &fi);
  fuse_req_t req = get_req(env, argv[0]);
  session *s = fuse_req_userdata(req);
  if (s->passthrough_mode) return answered(env, s, reply_create_passthrough(s, req, &e, argc >= 8 ? (int)get_double(env, argv[7]) : -1));
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

/* replyLseek(req, offset) */
static napi_value js_reply_lseek(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = get_req(env, argv[0]);
  REPLY(fuse_reply_lseek(req, (off_t)get_double(env, argv[1])));
}

void register_replies(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"replyErr", js_reply_err}, {"replyEntry", js_reply_entry}, {"replyCreate", js_reply_create},
    {"replyAttr", js_reply_attr}, {"replyBuf", js_reply_buf}, {"replyFd", js_reply_fd},
    {"replyWrite", js_reply_write}, {"replyXattrSize", js_reply_xattr}, {"replyReadlink", js_reply_readlink},
    {"replyStatfs", js_reply_statfs}, {"replyDir", js_reply_dir}, {"replyLseek", js_reply_lseek},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
}
