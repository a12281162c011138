/* Fully-connected kernel for Cortex-M DSP (SXTB16 + SMLAD), bit-exact C emulation elsewhere.
 *
 * Why the input is widened once: SXTB16 splits a word of 4 int8 into (b0,b2) and (b1,b3) int16
 * pairs. Widening the input row (minus its zero point) into exactly that pair order lets every
 * output row use it with one LDR + two SXTB16 of the weights + two SMLAD per 4 MACs, and no
 * shuffling of weights: the BRL / dense weight bytes stay in their natural order. */
#include "tk_dot.h"
#include "tk_dsp.h"
#include "tk_fc.h"
#include "tk_requant.h"

void tk_widen_s8_pairs(const int8_t* in, int32_t k, int32_t padded_k, int32_t in_zp, uint32_t* out) {
    const uint32_t offset = ((uint32_t)(uint16_t)(int16_t)(-in_zp)) * 0x00010001u;
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        uint32_t x = tk_read_u32(in + i);
        out[0] = tk_sadd16(tk_sxtb16(x), offset);
        out[1] = tk_sadd16(tk_sxtb16_ror8(x), offset);
        out += 2;
    }
    for (; i < padded_k; i += 4) {
        /* partial last group: zero beyond k so that padding contributes nothing */
        int32_t v[4];
        for (int32_t j = 0; j < 4; ++j) {
            v[j] = (i + j < k) ? (int32_t)in[i + j] - in_zp : 0;
        }
        out[0] = ((uint32_t)(uint16_t)v[0]) | ((uint32_t)(uint16_t)v[2] << 16);
        out[1] = ((uint32_t)(uint16_t)v[1]) | ((uint32_t)(uint16_t)v[3] << 16);
        out += 2;
    }
}

int32_t tk_dot_widened_s8(const uint32_t* xw, const int8_t* w, int32_t n_groups, int32_t acc) {
    return tk_dot_groups(xw, w, n_groups, acc);
}

void tk_fc_s8_dsp(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch) {
    /* parameters in locals: int8_t stores may alias *p, which would force reloads */
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    const int32_t rows = p->rows, in_zp = p->in_zp, out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
    const int32_t* bias = p->bias;
    const int32_t* mult = p->multiplier;
    const int32_t* shift = p->shift;
    const int8_t* weights = p->weights;
    const int32_t groups = k_len / 4;
    const int32_t k_main = groups * 4;
    int32_t* accs = (int32_t*)(scratch + 2 * groups); /* [n_out] after the widened row */
    for (int32_t n = 0; n < rows; ++n) {
        const int8_t* x = in + n * k_len;
        tk_widen_s8_pairs(x, k_main, k_main, in_zp, scratch);
        const int8_t* w0 = weights;
        int32_t o = 0;
        /* two output channels per pass share every load of the widened input */
        for (; o + 2 <= n_out; o += 2) {
            const int8_t* w1 = w0 + k_len;
            int32_t acc0 = bias ? bias[o] : 0;
            int32_t acc1 = bias ? bias[o + 1] : 0;
            const uint32_t* xw = scratch;
            const uint32_t* xw_end = scratch + 2 * groups;
            const int8_t* wa = w0;
            const int8_t* wb = w1;
            while (xw != xw_end) {
                const uint32_t xa = xw[0], xb = xw[1];
                const uint32_t va = tk_read_u32(wa);
                const uint32_t vb = tk_read_u32(wb);
                acc0 = tk_smlad(xa, tk_sxtb16(va), acc0);
                acc1 = tk_smlad(xa, tk_sxtb16(vb), acc1);
                acc0 = tk_smlad(xb, tk_sxtb16_ror8(va), acc0);
                acc1 = tk_smlad(xb, tk_sxtb16_ror8(vb), acc1);
                xw += 2;
                wa += 4;
                wb += 4;
            }
            for (int32_t k = k_main; k < k_len; ++k) {
                const int32_t xv = (int32_t)x[k] - in_zp;
                acc0 += xv * (int32_t)w0[k];
                acc1 += xv * (int32_t)w1[k];
            }
            accs[o] = acc0;
            accs[o + 1] = acc1;
            w0 = w1 + k_len;
        }
        if (o < n_out) {
            int32_t acc = bias ? bias[o] : 0;
            acc = tk_dot_groups(scratch, w0, groups, acc);
            for (int32_t k = k_main; k < k_len; ++k) {
                acc += ((int32_t)x[k] - in_zp) * (int32_t)w0[k];
            }
            accs[o] = acc;
        }
        tk_requant_row_s8(accs, n_out, mult, shift, out_zp, act_min, act_max, out);
        out += n_out;
    }
}
