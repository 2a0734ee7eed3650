/* What the addon's FUSE files share: the session (one mount served on Node's event loop) and
 * the functions that cross between requests (fuse3_requests.c), replies (fuse3_replies.c) and
 * the session's life (overpack_fuse3.c). */
#ifndef OVERPACK_FUSE3_SESSION_H
#define OVERPACK_FUSE3_SESSION_H
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <uv.h>
#include <stdint.h>

/* Before every write the kernel asks for the file's security.capability (to drop it, as a
 * write must); almost no file has one. The answer "none" is remembered per node here, so those
 * requests are answered without a trip to JS, and forgotten when that xattr is set or removed
 * through the mount. Node ids are never reused (node-table.ts), so a remembered id stays right; a
 * slot taken by another id only means asking JS again. */
#define NO_CAPS_SLOTS 4096
#define CAPS_XATTR "security.capability"

/* Descriptors JS lets C read and write directly (fuse3_direct.c): a READ or WRITE of a file
 * whose bytes are those of an upper file is then answered here, without a trip to JS. Keyed by
 * the kernel's file handle, or by node id for handle-less I/O (fh 0); direct-mapped, a slot
 * taken by another key only means asking JS. */
#define DIRECT_SLOTS 1024
typedef struct direct_slot {
  uint64_t key; /* 0: empty (no node id or handle is 0) */
  int fd;
  int writable;
} direct_slot;

/* Directory listings JS lent the addon, to answer LOOKUPs under them (fuse3_entries.c). */
typedef struct lent_table lent_table;

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
  direct_slot by_fh[DIRECT_SLOTS];
  direct_slot by_ino[DIRECT_SLOTS];
  lent_table *lent;
  /* Requests answered directly, for OVERPACK_FUSE_STATS. */
  double direct_reads, direct_writes;
} session;

/* The libfuse callbacks: each hands its request to the JS dispatcher (fuse3_requests.c). */
extern const struct fuse_lowlevel_ops overpack_ll_ops;

/* Tells the JS dispatcher the mount ended (unmounted from outside or aborted). */
void dispatch_exit(session *s);

/* The session of a JS value from mount(), or NULL with a TypeError thrown. */
session *get_session(napi_env env, napi_value v);

/* Frees the session once it is closed and nothing is outstanding. */
void finish_session(session *s);

/* The descriptor for a READ or WRITE of node `ino` through handle `fh` (0: handle-less), or
 * NULL when JS must answer. */
direct_slot *direct_find(session *s, fuse_ino_t ino, uint64_t fh);

/* Registers directFd, forgetDirect and directCounts (fuse3_direct.c) on the exports. */
void register_direct(napi_env env, napi_value exports);

/* Answers a LOOKUP under a lent directory and returns 1, or returns 0: JS must answer. */
int lent_lookup(session *s, fuse_req_t req, fuse_ino_t parent, const char *name);

/* A FORGET of `nlookup` lookups of `ino`: takes those answered by lent_lookup, returns the rest (JS's). */
uint64_t take_forgotten(session *s, fuse_ino_t ino, uint64_t nlookup);

/* Frees the lent listings (the session is going). */
void free_lent(session *s);

/* Registers lendDir, reclaimEntries and lentCounts (fuse3_entries.c) on the exports. */
void register_entries(napi_env env, napi_value exports);

/* Attributes `index` of a Float64Array packed as fuse3-wire.ts packAttr does, into *st. */
void fill_stat(napi_env env, napi_value arr, size_t index, struct stat *st);

/* Registers the reply functions (fuse3_replies.c) on the addon's exports. */
void register_replies(napi_env env, napi_value exports);

#endif
