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

void tk_requant_row_s8(const int32_t* acc, int32_t n, const int32_t* multiplier, const int32_t* shift,
                       int32_t out_zp, int32_t act_min, int32_t act_max, int8_t* out) {
    const int32_t lo = act_min - out_zp, hi = act_max - out_zp;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t m = multiplier[i];
        const int32_t s = shift[i];
        if (__builtin_expect(tk_requant_is_fast(m, s), 1)) {
            /* the usual case: see tk_requant_fast_q (exact for int8 clamp ranges) */
            int32_t q = tk_requant_fast_q(acc[i], m, -s, (int32_t)1 << (-s - 1));
            q = q < lo ? lo : q;
            q = q > hi ? hi : q;
            out[i] = (int8_t)(q + out_zp);
        } else {
            out[i] = tk_offset_clamp_s8(tk_mbqm(acc[i], m, s), out_zp, act_min, act_max);
        }
    }
}
