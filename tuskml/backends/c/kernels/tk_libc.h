/* The only C-library functions the kernels use: byte copy and fill.
 *
 * tk_memcpy / tk_memset are the kernels' own names, so the kernel library can be loaded into a
 * host process (tests) without shadowing the host's libc. tk_libc.c additionally defines the
 * standard memcpy/memset symbols for freestanding (-nostdlib) builds, where the compiler may emit
 * calls to them for struct copies or recognised loops. */
#ifndef TK_LIBC_H
#define TK_LIBC_H

#include <stdint.h>

void tk_memcpy(void* dst, const void* src, uint32_t n);
void tk_memset(void* dst, int value, uint32_t n);

#endif
