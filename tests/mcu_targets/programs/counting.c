/* Cortex-M only: functions written in assembly so their instruction counts are known exactly.
 *
 * count_loop(n), n >= 1: 1 + 3n + 2 = 3n + 3 instructions. pick(x): 5 instructions whatever x
 * (the IT instruction and the skipped conditional instruction count as executed).
 * run_all(n) calls count_loop(n), count_loop(2n) and pick(n) twice. */
#include <stdint.h>

volatile int32_t tk_n = 10;
volatile int32_t tk_result[3];

__attribute__((naked, noinline)) int32_t count_loop(int32_t n) {
    __asm__ volatile(
        "movs r1, #0\n"
        "1:\n"
        "adds r1, r1, #1\n"
        "cmp r1, r0\n"
        "bne 1b\n"
        "mov r0, r1\n"
        "bx lr\n");
}

__attribute__((naked, noinline)) int32_t pick(int32_t x) {
    __asm__ volatile(
        "cmp r0, #5\n"
        "ite ge\n"
        "movge r0, #1\n"
        "movlt r0, #0\n"
        "bx lr\n");
}

__attribute__((noinline)) int32_t run_all(int32_t n) {
    int32_t a = count_loop(n);
    int32_t b = count_loop(2 * n);
    tk_result[0] = a;
    tk_result[1] = b;
    tk_result[2] = pick(n) + pick(n - 10);
    return a + b;
}

int main(void) { return run_all(tk_n) == 3 * tk_n ? 0 : 1; }
