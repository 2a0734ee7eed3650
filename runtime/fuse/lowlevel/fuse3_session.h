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

/* Each inode's opens by kind, under passthrough (fuse3_passthrough.c). */
typedef struct open_table open_table;

/* The handle of an open passed through to a backing file (JS sees 0, see js_handle). */
#define PT_FH ((uint64_t)1 << 62)

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
  /* Passthrough (fuse3_passthrough.c): asked for at mount (MOUNT_PASSTHROUGH, and only with
   * CAP_SYS_ADMIN), the stack depth to declare, whether INIT was seen, and the outcome: 0 off
   * (zero-message opens), 1 on, 2 negotiated but refused by the kernel (opens answered, cached). */
  int want_passthrough;
  int stack_depth;
  /* Only the server's own user can use the mount (no allow_other): see passthrough_init. */
  int own_callers;
  int init_seen;
  int passthrough_mode;
  open_table *opens;
  double passed_opens;
} session;

/* The libfuse callbacks: each hands its request to the JS dispatcher (fuse3_requests.c). */
extern const struct fuse_lowlevel_ops overpack_ll_ops;

/* Tells the JS dispatcher the mount ended (unmounted from outside or aborted). */
void dispatch_exit(session *s);

/* The session of a JS value from mount(), or NULL with a TypeError thrown. */
session *get_session(napi_env env, napi_value v);

/* The session a function taking only a session was called with, or NULL with an error thrown. */
session *session_arg(napi_env env, napi_callback_info info);

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

/* One request fewer outstanding, after a reply function answered with `rc` (fuse3_replies.c). */
napi_value answered(napi_env env, session *s, int rc);

/* Passthrough (fuse3_passthrough.c). Whether this process may register backing files. */
int passthrough_capable(void);

/* Called with each request before libfuse sees it: answers the INIT itself, with passthrough
 * asked for, and returns 1; otherwise 0. */
int passthrough_init(session *s, const struct fuse_buf *buf);

/* An OPEN under passthrough: answered here (1), or 0: JS must name the upper descriptor (replyOpen). */
int passthrough_open(session *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* A CREATE's reply under passthrough: passed through to `fd` (-1: cached). */
int reply_create_passthrough(session *s, fuse_req_t req, const struct fuse_entry_param *ep, int fd);

/* A RELEASE under passthrough, answered. */
void passthrough_release(session *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* The handle JS knows a request by (0 for passed-through opens). */
uint64_t js_handle(const session *s, const struct fuse_file_info *fi);

/* Frees the open counts (the session is going). */
void free_opens(session *s);

/* Registers replyOpen and passthroughState (fuse3_passthrough.c). */
void register_passthrough(napi_env env, napi_value exports);

/* Registers the reply functions (fuse3_replies.c) on the addon's exports. */
void register_replies(napi_env env, napi_value exports);

#endif
