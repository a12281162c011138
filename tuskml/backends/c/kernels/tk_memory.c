/* tk_memcpy / tk_memset (see tk_libc.h). Written so the compiler cannot turn the loops back into
 * calls to memcpy/memset (which may not exist, or may be these very functions). */
#include "tk_libc.h"

/* word type allowed to alias any object (the buffers are int8 arrays) */
typedef uint32_t __attribute__((may_alias)) tk_alias_u32;

#if defined(__clang__)
#define TK_NO_BUILTIN __attribute__((no_builtin))
#elif defined(__GNUC__)
#define TK_NO_BUILTIN __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define TK_NO_BUILTIN
#endif

TK_NO_BUILTIN void tk_memcpy(void* dst, const void* src, uint32_t n) {
    uint8_t* d = (uint8_t*)dst;
    const uint8_t* s = (const uint8_t*)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        while (n >= 4) {
            *(tk_alias_u32*)d = *(const tk_alias_u32*)s;
            d += 4;
            s += 4;
            n -= 4;
        }
    }
    while (n--) {
        *d++ = *s++;
    }
}

TK_NO_BUILTIN void tk_memset(void* dst, int value, uint32_t n) {
    uint8_t* d = (uint8_t*)dst;
    const uint8_t v = (uint8_t)value;
    if (((uintptr_t)d & 3u) == 0) {
        const uint32_t word = (uint32_t)v * 0x01010101u;
        while (n >= 4) {
            *(tk_alias_u32*)d = word;
            d += 4;
            n -= 4;
        }
    }
    while (n--) {
        *d++ = v;
    }
}
