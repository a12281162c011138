/* Fixed-point requantisation, mirroring tuskml/backends/sparse_engine/fixedpoint.py line by line.
 *
 * TFLite's MultiplyByQuantizedMultiplier with *double rounding*:
 *   SaturatingRoundingDoublingHighMul (round half away from zero of a*b/2^31, saturating the single
 *   overflow case INT32_MIN*INT32_MIN) followed by RoundingDivideByPOT (round half away from zero of
 *   x/2^e). A positive shift is a left shift applied to the input before the multiply.
 * All helpers are static inline so each kernel gets them without call overhead.
 */
#ifndef TK_REQUANT_H
#define TK_REQUANT_H

#include <stdint.h>

#include "tk_dsp.h"

static inline int32_t tk_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    /* gemmlowp computes (ab + nudge) / 2^31 truncating toward zero, nudge = ab >= 0 ? 2^30 : 1 - 2^30.
     * For every int64 ab that equals floor((ab + 2^30) / 2^31): for ab < 0 the truncation is a ceiling
     * and ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 1 - 2^30 + 2^31 - 1) / 2^31). One add and an
     * arithmetic shift instead of a sign-dependent nudge and a division (README: "requantisation"). */
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

static inline int32_t tk_rdbpot(int32_t x, int32_t exponent) {
    /* gemmlowp's form, all in 32 bits (a 64-bit variable shift costs ~20 Thumb instructions) */
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* arithmetic right shift of a negative int32: implementation-defined in C99, arithmetic on every
     * compiler we target (gcc, clang) */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t tk_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
    int32_t xs = x;
    int32_t right = -shift;
    if (shift > 0) {
        /* positive shift: multiply first, saturating the product to int32 (fixedpoint.py) */
        int64_t wide = (int64_t)x * ((int64_t)1 << shift);
        xs = wide > INT32_MAX ? INT32_MAX : (wide < INT32_MIN ? INT32_MIN : (int32_t)wide);
        right = 0;
    }
    return tk_rdbpot(tk_srdhm(xs, multiplier), right);
}

/* a / b rounded half away from zero, b > 0 (fixedpoint.div_round). */
static inline int32_t tk_div_round(int32_t a, int32_t b) {
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

static inline int32_t tk_clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* v + zp clamped to [lo, hi] (lo, hi, zp within int8), never forming v + zp where it could overflow
 * int32: the specification adds in int64, so a (near-)saturated v must still clamp correctly. */
static inline int8_t tk_offset_clamp_s8(int32_t v, int32_t zp, int32_t lo, int32_t hi) {
    if (v > hi - zp) {
        return (int8_t)hi;
    }
    if (v < lo - zp) {
        return (int8_t)lo;
    }
    return (int8_t)(v + zp);
}

/* acc -> int8: requantise, add the output zero point, clamp to the fused activation range. */
static inline int8_t tk_requant_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t out_zp,
                                   int32_t act_min, int32_t act_max) {
    return tk_offset_clamp_s8(tk_mbqm(acc, multiplier, shift), out_zp, act_min, act_max);
}

/* ---- The fast exact path (README: "requantisation") ----------------------------------------------
 * For a channel with multiplier m != INT32_MIN and shift s in [-TK_FAST_MAX_EXPONENT, -1] (every
 * multiplier QuantizeMultiplier gives for a real scale in [2^-23, 0.5) -- all usual layers), and an
 * output clamp range [lo, hi] and zero point within int8, requant + zp + clamp equals:
 *   h = (acc*m + 2^30) >> 31                 SRDHM (one SMULL/SMLAL; cannot saturate as m != INT32_MIN)
 *   q = QADD(h, 2^(e-1) + (h >> 31)) >> e    RDBPOT(h, e), e = -s: round half away from zero
 *   out = clamp(q, lo - zp, hi - zp) + zp
 * RDBPOT: floor((h + 2^(e-1) - [h < 0]) / 2^e) rounds half away from zero for either sign. The add
 * can only overflow upwards (the addend is >= 0); QADD then saturates to 2^31 - 1, giving
 * 2^(31-e) - 1 instead of the true 2^(31-e). Both exceed hi - zp (<= 255 < 2^9 - 1 <= 2^(31-e) - 1
 * for e <= 22), so both clamp to hi: the int8 result is exact. 3 instructions instead of 6, and the
 * clamp needs no overflow guard (|q| <= 2^30). */
#define TK_FAST_MAX_EXPONENT 22

static inline int32_t tk_requant_is_fast(int32_t multiplier, int32_t shift) {
    return (uint32_t)(-shift - 1) < (uint32_t)TK_FAST_MAX_EXPONENT && multiplier != INT32_MIN;
}

/* The value before the clamp (q above); half = 2^(e-1). */
static inline __attribute__((always_inline)) int32_t tk_requant_fast_q(int32_t acc, int32_t m, int32_t e,
                                                                       int32_t half) {
    const int64_t prod = (int64_t)acc * (int64_t)m + ((int64_t)1 << 30);
    const int32_t h = (int32_t)(prod >> 31);
    /* h >> 31 (the sign of bit 62) read from the high word (bit 63) saves the compiler's extra shift:
     * equal because prod lies in (-2^62, 2^62) when m != INT32_MIN, so bits 62 and 63 always agree */
    const int32_t h_sign = (int32_t)(prod >> 32) >> 31;
    return tk_qadd(h, half + h_sign) >> e;
}

/* Requantise a row of n int32 accumulators with per-channel (multiplier, shift) into int8. The DSP
 * and block-sparse kernels accumulate a whole output row first and call this once: a tight loop
 * keeps every requant constant in registers instead of spilling around the MAC loops. */
void tk_requant_row_s8(const int32_t* acc, int32_t n, const int32_t* multiplier, const int32_t* shift,
                       int32_t out_zp, int32_t act_min, int32_t act_max, int8_t* out);

#endif
