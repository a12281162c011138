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

void tk_widen_s8_pairs(const int8_t* in, int32_t k, int32_t padded_k, int32_t in_zp, uint32_t* out,
                       int32_t stride_words) {
    const uint32_t offset = ((uint32_t)(uint16_t)(int16_t)(-in_zp)) * 0x00010001u;
    int32_t i = 0;
    for (; i + 4 <= k; i += 4) {
        uint32_t x = tk_read_u32(in + i);
        out[0] = tk_sadd16(tk_sxtb16(x), offset);
        out[1] = tk_sadd16(tk_sxtb16_ror8(x), offset);
        out += stride_words;
    }
    for (; i < padded_k; i += 4) {
        /* partial last group: zero beyond k so that padding contributes nothing */
        int32_t v[4];
        for (int32_t j = 0; j < 4; ++j) {
            v[j] = (i + j < k) ? (int32_t)in[i + j] - in_zp : 0;
        }
        out[0] = ((uint32_t)(uint16_t)v[0]) | ((uint32_t)(uint16_t)v[2] << 16);
        out[1] = ((uint32_t)(uint16_t)v[1]) | ((uint32_t)(uint16_t)v[3] << 16);
        out += stride_words;
    }
}

int32_t tk_dot_widened_s8(const uint32_t* xw, const int8_t* w, int32_t n_groups, int32_t acc) {
    return tk_dot_groups(xw, w, n_groups, acc);
}

/* Two input rows (rows a, b: e.g. two pixels of a 1x1 conv) per output channel. The two widened rows
 * are interleaved per group ([a02 a13 b02 b13]), so per group of 4 inputs: two LDRD, one LDR and two
 * SXTB16 of the weights (shared by both rows), four SMLAD for 8 MACs (tk_dot_groups_x2). Few live
 * registers: a 2-row x 2-channel tile does not fit in r0-r12 without stack spills. */
static void fc_two_rows_dsp(const int8_t* xa_raw, const uint32_t* xw0, int32_t k_len, int32_t n_out,
                            const int8_t* weights, const int32_t* bias, int32_t in_zp, int32_t* accs_a,
                            int32_t* accs_b) {
    const int32_t groups = k_len / 4;
    const int32_t k_main = groups * 4;
    const int8_t* xb_raw = xa_raw + k_len;
    const int8_t* w = weights;
    for (int32_t o = 0; o < n_out; ++o) {
        int32_t a = bias ? bias[o] : 0;
        int32_t b = a;
        tk_dot_groups_x2(xw0, w, groups, &a, &b);
        for (int32_t k = k_main; k < k_len; ++k) {
            a += ((int32_t)xa_raw[k] - in_zp) * (int32_t)w[k];
            b += ((int32_t)xb_raw[k] - in_zp) * (int32_t)w[k];
        }
        accs_a[o] = a;
        accs_b[o] = b;
        w += k_len;
    }
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
    int32_t n = 0;
    {
        /* pairs of input rows; scratch: [widened a and b interleaved per group][accs a][accs b] */
        int32_t* accs_a = (int32_t*)(scratch + 4 * groups);
        int32_t* accs_b = accs_a + n_out;
        for (; n + 2 <= rows; n += 2) {
            const int8_t* x = in + n * k_len;
            tk_widen_s8_pairs(x, k_main, k_main, in_zp, scratch, 4);
            tk_widen_s8_pairs(x + k_len, k_main, k_main, in_zp, scratch + 2, 4);
            fc_two_rows_dsp(x, scratch, k_len, n_out, weights, bias, in_zp, accs_a, accs_b);
            tk_requant_row_s8(accs_a, n_out, mult, shift, out_zp, act_min, act_max, out);
            tk_requant_row_s8(accs_b, n_out, mult, shift, out_zp, act_min, act_max, out + n_out);
            out += 2 * n_out;
        }
    }
    int32_t* accs = (int32_t*)(scratch + 2 * groups); /* [n_out] after the widened row */
    for (; n < rows; ++n) {
        const int8_t* x = in + n * k_len;
        tk_widen_s8_pairs(x, k_main, k_main, in_zp, scratch, 2);
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
                uint64_t px;
                __builtin_memcpy(&px, xw, 8);
                const uint32_t va = tk_read_u32(wa);
                const uint32_t vb = tk_read_u32(wb);
                acc0 = tk_smlad((uint32_t)px, tk_sxtb16(va), acc0);
                acc1 = tk_smlad((uint32_t)px, tk_sxtb16(vb), acc1);
                acc0 = tk_smlad((uint32_t)(px >> 32), tk_sxtb16_ror8(va), acc0);
                acc1 = tk_smlad((uint32_t)(px >> 32), tk_sxtb16_ror8(vb), acc1);
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
