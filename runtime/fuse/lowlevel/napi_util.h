/* Small N-API helpers shared by the addon's C files. */
#ifndef OVERPACK_NAPI_UTIL_H
#define OVERPACK_NAPI_UTIL_H
#include <node_api.h>

/* Throws and returns NULL from the calling N-API function when an N-API call fails. */
#define CHECK(call)                                                                  \
  do {                                                                               \
    if ((call) != napi_ok) {                                                         \
      napi_throw_error(env, NULL, "overpack-fuse3: N-API call failed: " #call);      \
      return NULL;                                                                   \
    }                                                                                \
  } while (0)

static inline napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static inline napi_value str(napi_env env, const char *s) {
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

static inline double get_double(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static inline napi_value ret_int(napi_env env, int rc) { return num(env, rc); }

/* [a, b]: the two counts a stats function returns (NULL with an error thrown if it cannot). */
static inline napi_value pair(napi_env env, double a, double b) {
  napi_value out;
  CHECK(napi_create_array_with_length(env, 2, &out));
  napi_set_element(env, out, 0, num(env, a));
  napi_set_element(env, out, 1, num(env, b));
  return out;
}

/* A function a C file puts on the addon's exports. */
typedef struct named_fn {
  const char *name;
  napi_callback fn;
} named_fn;

static inline void export_fns(napi_env env, napi_value exports, const named_fn *fns, size_t count) {
  for (size_t i = 0; i < count; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
}

#endif
