/* Portable test program (host and Cortex-M): an int8 dot product, int32 outputs in a global
 * buffer, memcpy/memset, float and double math. The exit code is a checksum the test recomputes. */
#include <stdint.h>
#include <string.h>
#ifdef __arm__
#include "tk_runtime.h"
#else
#include <stdio.h>
#endif

int8_t tk_input[64] = {1, -2, 3, -4, 5};
int32_t tk_output[4];
volatile double tk_scale = 1.5;

__attribute__((noinline)) int32_t dot_s8(const int8_t *a, const int8_t *b, int n) {
    int32_t acc = 0;
    for (int i = 0; i < n; i++) acc += (int32_t)a[i] * b[i];
    return acc;
}

int main(void) {
    int8_t copy[64];
    memcpy(copy, tk_input, sizeof copy);
    memset(tk_output, 0, sizeof tk_output);
    tk_output[0] = dot_s8(copy, copy, 64);           /* sum of squares */
    tk_output[1] = dot_s8(copy, copy + 32, 32);      /* first half . second half */
    int32_t sum = 0;
    for (int i = 0; i < 64; i++) sum += copy[i];
    tk_output[2] = sum;
    tk_output[3] = (int32_t)((double)sum * tk_scale * (float)2.0f); /* 3 * sum, through the FPU */
#ifdef __arm__
    tk_puts("arith done\n");
#else
    printf("%d %d %d %d\n", (int)tk_output[0], (int)tk_output[1], (int)tk_output[2], (int)tk_output[3]);
#endif
    return (int)((tk_output[0] + tk_output[1] + tk_output[2] + tk_output[3]) & 0x7f);
}
