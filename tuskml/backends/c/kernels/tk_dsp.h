/* Cortex-M DSP-extension primitives used by the *_dsp kernels.
 *
 * With __ARM_FEATURE_DSP (Cortex-M4/M7 built with -mcpu=cortex-m7 etc.) each helper is the single
 * instruction (inline asm, so it works with gcc and clang alike). Everywhere else the helper is a
 * bit-exact C emulation of that instruction, so the DSP kernels can be compiled and tested on the
 * host and must give the same bytes as on the microcontroller.
 */
#ifndef TK_DSP_H
#define TK_DSP_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TK_HAVE_DSP_INSTRUCTIONS 1

/* SXTB16: sign-extend bytes 0 and 2 of x into the two int16 halves. */
static inline __attribute__((always_inline)) uint32_t tk_sxtb16(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}

/* SXTB16 with ROR #8: sign-extend bytes 1 and 3 of x into the two int16 halves. */
static inline __attribute__((always_inline)) uint32_t tk_sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* SADD16: lane-wise int16 addition (wrapping), no flags used. */
static inline __attribute__((always_inline)) uint32_t tk_sadd16(uint32_t a, uint32_t b) {
    uint32_t r;
    __asm__("sadd16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* SMLAD: acc + lo(a)*lo(b) + hi(a)*hi(b), int16 lanes, int32 accumulate (wraps mod 2^32). */
static inline __attribute__((always_inline)) int32_t tk_smlad(uint32_t a, uint32_t b, int32_t acc) {
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

/* SMLABB / SMLATT: acc + lo(a)*lo(b) (BB) or hi(a)*hi(b) (TT), int16 lanes, int32 accumulate (wraps). */
static inline __attribute__((always_inline)) int32_t tk_smlabb(uint32_t a, uint32_t b, int32_t acc) {
    int32_t r;
    __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

static inline __attribute__((always_inline)) int32_t tk_smlatt(uint32_t a, uint32_t b, int32_t acc) {
    int32_t r;
    __asm__("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}

/* PKHBT: low half from a, high half from (b << 16). */
static inline __attribute__((always_inline)) uint32_t tk_pkhbt16(uint32_t a, uint32_t b) {
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* QADD: a + b saturated to int32. */
static inline __attribute__((always_inline)) int32_t tk_qadd(int32_t a, int32_t b) {
    int32_t r;
    __asm__("qadd %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* SSAT #8: x saturated to [-128, 127] (ARMv7-M base ISA, grouped here with the other helpers). */
static inline __attribute__((always_inline)) int32_t tk_ssat8(int32_t x) {
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x) : "cc");
    return r;
}

#else
#define TK_HAVE_DSP_INSTRUCTIONS 0

static inline uint32_t tk_sxtb16(uint32_t x) {
    uint32_t lo = (uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xFFu);
    uint32_t hi = (uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xFFu);
    return lo | (hi << 16);
}

static inline uint32_t tk_sxtb16_ror8(uint32_t x) {
    return tk_sxtb16((x >> 8) | (x << 24));
}

static inline uint32_t tk_sadd16(uint32_t a, uint32_t b) {
    uint32_t lo = (a + b) & 0xFFFFu;
    uint32_t hi = ((a >> 16) + (b >> 16)) & 0xFFFFu;
    return lo | (hi << 16);
}

static inline int32_t tk_smlad(uint32_t a, uint32_t b, int32_t acc) {
    int32_t a_lo = (int16_t)(a & 0xFFFFu), a_hi = (int16_t)(a >> 16);
    int32_t b_lo = (int16_t)(b & 0xFFFFu), b_hi = (int16_t)(b >> 16);
    /* Each product fits int32; the sum wraps modulo 2^32 exactly like the instruction's result. */
    uint32_t sum = (uint32_t)acc + (uint32_t)(a_lo * b_lo) + (uint32_t)(a_hi * b_hi);
    return (int32_t)sum;
}

static inline int32_t tk_smlabb(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a & 0xFFFFu) * (int32_t)(int16_t)(b & 0xFFFFu)));
}

static inline int32_t tk_smlatt(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16)));
}

static inline uint32_t tk_pkhbt16(uint32_t a, uint32_t b) {
    return (a & 0xFFFFu) | (b << 16);
}

static inline int32_t tk_qadd(int32_t a, int32_t b) {
    int64_t r = (int64_t)a + (int64_t)b;
    return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
}

static inline int32_t tk_ssat8(int32_t x) {
    return x > 127 ? 127 : (x < -128 ? -128 : x);
}
#endif

/* Unaligned-safe 32-bit load (one LDR on ARMv7E-M, which allows unaligned word loads). */
static inline uint32_t tk_read_u32(const void* p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#endif
