/*
 * Lookups answered in C: JS lends the addon the whole listing of a directory whose entries
 * can change only through this mount (an image directory no upper layer has touched): every
 * name with its node id and attributes. A LOOKUP under a lent directory is then answered here
 * (a listed name with its entry, any other name with a cached "no such entry"), with no trip
 * to JS. Node start-up asks thousands of these, most of them for names that do not exist.
 *
 * The kernel's lookup counts stay exact: a lookup answered here is counted on its record, a
 * FORGET takes from that count first (take_forgotten) and passes on the rest, and when JS
 * takes the listings back (reclaimEntries, before any request that may change the tree) it
 * receives the counts still held and adds them to its own nodes. Everything here runs on
 * Node's main thread, like the rest of the session: no locking.
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include "napi_util.h"
#include "fuse3_session.h"

typedef struct lent_entry {
  struct lent_entry *next_by_name; /* chain of (parent, name) */
  struct lent_entry *next_by_node; /* chain of nodeid */
  fuse_ino_t parent;
  fuse_ino_t nodeid;
  uint64_t lookups; /* answered here, not yet handed to JS */
  struct stat attr;
  uint32_t hash;
  char name[];
} lent_entry;

struct lent_table {
  lent_entry **by_name;
  lent_entry **by_node;
  size_t buckets; /* a power of two, for both chains */
  size_t count;
  fuse_ino_t *dirs; /* open addressing, 0 is empty; dir_slots a power of two */
  size_t dir_slots;
  size_t dir_count;
  double entry_timeout, attr_timeout, negative_timeout;
  double hits, misses;
};

static uint32_t name_hash(fuse_ino_t parent, const char *name) {
  uint32_t h = 2166136261u ^ (uint32_t)(parent * 2654435761u);
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
  return h;
}

static size_t node_slot(fuse_ino_t id, size_t buckets) { return (size_t)(id * 11400714819323198485ull >> 20) & (buckets - 1); }

static lent_table *table_of(session *s) {
  if (!s->lent) s->lent = calloc(1, sizeof(lent_table));
  return s->lent;
}

static int dir_is_lent(lent_table *t, fuse_ino_t dir) {
  if (!t || t->dir_count == 0) return 0;
  for (size_t i = node_slot(dir, t->dir_slots);; i = (i + 1) & (t->dir_slots - 1)) {
    if (t->dirs[i] == dir) return 1;
    if (t->dirs[i] == 0) return 0;
  }
}

static int add_dir(lent_table *t, fuse_ino_t dir) {
  if ((t->dir_count + 1) * 2 > t->dir_slots) {
    size_t slots = t->dir_slots ? t->dir_slots * 2 : 256;
    fuse_ino_t *dirs = calloc(slots, sizeof *dirs);
    if (!dirs) return -1;
    for (size_t k = 0; k < t->dir_slots; k++) {
      if (!t->dirs[k]) continue;
      size_t i = node_slot(t->dirs[k], slots);
      while (dirs[i]) i = (i + 1) & (slots - 1);
      dirs[i] = t->dirs[k];
    }
    free(t->dirs);
    t->dirs = dirs;
    t->dir_slots = slots;
  }
  size_t i = node_slot(dir, t->dir_slots);
  while (t->dirs[i] && t->dirs[i] != dir) i = (i + 1) & (t->dir_slots - 1);
  if (!t->dirs[i]) t->dir_count++;
  t->dirs[i] = dir;
  return 0;
}

static int grow_entries(lent_table *t, size_t want) {
  if (want * 4 <= t->buckets * 3) return 0;
  size_t buckets = t->buckets ? t->buckets : 1024;
  while (want * 4 > buckets * 3) buckets *= 2;
  lent_entry **by_name = calloc(buckets, sizeof *by_name), **by_node = calloc(buckets, sizeof *by_node);
  if (!by_name || !by_node) {
    free(by_name);
    free(by_node);
    return -1;
  }
  for (size_t k = 0; k < t->buckets; k++) {
    for (lent_entry *e = t->by_name[k], *next; e; e = next) {
      next = e->next_by_name;
      e->next_by_name = by_name[e->hash & (buckets - 1)];
      by_name[e->hash & (buckets - 1)] = e;
      e->next_by_node = by_node[node_slot(e->nodeid, buckets)];
      by_node[node_slot(e->nodeid, buckets)] = e;
    }
  }
  free(t->by_name);
  free(t->by_node);
  t->by_name = by_name;
  t->by_node = by_node;
  t->buckets = buckets;
  return 0;
}

static lent_entry *find_name(lent_table *t, fuse_ino_t parent, const char *name) {
  uint32_t h = name_hash(parent, name);
  for (lent_entry *e = t->by_name[h & (t->buckets - 1)]; e; e = e->next_by_name)
    if (e->hash == h && e->parent == parent && strcmp(e->name, name) == 0) return e;
  return NULL;
}

int lent_lookup(session *s, fuse_req_t req, fuse_ino_t parent, const char *name) {
  lent_table *t = s->lent;
  if (!dir_is_lent(t, parent)) return 0;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  lent_entry *hit = t->count ? find_name(t, parent, name) : NULL;
  /* A directory not lent itself goes to JS, which lends it before answering: the caller's
   * next lookups are most likely in it. */
  if (hit && S_ISDIR(hit->attr.st_mode) && !dir_is_lent(t, hit->nodeid)) return 0;
  if (!hit) {
    e.entry_timeout = t->negative_timeout;
    t->misses++;
    fuse_reply_entry(req, &e);
    return 1;
  }
  e.ino = hit->nodeid;
  e.attr = hit->attr;
  e.entry_timeout = t->entry_timeout;
  e.attr_timeout = t->attr_timeout;
  /* A reply the kernel did not take (the caller was interrupted) counts no lookup. */
  if (fuse_reply_entry(req, &e) == 0) hit->lookups++;
  t->hits++;
  return 1;
}

uint64_t take_forgotten(session *s, fuse_ino_t ino, uint64_t nlookup) {
  lent_table *t = s->lent;
  if (!t || t->count == 0) return nlookup;
  for (lent_entry *e = t->by_node[node_slot(ino, t->buckets)]; e; e = e->next_by_node) {
    if (e->nodeid != ino) continue;
    uint64_t take = e->lookups < nlookup ? e->lookups : nlookup;
    e->lookups -= take;
    return nlookup - take;
  }
  return nlookup;
}

/* lendDir(session, dir, names, nodeids, attrs, entryTimeout, attrTimeout, negativeTimeout):
 * every entry of directory `dir` (names[i], nodeids[i], attributes packed as for replyDir).
 * Returns 0, or -1 when out of memory (nothing lent then). */
static napi_value js_lend_dir(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  session *s = get_session(env, argv[0]);
  if (!s || s->closed) return ret_int(env, -1);
  lent_table *t = table_of(s);
  fuse_ino_t dir = (fuse_ino_t)get_double(env, argv[1]);
  uint32_t n = 0;
  napi_get_array_length(env, argv[2], &n);
  double *ids;
  size_t id_count;
  napi_get_typedarray_info(env, argv[3], NULL, &id_count, (void **)&ids, NULL, NULL);
  if (!t || id_count < n || dir_is_lent(t, dir)) return ret_int(env, -1);
  /* Every entry is made before any is added: a listing lent with a name missing would answer
   * "no such entry" for it. */
  lent_entry **made = calloc(n ? n : 1, sizeof *made);
  int ok = made != NULL;
  for (uint32_t i = 0; ok && i < n; i++) {
    napi_value v;
    char name[1024];
    size_t len = 0;
    napi_get_element(env, argv[2], i, &v);
    ok = napi_get_value_string_utf8(env, v, name, sizeof name, &len) == napi_ok && len < sizeof name - 1;
    if (ok) ok = (made[i] = malloc(sizeof(lent_entry) + len + 1)) != NULL;
    if (!ok) break;
    lent_entry *e = made[i];
    memcpy(e->name, name, len + 1);
    e->parent = dir;
    e->nodeid = (fuse_ino_t)ids[i];
    e->lookups = 0;
    e->hash = name_hash(dir, e->name);
    fill_stat(env, argv[4], i, &e->attr);
  }
  if (!ok || grow_entries(t, t->count + n) != 0 || add_dir(t, dir) != 0) {
    for (uint32_t i = 0; made && i < n; i++) free(made[i]);
    free(made);
    return ret_int(env, -1);
  }
  t->entry_timeout = get_double(env, argv[5]);
  t->attr_timeout = get_double(env, argv[6]);
  t->negative_timeout = get_double(env, argv[7]);
  for (uint32_t i = 0; i < n; i++) {
    lent_entry *e = made[i];
    e->next_by_name = t->by_name[e->hash & (t->buckets - 1)];
    t->by_name[e->hash & (t->buckets - 1)] = e;
    e->next_by_node = t->by_node[node_slot(e->nodeid, t->buckets)];
    t->by_node[node_slot(e->nodeid, t->buckets)] = e;
    t->count++;
  }
  free(made);
  return ret_int(env, 0);
}

/* Frees every lent listing; `counts` (may be NULL) receives [nodeid, lookups] of the entries
 * whose lookups the kernel still holds, and their number is returned. */
static size_t drop_all(lent_table *t, double *counts) {
  size_t held = 0;
  for (size_t k = 0; k < t->buckets; k++) {
    for (lent_entry *e = t->by_name[k], *next; e; e = next) {
      next = e->next_by_name;
      if (e->lookups) {
        if (counts) {
          counts[2 * held] = (double)e->nodeid;
          counts[2 * held + 1] = (double)e->lookups;
        }
        held++;
      }
      free(e);
    }
    t->by_name[k] = NULL;
    t->by_node[k] = NULL;
  }
  if (t->dirs) memset(t->dirs, 0, t->dir_slots * sizeof *t->dirs);
  t->count = 0;
  t->dir_count = 0;
  return held;
}

/* reclaimEntries(session) -> Float64Array of [nodeid, lookups] pairs: every listing taken
 * back, with the lookups answered here that the kernel has not forgotten. */
static napi_value js_reclaim_entries(napi_env env, napi_callback_info info) {
  napi_value buf, out;
  session *s = session_arg(env, info);
  lent_table *t = s ? s->lent : NULL;
  size_t held = 0;
  if (t) {
    for (size_t k = 0; k < t->buckets; k++)
      for (lent_entry *e = t->by_name[k]; e; e = e->next_by_name) held += e->lookups ? 1 : 0;
  }
  void *data;
  CHECK(napi_create_arraybuffer(env, 2 * held * sizeof(double), &data, &buf));
  if (t) drop_all(t, data);
  CHECK(napi_create_typedarray(env, napi_float64_array, 2 * held, buf, 0, &out));
  return out;
}

/* lentCounts(session) -> [lookups answered with an entry, with "no such entry"]. */
static napi_value js_lent_counts(napi_env env, napi_callback_info info) {
  session *s = session_arg(env, info);
  if (!s) return NULL;
  return pair(env, s->lent ? s->lent->hits : 0, s->lent ? s->lent->misses : 0);
}

void free_lent(session *s) {
  lent_table *t = s->lent;
  if (!t) return;
  drop_all(t, NULL);
  free(t->by_name);
  free(t->by_node);
  free(t->dirs);
  free(t);
  s->lent = NULL;
}

void register_entries(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"lendDir", js_lend_dir}, {"reclaimEntries", js_reclaim_entries}, {"lentCounts", js_lent_counts},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
}
