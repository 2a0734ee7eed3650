/* The addon's zstd functions (codec.c), registered on the exports by the addon's init. */
#ifndef OVERPACK_CODEC_H
#define OVERPACK_CODEC_H
#include <node_api.h>
void register_codec(napi_env env, napi_value exports);
#endif
