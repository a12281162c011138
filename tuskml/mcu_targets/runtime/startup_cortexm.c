/* Startup code for tuskml's Cortex-M targets: vector table, .data copy, .bss zeroing, FPU enable,
 * main(), then exit through semihosting so an emulator (unicorn, QEMU) gets the exit code.
 *
 * The linker script written by tuskml.mcu_targets.linker provides _sidata, _sdata, _edata, _sbss,
 * _ebss and _estack. Any fault ends the program with exit code TK_EXIT_FAULT so a crash is never
 * mistaken for success.
 */
#include <stdint.h>

#include "tk_runtime.h"

#define TK_EXIT_FAULT 0xFA
#define SEMIHOSTING_SYS_WRITE0 0x04u
#define SEMIHOSTING_SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
int main(void);

static uint32_t semihosting_call(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tk_exit(int code) {
    static volatile uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)code;
    semihosting_call(SEMIHOSTING_SYS_EXIT_EXTENDED, (const void *)block);
    for (;;) {
    }
}

void tk_puts(const char *text) { semihosting_call(SEMIHOSTING_SYS_WRITE0, text); }

void Reset_Handler(void) __attribute__((noreturn));
void Reset_Handler(void) {
    /* Plain loops, not memcpy: nothing may be called before .data and .bss are set up. */
    uint32_t *src = _sidata;
    for (uint32_t *dst = _sdata; dst < _edata;) *dst++ = *src++;
    for (uint32_t *dst = _sbss; dst < _ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    /* CPACR: full access to coprocessors 10 and 11 (the FPU) before any float instruction. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    tk_exit(main());
}

static void Fault_Handler(void) { tk_exit(TK_EXIT_FAULT); }

typedef void (*tk_vector)(void);

/* Cortex-M core vectors (16 entries); our programs use no peripheral interrupts. */
__attribute__((section(".isr_vector"), used)) const tk_vector tk_vector_table[16] = {
    (tk_vector)(uintptr_t)_estack, /* initial stack pointer */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};
