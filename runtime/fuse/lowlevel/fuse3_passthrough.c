/*
 * FUSE passthrough (Linux >= 6.9, CONFIG_FUSE_PASSTHROUGH): the kernel reads and writes an
 * upper file itself, through a backing file the server registers (FUSE_DEV_IOC_BACKING_OPEN),
 * instead of sending one READ or WRITE per page to us. Only a server with CAP_SYS_ADMIN may
 * register backing files, so only then is it asked for; everyone else keeps zero-message opens.
 *
 * What it changes in the protocol:
 * - INIT: libfuse before 3.16 cannot ask for passthrough. Its INIT reply is caught on the way
 *   out (the device descriptor swapped for a pipe while libfuse answers) and sent on with
 *   FUSE_PASSTHROUGH and max_stack_depth added (passthrough_init).
 * - OPEN is answered (zero-message opens would leave no reply to carry a backing file), and
 *   RELEASE with it. Read-only opens are answered here; an open for writing goes to JS, which
 *   copies the file up and names its upper descriptor (replyOpen).
 * - The kernel requires every open of an inode to agree: while one is passed through, all are
 *   (to the same backing file), and while one is cached, none is (either mistake fails the
 *   app's open with EIO). Each inode's opens are counted here, by kind, from the reply to the
 *   RELEASE; the kernel drops its count before it sends RELEASE, so ours is never below it.
 *
 * A passed-through open's handle is PT_FH; JS sees handle 0 for every request (as with
 * zero-message opens), and every open JS does not pass through keeps handle 0 too.
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>
#include "napi_util.h"
#include "fuse3_session.h"

/* The kernel ABI of linux/fuse.h 7.40 (the sysroot's headers are older). */
#define K_FUSE_INIT 26
#define K_FUSE_INIT_EXT (1u << 30)
#define K_FUSE_WRITEBACK_CACHE (1u << 16)
#define K_FUSE_HANDLE_KILLPRIV_V2 (1u << 28)
#define K_FUSE_PASSTHROUGH_FLAGS2 (1u << 5) /* FUSE_PASSTHROUGH is 1ULL << 37 */
#define K_FOPEN_PASSTHROUGH (1u << 7)
struct k_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#define K_BACKING_OPEN _IOW(229, 1, struct k_backing_map)
#define K_BACKING_CLOSE _IOW(229, 2, uint32_t)
struct k_in_header {
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};
struct k_init_in {
  uint32_t major, minor, max_readahead, flags, flags2;
};
struct k_out_header {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
struct k_init_out {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
};
struct k_open_out {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
struct k_attr {
  uint64_t ino, size, blocks, atime, mtime, ctime;
  uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct k_entry_out {
  uint64_t nodeid, generation, entry_valid, attr_valid;
  uint32_t entry_valid_nsec, attr_valid_nsec;
  struct k_attr attr;
};
_Static_assert(sizeof(struct k_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct k_init_out) == 40, "fuse_init_out up to max_stack_depth");
_Static_assert(sizeof(struct k_open_out) == 16, "fuse_open_out");
_Static_assert(sizeof(struct k_entry_out) == 128, "fuse_entry_out");

/* Each inode with opens not yet released, by kind. */
typedef struct inode_opens {
  fuse_ino_t ino;
  uint32_t cached; /* answered without passthrough */
  uint32_t passed; /* passed through to `backing` */
  int backing;     /* the kernel's backing id while passed > 0 */
  struct inode_opens *next;
} inode_opens;

#define OPEN_BUCKETS 1024
struct open_table {
  inode_opens *buckets[OPEN_BUCKETS];
};

static inode_opens *opens_of(session *s, fuse_ino_t ino, int make) {
  if (!s->opens) {
    if (!make) return NULL;
    s->opens = calloc(1, sizeof *s->opens);
    if (!s->opens) return NULL;
  }
  inode_opens **head = &s->opens->buckets[ino % OPEN_BUCKETS];
  for (inode_opens *e = *head; e; e = e->next)
    if (e->ino == ino) return e;
  if (!make) return NULL;
  inode_opens *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->ino = ino;
  e->next = *head;
  *head = e;
  return e;
}

static void drop_if_unused(session *s, inode_opens *e) {
  if (e->cached || e->passed) return;
  inode_opens **p = &s->opens->buckets[e->ino % OPEN_BUCKETS];
  while (*p != e) p = &(*p)->next;
  *p = e->next;
  free(e);
}

void free_opens(session *s) {
  if (!s->opens) return;
  for (size_t k = 0; k < OPEN_BUCKETS; k++) {
    for (inode_opens *e = s->opens->buckets[k], *next; e; e = next) {
      next = e->next;
      free(e);
    }
  }
  free(s->opens);
  s->opens = NULL;
}

uint64_t js_handle(const session *s, const struct fuse_file_info *fi) {
  if (!fi) return 0;
  return s->passthrough_mode && fi->fh == PT_FH ? 0 : fi->fh;
}

int passthrough_capable(void) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) != 0) return 0;
  if (!(d[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32)))) return 0;
  /* The kernel wants CAP_SYS_ADMIN in the initial user namespace (capable()): a user
   * namespace's root (rootless containers, unshare -r) has it only in its own. */
  FILE *f = fopen("/proc/self/uid_map", "r");
  if (!f) return 0;
  unsigned long a = 1, b = 1, n = 0;
  int init_ns = fscanf(f, "%lu %lu %lu", &a, &b, &n) == 3 && a == 0 && b == 0 && n == 4294967295UL;
  fclose(f);
  return init_ns;
}

int passthrough_init(session *s, const struct fuse_buf *buf) {
  if (s->init_seen) return 0;
  s->init_seen = 1;
  if (!s->want_passthrough || (buf->flags & FUSE_BUF_IS_FD)) return 0;
  if (buf->size < sizeof(struct k_in_header) + sizeof(struct k_init_in)) return 0;
  const struct k_in_header *in = buf->mem;
  const struct k_init_in *init = (const struct k_init_in *)(in + 1);
  if (in->opcode != K_FUSE_INIT || init->major != 7 || !(init->flags & K_FUSE_INIT_EXT) || !(init->flags2 & K_FUSE_PASSTHROUGH_FLAGS2)) return 0;

  /* libfuse answers into a pipe that stands in for the device for this one request. */
  int dev = fuse_session_fd(s->se);
  int saved = fcntl(dev, F_DUPFD_CLOEXEC, 0), p[2];
  if (saved < 0) return 0;
  if (pipe2(p, O_CLOEXEC) != 0) {
    close(saved);
    return 0;
  }
  dup2(p[1], dev);
  fuse_session_process_buf(s->se, buf);
  dup2(saved, dev);
  fcntl(dev, F_SETFD, FD_CLOEXEC);
  close(saved);
  close(p[1]);
  char reply[512];
  ssize_t n = read(p[0], reply, sizeof reply);
  close(p[0]);
  if (n < (ssize_t)sizeof(struct k_out_header)) {
    fprintf(stderr, "overpack: libfuse wrote no INIT reply (%zd bytes)\n", n);
    fuse_session_exit(s->se);
    return 1;
  }
  struct k_out_header *out = (struct k_out_header *)reply;
  struct k_init_out *io = (struct k_init_out *)(out + 1);
  char unpatched[sizeof reply];
  memcpy(unpatched, reply, (size_t)n);
  if (out->error == 0 && (size_t)n >= sizeof *out + sizeof *io && out->len == (uint32_t)n && !(io->flags & K_FUSE_WRITEBACK_CACHE)) {
    io->flags |= K_FUSE_INIT_EXT;
    io->flags2 |= K_FUSE_PASSTHROUGH_FLAGS2;
    io->max_stack_depth = (uint32_t)s->stack_depth;
    /* Without it the kernel asks for security.capability before every write, a round trip each
     * (16,000 in the SQLite bench) that passthrough cannot spare; with it the kernel marks a
     * file it found clean (S_NOSEC) and asks no more. What it hands the server in exchange:
     * capabilities are removed by the upper's own filesystem, since every write lands in an
     * upper file through write(2); suid/sgid bits must be cleared by the server when a caller
     * without CAP_FSETID writes or truncates, which a root server's write(2) does not do. So
     * only when every caller is the server's own user (no allow_other): root, which has
     * CAP_FSETID unless it was dropped (README, FUSE bindings). */
    if (s->own_callers && (init->flags & K_FUSE_HANDLE_KILLPRIV_V2)) io->flags |= K_FUSE_HANDLE_KILLPRIV_V2;
    s->passthrough_mode = 1;
  }
  if (write(dev, reply, (size_t)n) == n) return 1;
  /* Refused: libfuse's own reply, so that the mount comes up without passthrough. */
  perror("overpack: writing the INIT reply with passthrough");
  s->passthrough_mode = 0;
  if (write(dev, unpatched, (size_t)n) != n) {
    perror("overpack: writing the INIT reply");
    fuse_session_exit(s->se);
  }
  return 1;
}

/* An open the kernel caches (as zero-message opens are: keep_cache, handle 0). */
static int reply_cached(session *s, fuse_req_t req, fuse_ino_t ino) {
  inode_opens *e = opens_of(s, ino, 1);
  if (!e) return fuse_reply_err(req, ENOMEM);
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.keep_cache = 1;
  int rc = fuse_reply_open(req, &fi);
  if (rc == 0) e->cached++;
  else drop_if_unused(s, e);
  return rc;
}

static int reply_passed(session *s, fuse_req_t req, inode_opens *e) {
  struct k_open_out out = {PT_FH, K_FOPEN_PASSTHROUGH, e->backing};
  int rc = fuse_reply_buf(req, (const char *)&out, sizeof out);
  if (rc == 0) {
    e->passed++;
    s->passed_opens++;
  }
  return rc;
}

/* Registers `fd` as node e's backing file, unless the kernel refuses; then passthrough ends
 * for this session when it never can work (no permission), not for one file (ELOOP: a backing
 * file on a stacked filesystem deeper than we declared). */
static int attach_backing(session *s, inode_opens *e, int fd) {
  struct k_backing_map map = {fd, 0, 0};
  int id = ioctl(fuse_session_fd(s->se), K_BACKING_OPEN, &map);
  if (id <= 0) {
    if (errno == EPERM || errno == ENOTTY || errno == EINVAL) s->passthrough_mode = 2;
    return 0;
  }
  e->backing = id;
  /* Pages cached before are stale once the kernel writes the backing file itself; no cached
   * open is left (ours would count it), so no READ of this inode is waiting on us. */
  fuse_lowlevel_notify_inval_inode(s->se, e->ino, 0, 0);
  return 1;
}

static void detach_if_unused(session *s, inode_opens *e) {
  if (e->passed || !e->backing) return;
  uint32_t id = (uint32_t)e->backing;
  ioctl(fuse_session_fd(s->se), K_BACKING_CLOSE, &id);
  e->backing = 0;
}

int passthrough_open(session *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  /* O_TRUNC never arrives (ATOMIC_O_TRUNC is off: the truncation is a SETATTR of its own). */
  int writes = (fi->flags & O_ACCMODE) != O_RDONLY;
  inode_opens *e = opens_of(s, ino, 0);
  if (e && e->passed) reply_passed(s, req, e);
  else if (!writes || (e && e->cached) || s->passthrough_mode != 1) reply_cached(s, req, ino);
  else return 0;
  return 1;
}

int reply_open_passthrough(session *s, fuse_req_t req, fuse_ino_t ino, int fd) {
  inode_opens *e = opens_of(s, ino, 1);
  if (!e) return fuse_reply_err(req, ENOMEM);
  if (e->passed) return reply_passed(s, req, e);
  if (e->cached || fd < 0 || s->passthrough_mode != 1 || !attach_backing(s, e, fd)) return reply_cached(s, req, ino);
  int rc = reply_passed(s, req, e);
  if (rc != 0) {
    detach_if_unused(s, e);
    drop_if_unused(s, e);
  }
  return rc;
}

static uint64_t timeout_sec(double t) { return t <= 0 ? 0 : t >= 1.8e19 ? UINT64_MAX : (uint64_t)t; }
static uint32_t timeout_nsec(double t) {
  if (t <= 0 || t >= 1.8e19) return 0;
  double ns = (t - (double)(uint64_t)t) * 1e9;
  return ns >= 999999999 ? 999999999 : (uint32_t)ns;
}

int reply_create_passthrough(session *s, fuse_req_t req, const struct fuse_entry_param *ep, int fd) {
  inode_opens *e = opens_of(s, ep->ino, 1);
  if (!e) return fuse_reply_err(req, ENOMEM);
  int passed = e->passed || (!e->cached && fd >= 0 && s->passthrough_mode == 1 && attach_backing(s, e, fd));
  if (!passed) {
    struct fuse_file_info fi;
    memset(&fi, 0, sizeof fi);
    fi.keep_cache = 1;
    int rc = fuse_reply_create(req, ep, &fi);
    if (rc == 0) e->cached++;
    else drop_if_unused(s, e);
    return rc;
  }
  /* libfuse's create reply cannot carry a backing id: the same reply, written out here. */
  struct {
    struct k_entry_out entry;
    struct k_open_out open;
  } out;
  memset(&out, 0, sizeof out);
  const struct stat *st = &ep->attr;
  out.entry.nodeid = ep->ino;
  out.entry.generation = ep->generation;
  out.entry.entry_valid = timeout_sec(ep->entry_timeout);
  out.entry.entry_valid_nsec = timeout_nsec(ep->entry_timeout);
  out.entry.attr_valid = timeout_sec(ep->attr_timeout);
  out.entry.attr_valid_nsec = timeout_nsec(ep->attr_timeout);
  struct k_attr *a = &out.entry.attr;
  a->ino = st->st_ino;
  a->size = (uint64_t)st->st_size;
  a->blocks = (uint64_t)st->st_blocks;
  a->atime = (uint64_t)st->st_atim.tv_sec;
  a->mtime = (uint64_t)st->st_mtim.tv_sec;
  a->ctime = (uint64_t)st->st_ctim.tv_sec;
  a->atimensec = (uint32_t)st->st_atim.tv_nsec;
  a->mtimensec = (uint32_t)st->st_mtim.tv_nsec;
  a->ctimensec = (uint32_t)st->st_ctim.tv_nsec;
  a->mode = st->st_mode;
  a->nlink = (uint32_t)st->st_nlink;
  a->uid = st->st_uid;
  a->gid = st->st_gid;
  a->rdev = (uint32_t)st->st_rdev;
  a->blksize = (uint32_t)st->st_blksize;
  out.open.fh = PT_FH;
  out.open.open_flags = K_FOPEN_PASSTHROUGH;
  out.open.backing_id = e->backing;
  int rc = fuse_reply_buf(req, (const char *)&out, sizeof out);
  if (rc == 0) {
    e->passed++;
    s->passed_opens++;
  } else {
    detach_if_unused(s, e);
    drop_if_unused(s, e);
  }
  return rc;
}

void passthrough_release(session *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  inode_opens *e = opens_of(s, ino, 0);
  if (e) {
    if (fi->fh == PT_FH) {
      if (e->passed) e->passed--;
      detach_if_unused(s, e);
    } else if (e->cached) {
      e->cached--;
    }
    drop_if_unused(s, e);
  }
  fuse_reply_err(req, 0);
}

/* replyOpen(req, ino, fd): an open for writing, passed through to the upper descriptor fd, or
 * cached when fd is -1 or the inode's other opens are. */
static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  fuse_req_t req = (fuse_req_t)(uintptr_t)get_double(env, argv[0]);
  session *s = fuse_req_userdata(req);
  int rc = reply_open_passthrough(s, req, (fuse_ino_t)get_double(env, argv[1]), (int)get_double(env, argv[2]));
  return answered(env, s, rc);
}

/* passthroughState(session) -> [mode, opens passed through]: mode 0 off, 1 on, 2 refused by the kernel. */
static napi_value js_passthrough_state(napi_env env, napi_callback_info info) {
  session *s = session_arg(env, info);
  return s ? pair(env, s->passthrough_mode, s->passed_opens) : NULL;
}

void register_passthrough(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"replyOpen", js_reply_open}, {"passthroughState", js_passthrough_state},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
}
