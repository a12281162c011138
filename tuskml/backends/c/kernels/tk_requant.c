/* Out-of-line copies of the inline requantisation helpers, so tests can call them directly and
 * check them against fixedpoint.py on edge values (the kernels use the inline versions). */
#include "tk_requant.h"

int32_t tk_export_srdhm(int32_t a, int32_t b) { return tk_srdhm(a, b); }
int32_t tk_export_rdbpot(int32_t x, int32_t exponent) { return tk_rdbpot(x, exponent); }
int32_t tk_export_mbqm(int32_t x, int32_t multiplier, int32_t shift) { return tk_mbqm(x, multiplier, shift); }
int32_t tk_export_div_round(int32_t a, int32_t b) { return tk_div_round(a, b); }

int32_t tk_export_requant_fast_q(int32_t acc, int32_t m, int32_t shift) {
    return tk_requant_fast_q(acc, m, -shift, (int32_t)1 << (-shift - 1));
}

/* The row loop; full_int8 (a compile-time constant at both call sites) selects the clamp: with the
 * full int8 range [-128, 127] (no fused activation, the usual case) clamp + zero point is one ADD and
 * one SSAT (|q| <= 2^30 on the fast path, so q + zp cannot overflow), instead of two compares and
 * three loop constants that spill to the stack. */
static inline __attribute__((always_inline)) void requant_row(const int32_t* acc, int32_t n, const int32_t* multiplier,
                                                              const int32_t* shift, int32_t out_zp, int32_t act_min,
                                                              int32_t act_max, int8_t* out, const int32_t full_int8) {
    const int32_t lo = act_min - out_zp, hi = act_max - out_zp;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t m = multiplier[i];
        const int32_t s = shift[i];
        if (__builtin_expect(tk_requant_is_fast(m, s), 1)) {
            /* the usual case: see tk_requant_fast_q (exact for int8 clamp ranges) */
            int32_t q = tk_requant_fast_q(acc[i], m, -s, (int32_t)1 << (-s - 1));
            if (full_int8) {
                out[i] = (int8_t)tk_ssat8(q + out_zp);
            } else {
                q = q < lo ? lo : q;
                q = q > hi ? hi : q;
                out[i] = (int8_t)(q + out_zp);
            }
        } else {
            out[i] = tk_offset_clamp_s8(tk_mbqm(acc[i], m, s), out_zp, act_min, act_max);
        }
    }
}

void tk_requant_row_s8(const int32_t* acc, int32_t n, const int32_t* multiplier, const int32_t* shift,
                       int32_t out_zp, int32_t act_min, int32_t act_max, int8_t* out) {
    if (act_min == -128 && act_max == 127 && out_zp >= -128 && out_zp <= 127) {
        requant_row(acc, n, multiplier, shift, out_zp, act_min, act_max, out, 1);
    } else {
        requant_row(acc, n, multiplier, shift, out_zp, act_min, act_max, out, 0);
    }
}
