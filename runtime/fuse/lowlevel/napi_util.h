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

#endif
