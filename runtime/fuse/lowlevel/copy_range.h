/* The addon's ranged copy (copy_range.c), registered on the exports by the addon's init. */
#ifndef OVERPACK_COPY_RANGE_H
#define OVERPACK_COPY_RANGE_H
#include <node_api.h>
void register_copy_range(napi_env env, napi_value exports);
#endif
