/* Integer-only layer norm and softmax (fixedpoint.layer_norm_int / softmax_int line by line). */
#include "tk_ops.h"
#include "tk_requant.h"

/* floor(sqrt(n)), digit by digit (fixedpoint.isqrt_bitwise). */
uint32_t tk_isqrt(uint32_t n) {
    uint32_t res = 0, bit = 1u << 30;
    while (bit > n) {
        bit >>= 2;
    }
    while (bit) {
        if (n >= res + bit) {
            n -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return res;
}

void tk_layer_norm_s8(const tk_layer_norm_params* p, const int8_t* in, int8_t* out) {
    const int32_t c_len = p->channels;
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t* x = in + r * c_len;
        int8_t* y = out + r * c_len;
        int32_t sum = 0;
        for (int32_t i = 0; i < c_len; ++i) {
            sum += (int32_t)x[i] - p->in_zp;
        }
        const int32_t mean = tk_div_round(sum, c_len);
        int32_t sq = 0;
        for (int32_t i = 0; i < c_len; ++i) {
            const int32_t dev = (int32_t)x[i] - p->in_zp - mean;
            sq += dev * dev;
        }
        const int32_t var = tk_div_round(sq, c_len);
        int32_t v = var + p->eps_q;
        v = v < 131071 ? v : 131071;
        int32_t sd = (int32_t)tk_isqrt((uint32_t)v << 14);
        sd = sd > 1 ? sd : 1;
        /* in-place (y == x) is safe: x[i] is read before y[i] is written, and not needed after */
        for (int32_t i = 0; i < c_len; ++i) {
            const int32_t dev = (int32_t)x[i] - p->in_zp - mean;
            const int32_t z = tk_div_round(dev * (1 << 18), sd);
            /* int64 sum: the specification adds MBQM, beta and the zero point without overflow */
            const int64_t q = (int64_t)tk_mbqm(z, p->multiplier[i], p->shift[i]) + p->beta_q[i] + p->out_zp;
            y[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
        }
    }
}

void tk_softmax_s8(const int8_t* in, int8_t* out, int32_t rows, int32_t length, const int32_t* exp_table) {
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t* x = in + r * length;
        int8_t* y = out + r * length;
        int32_t m = -128;
        for (int32_t i = 0; i < length; ++i) {
            m = x[i] > m ? x[i] : m;
        }
        int32_t s = 0;
        for (int32_t i = 0; i < length; ++i) {
            s += exp_table[m - x[i]];
        }
        for (int32_t i = 0; i < length; ++i) {
            const int32_t e = exp_table[m - x[i]];
            y[i] = (int8_t)tk_clamp(tk_div_round(e * (1 << 8), s) - 128, -128, 127);
        }
    }
}
