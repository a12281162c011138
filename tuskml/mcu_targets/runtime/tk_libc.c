/* The only libc functions a tuskml firmware links: memcpy, memmove, memset, memcmp.
 *
 * They are weak, so generated code that brings its own (faster) versions wins at link time.
 * Compilers emit calls to memcpy/memset for struct copies and zeroing even under -ffreestanding,
 * so something must define them; we link no newlib.
 */
#include <stddef.h>
#include <stdint.h>

#include "tk_runtime.h"

__attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        for (; n >= 4; n -= 4, d += 4, s += 4) *(uint32_t *)d = *(const uint32_t *)s;
    }
    while (n--) *d++ = *s++;
    return dst;
}

__attribute__((weak)) void *memmove(void *dst, const void *src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d == s || n == 0) return dst;
    if (d < s || d >= s + n) return memcpy(dst, src, n);
    while (n--) d[n] = s[n];
    return dst;
}

__attribute__((weak)) void *memset(void *dst, int value, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    uint8_t byte = (uint8_t)value;
    if (((uintptr_t)d & 3u) == 0) {
        uint32_t word = byte * 0x01010101u;
        for (; n >= 4; n -= 4, d += 4) *(uint32_t *)d = word;
    }
    while (n--) *d++ = byte;
    return dst;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}
