/*
 * Reads and writes answered in C: JS registers a descriptor for a node (handle-less I/O) or a
 * file handle once it has answered a READ or WRITE through it and knows that the file's bytes
 * are exactly that descriptor's (an upper file; never an image, whose bytes are compressed and
 * checked). Later requests for the same key are answered here with one pread (spliced) or
 * pwrite, as JS would have. JS withdraws a descriptor (forgetDirect) synchronously before it
 * closes it or stops using it for that file, so a slot never names a closed or reused
 * descriptor. Node ids and file handles are never reused.
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include "napi_util.h"
#include "fuse3_session.h"

static direct_slot *slot_for(session *s, fuse_ino_t ino, uint64_t fh) {
  return fh ? &s->by_fh[fh % DIRECT_SLOTS] : &s->by_ino[ino % DIRECT_SLOTS];
}

direct_slot *direct_find(session *s, fuse_ino_t ino, uint64_t fh) {
  direct_slot *d = slot_for(s, ino, fh);
  uint64_t key = fh ? fh : ino;
  return key != 0 && d->key == key ? d : NULL;
}

/* directFd(session, ino, fh, fd, writable): requests for (ino, fh) may use fd from now on. */
static napi_value js_direct_fd(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s || s->closed) return NULL;
  fuse_ino_t ino = (fuse_ino_t)get_double(env, argv[1]);
  uint64_t fh = (uint64_t)get_double(env, argv[2]);
  direct_slot *d = slot_for(s, ino, fh);
  d->key = fh ? fh : ino;
  d->fd = (int)get_double(env, argv[3]);
  bool writable = false;
  napi_get_value_bool(env, argv[4], &writable);
  d->writable = writable;
  return NULL;
}

/* forgetDirect(session, fd): no request may use fd any more. */
static napi_value js_forget_direct(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  int fd = (int)get_double(env, argv[1]);
  for (int i = 0; i < DIRECT_SLOTS; i++) {
    if (s->by_fh[i].key && s->by_fh[i].fd == fd) s->by_fh[i].key = 0;
    if (s->by_ino[i].key && s->by_ino[i].fd == fd) s->by_ino[i].key = 0;
  }
  return NULL;
}

/* directCounts(session) -> [reads, writes] answered here. */
static napi_value js_direct_counts(napi_env env, napi_callback_info info) {
  session *s = session_arg(env, info);
  return s ? pair(env, s->direct_reads, s->direct_writes) : NULL;
}

void register_direct(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"directFd", js_direct_fd}, {"forgetDirect", js_forget_direct}, {"directCounts", js_direct_counts},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
}
