/* Freestanding <string.h> for tuskml firmware: only what runtime/tk_libc.c defines.
 *
 * zig's clang ships no libc headers for freestanding targets, so generated code that includes
 * <string.h> (to be portable to the host) finds this one. Definitions: tk_libc.c (weak).
 */
#ifndef TK_FREESTANDING_STRING_H
#define TK_FREESTANDING_STRING_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int value, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* TK_FREESTANDING_STRING_H */
