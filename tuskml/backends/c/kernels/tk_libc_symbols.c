/* Standard memcpy / memset for freestanding builds of a generated project (no libc linked).
 * Active only in freestanding builds (-ffreestanding, __STDC_HOSTED__ == 0); empty on a hosted build. */
#include <stddef.h>

#include "tk_libc.h"

#if !__STDC_HOSTED__
void* memcpy(void* dst, const void* src, size_t n) {
    tk_memcpy(dst, src, (uint32_t)n);
    return dst;
}

void* memset(void* dst, int value, size_t n) {
    tk_memset(dst, value, (uint32_t)n);
    return dst;
}
#endif
