/* tuskml Cortex-M runtime: semihosting exit/print and the few libc functions generated code may use.
 *
 * Programs built by tuskml.mcu_targets for a Cortex-M target link startup_cortexm.c and
 * tk_libc.c. `main` returns the process exit code; the startup code passes it to the emulator
 * through semihosting (SYS_EXIT_EXTENDED). On the host these declarations come from libc instead.
 */
#ifndef TK_RUNTIME_H
#define TK_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Ends the program with `code` as its exit status (semihosting SYS_EXIT_EXTENDED). */
void tk_exit(int code) __attribute__((noreturn));

/* Writes a NUL-terminated string to the debugger console (semihosting SYS_WRITE0). */
void tk_puts(const char *text);

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int value, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* TK_RUNTIME_H */
