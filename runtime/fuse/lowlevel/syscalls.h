/* The addon's system calls (syscalls.c), registered on the exports by the addon's init. */
#ifndef OVERPACK_SYSCALLS_H
#define OVERPACK_SYSCALLS_H
#include <node_api.h>
void register_syscalls(napi_env env, napi_value exports);
#endif
