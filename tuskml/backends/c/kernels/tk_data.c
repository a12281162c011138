/* Data movement: concat (with per-input requantisation), transpose, copy. */
#include "tk_libc.h"
#include "tk_ops.h"
#include "tk_requant.h"

void tk_concat_s8(const tk_concat_params* p, const int8_t* const* inputs, int8_t* out) {
    for (int32_t o = 0; o < p->outer; ++o) {
        for (int32_t i = 0; i < p->n_inputs; ++i) {
            const int32_t inner = p->inner[i];
            const int8_t* src = inputs[i] + o * inner;
            const int32_t zp = p->zero_points[i], mult = p->multipliers[i], sh = p->shifts[i];
            if (mult == (1 << 30) && sh == 1 && zp == p->out_zp) {
                tk_memcpy(out, src, (uint32_t)inner); /* (2^30, 1) is the exact identity */
            } else {
                for (int32_t j = 0; j < inner; ++j) {
                    out[j] = tk_offset_clamp_s8(tk_mbqm((int32_t)src[j] - zp, mult, sh), p->out_zp, -128, 127);
                }
            }
            out += inner;
        }
    }
}

void tk_transpose_s8(const tk_transpose_params* p, const int8_t* in, int8_t* out) {
    const int32_t* d = p->out_dims;
    const int32_t* s = p->in_strides;
    for (int32_t i0 = 0; i0 < d[0]; ++i0)
    for (int32_t i1 = 0; i1 < d[1]; ++i1)
    for (int32_t i2 = 0; i2 < d[2]; ++i2)
    for (int32_t i3 = 0; i3 < d[3]; ++i3)
    for (int32_t i4 = 0; i4 < d[4]; ++i4) {
        const int8_t* src = in + i0 * s[0] + i1 * s[1] + i2 * s[2] + i3 * s[3] + i4 * s[4];
        for (int32_t i5 = 0; i5 < d[5]; ++i5) {
            *out++ = src[i5 * s[5]];
        }
    }
}

void tk_copy_s8(const int8_t* in, int8_t* out, int32_t n) {
    if (in == out || n <= 0) {
        return;
    }
    if (out < in || out >= in + n) {
        tk_memcpy(out, in, (uint32_t)n); /* forward copy is safe unless out lies inside [in, in+n) */
    } else {
        for (int32_t i = n - 1; i >= 0; --i) {
            out[i] = in[i];
        }
    }
}
