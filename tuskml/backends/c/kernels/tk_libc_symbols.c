/* Standard memcpy / memset for freestanding builds of a generated project (no libc linked).
 * Compiled only into firmware images (TK_FREESTANDING defined), never into host test libraries. */
#include <stddef.h>

#include "tk_libc.h"

#if defined(TK_FREESTANDING)
void* memcpy(void* dst, const void* src, size_t n) {
    tk_memcpy(dst, src, (uint32_t)n);
    return dst;
}

void* memset(void* dst, int value, size_t n) {
    tk_memset(dst, value, (uint32_t)n);
    return dst;
}
#endif
