/* Element-wise add / mul with numpy broadcasting (strides 0), requantize, and table lookups. */
#include "tk_ops.h"
#include "tk_requant.h"

static inline int8_t add_one(const tk_binary_params* p, int32_t a, int32_t b) {
    const int32_t sa = tk_mbqm((a - p->a_zp) * (1 << p->left_shift), p->a_multiplier, p->a_shift);
    const int32_t sb = tk_mbqm((b - p->b_zp) * (1 << p->left_shift), p->b_multiplier, p->b_shift);
    return tk_offset_clamp_s8(tk_mbqm(sa + sb, p->out_multiplier, p->out_shift), p->out_zp, p->act_min, p->act_max);
}

static inline int8_t mul_one(const tk_binary_params* p, int32_t a, int32_t b) {
    const int32_t y = tk_mbqm((a - p->a_zp) * (b - p->b_zp), p->out_multiplier, p->out_shift);
    return tk_offset_clamp_s8(y, p->out_zp, p->act_min, p->act_max);
}

/* Iterate the 6-d output index; the innermost loop is the hot one. */
#define TK_BINARY_LOOP(ONE)                                                                          \
    const int32_t* d = p->dims;                                                                      \
    const int32_t* sa = p->a_strides;                                                                \
    const int32_t* sb = p->b_strides;                                                                \
    for (int32_t i0 = 0; i0 < d[0]; ++i0)                                                            \
    for (int32_t i1 = 0; i1 < d[1]; ++i1)                                                            \
    for (int32_t i2 = 0; i2 < d[2]; ++i2)                                                            \
    for (int32_t i3 = 0; i3 < d[3]; ++i3)                                                            \
    for (int32_t i4 = 0; i4 < d[4]; ++i4) {                                                          \
        const int8_t* pa = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] + i4 * sa[4];       \
        const int8_t* pb = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3] + i4 * sb[4];       \
        const int32_t s5a = sa[5], s5b = sb[5];                                                      \
        for (int32_t i5 = 0; i5 < d[5]; ++i5) {                                                      \
            *out++ = ONE(p, pa[i5 * s5a], pb[i5 * s5b]);                                             \
        }                                                                                            \
    }

void tk_add_s8(const tk_binary_params* p, const int8_t* a, const int8_t* b, int8_t* out) {
    TK_BINARY_LOOP(add_one)
}

void tk_mul_s8(const tk_binary_params* p, const int8_t* a, const int8_t* b, int8_t* out) {
    TK_BINARY_LOOP(mul_one)
}

void tk_requantize_s8(const int8_t* in, int8_t* out, int32_t n, int32_t in_zp, int32_t out_zp, int32_t multiplier,
                      int32_t shift) {
    for (int32_t i = 0; i < n; ++i) {
        out[i] = tk_offset_clamp_s8(tk_mbqm((int32_t)in[i] - in_zp, multiplier, shift), out_zp, -128, 127);
    }
}

void tk_lut_s8(const int8_t* in, int8_t* out, int32_t n, const int8_t* table) {
    for (int32_t i = 0; i < n; ++i) {
        out[i] = table[(int32_t)in[i] + 128];
    }
}
