/*
 * zstd for the image's compressed frames (runtime/image/codec.ts), from the libzstd that
 * travels beside the addon (rpath $ORIGIN) like libfuse 3: Node has zstd in zlib only from
 * 22.15, and bundles run on older Nodes and are built by them.
 *
 * zstdDecompress refuses a frame that does not say its size or says another size than the
 * one the image records, and one that inflates to anything else: a damaged frame can never
 * write past the buffer it is given, nor leave part of it stale.
 * Called on the JS thread: a frame is at most 1 MiB, which inflates in about a millisecond.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <zstd.h>
#include "napi_util.h"
#include "codec.h"

/* Reused for every frame: creating a context costs more than inflating a small frame. */
static ZSTD_DCtx *dctx;
static ZSTD_CCtx *cctx;

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, data, len) == napi_ok;
}

/* zstdCompress(src, level[, checksum]): a new Buffer with one zstd frame that records its
 * content size (and, with checksum, zstd's own checksum of it: for the runtime, which the
 * loader checks with nothing else). Big inputs are compressed with two worker threads, a
 * fixed count, so the frame depends on the input, level and libzstd only (a libzstd without
 * threads makes another frame, which decodes the same). */
static napi_value js_compress(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *src;
  size_t len;
  if (argc < 2 || !get_buffer(env, argv[0], &src, &len)) {
    napi_throw_type_error(env, NULL, "zstdCompress(src: Buffer, level: number, checksum?: boolean)");
    return NULL;
  }
  bool checksum = false;
  if (argc >= 3) napi_get_value_bool(env, argv[2], &checksum);
  if (!cctx && !(cctx = ZSTD_createCCtx())) {
    napi_throw_error(env, NULL, "overpack: out of memory (zstd)");
    return NULL;
  }
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, (int)get_double(env, argv[1]));
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, checksum ? 1 : 0);
  if (len > (8u << 20)) ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, 2); /* an error without threads: one then */
  size_t bound = ZSTD_compressBound(len);
  void *out = malloc(bound);
  if (!out) {
    napi_throw_error(env, NULL, "overpack: out of memory (zstd)");
    return NULL;
  }
  size_t n = ZSTD_compress2(cctx, out, bound, src, len);
  napi_value result = NULL;
  if (ZSTD_isError(n)) napi_throw_error(env, NULL, ZSTD_getErrorName(n));
  else if (napi_create_buffer_copy(env, n, out, NULL, &result) != napi_ok) napi_throw_error(env, NULL, "overpack: out of memory (zstd)");
  free(out);
  return result;
}

/* zstdDecompress(src, dst): 0 when src inflates to exactly dst.length bytes, written into dst;
 * else -1 (not a frame of that size) or -2 (damaged). */
static napi_value js_decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *src, *dst;
  size_t slen, dlen;
  if (argc < 2 || !get_buffer(env, argv[0], &src, &slen) || !get_buffer(env, argv[1], &dst, &dlen)) {
    napi_throw_type_error(env, NULL, "zstdDecompress(src: Buffer, dst: Buffer)");
    return NULL;
  }
  unsigned long long said = ZSTD_getFrameContentSize(src, slen);
  if (said == ZSTD_CONTENTSIZE_UNKNOWN || said == ZSTD_CONTENTSIZE_ERROR || said != dlen) return ret_int(env, -1);
  if (!dctx && !(dctx = ZSTD_createDCtx())) {
    napi_throw_error(env, NULL, "overpack: out of memory (zstd)");
    return NULL;
  }
  size_t n = ZSTD_decompressDCtx(dctx, dst, dlen, src, slen);
  return ret_int(env, ZSTD_isError(n) || n != dlen ? -2 : 0);
}

void register_codec(napi_env env, napi_value exports) {
  const named_fn fns[] = {
    {"zstdCompress", js_compress}, {"zstdDecompress", js_decompress},
  };
  export_fns(env, exports, fns, sizeof fns / sizeof fns[0]);
}
