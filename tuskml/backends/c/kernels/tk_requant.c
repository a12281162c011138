/* Out-of-line copies of the inline requantisation helpers, so tests can call them directly and
 * check them against fixedpoint.py on edge values (the kernels use the inline versions). */
#include "tk_requant.h"

int32_t tk_export_srdhm(int32_t a, int32_t b) { return tk_srdhm(a, b); }
int32_t tk_export_rdbpot(int32_t x, int32_t exponent) { return tk_rdbpot(x, exponent); }
int32_t tk_export_mbqm(int32_t x, int32_t multiplier, int32_t shift) { return tk_mbqm(x, multiplier, shift); }
int32_t tk_export_div_round(int32_t a, int32_t b) { return tk_div_round(a, b); }

void tk_requant_row_s8(const int32_t* acc, int32_t n, const int32_t* multiplier, const int32_t* shift,
                       int32_t out_zp, int32_t act_min, int32_t act_max, int8_t* out) {
    for (int32_t i = 0; i < n; ++i) {
        const int32_t m = multiplier[i];
        const int32_t s = shift[i];
        int32_t v;
        if (__builtin_expect(s <= 0 && m != INT32_MIN, 1)) {
            /* the usual case, same arithmetic as tk_mbqm: no left shift, and SRDHM cannot saturate
             * because the multiplier is not INT32_MIN */
            const int32_t high = (int32_t)(((int64_t)acc[i] * (int64_t)m + ((int64_t)1 << 30)) >> 31);
            v = tk_rdbpot(high, -s);
        } else {
            v = tk_mbqm(acc[i], m, s);
        }
        out[i] = tk_offset_clamp_s8(v, out_zp, act_min, act_max);
    }
}
