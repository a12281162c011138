/* Block-sparse fully-connected kernel over the block run-length (BRL) weight format.
 *
 * Per output row: row_nnzb[o] stored blocks; before each, runs[j] all-zero blocks are skipped, so
 * the input pointer advances by runs[j]*B and then B for the stored block itself. Work is
 * proportional to the stored blocks only. With a block size that is a multiple of 4 (and use_dsp),
 * the input row is widened once (tk_widen_s8_pairs, zero-padded up to the padded K) and each block
 * is a run of SMLAD pairs; otherwise a scalar loop clipped to the real K. */
#include "tk_dot.h"
#include "tk_fc.h"
#include "tk_requant.h"

static int32_t brl_row_scalar(const int8_t* x, int32_t k_len, int32_t in_zp, int32_t block, int32_t nnzb,
                              const uint16_t* runs, const int8_t* vals, int32_t acc) {
    int32_t k0 = 0;
    for (int32_t j = 0; j < nnzb; ++j) {
        k0 += (int32_t)runs[j] * block;
        int32_t len = k_len - k0 < block ? k_len - k0 : block;
        for (int32_t i = 0; i < len; ++i) {
            acc += ((int32_t)x[k0 + i] - in_zp) * (int32_t)vals[i];
        }
        vals += block;
        k0 += block;
    }
    return acc;
}

/* All rows of one input row, DSP path; groups_per_block is a compile-time constant at each call
 * site below, so the block body is fully unrolled for the common block sizes. */
TK_INLINE void brl_rows_dsp(const tk_fc_params* p, const uint32_t* xw0, int32_t* accs, const int32_t groups_per_block) {
    /* parameters in locals: stores through int8_t* may alias anything, so the compiler would
     * otherwise reload every field of *p after each output byte */
    const uint16_t* runs = p->runs;
    const int8_t* vals = p->values;
    const uint16_t* row_nnzb = p->row_nnzb;
    const int32_t* bias = p->bias;
    const int32_t n_out = p->out_features;
    const int32_t words_per_block = groups_per_block * 2;
    for (int32_t o = 0; o < n_out; ++o) {
        int32_t acc = bias ? bias[o] : 0;
        const uint32_t* xw = xw0;
        for (int32_t j = row_nnzb[o]; j > 0; --j) {
            xw += (int32_t)(*runs++) * words_per_block;
            acc = tk_dot_groups(xw, vals, groups_per_block, acc);
            xw += words_per_block;
            vals += groups_per_block * 4;
        }
        accs[o] = acc;
    }
}

/* Two input rows (e.g. two pixels of a 1x1 conv) per walk of the weight rows: each stored block is
 * loaded and split by SXTB16 once and used for both, and the row walk is paid once. The widened rows
 * are interleaved per group of 4 inputs: [a02 a13 b02 b13]. */
TK_INLINE void brl_rows_dsp_x2(const tk_fc_params* p, const uint32_t* xw0, int32_t* accs_a,
                               int32_t* accs_b, const int32_t groups_per_block) {
    const uint16_t* runs = p->runs;
    const int8_t* vals = p->values;
    const uint16_t* row_nnzb = p->row_nnzb;
    const int32_t* bias = p->bias;
    const int32_t n_out = p->out_features;
    const int32_t words_per_block = groups_per_block * 4;
    for (int32_t o = 0; o < n_out; ++o) {
        int32_t acc_a = bias ? bias[o] : 0;
        int32_t acc_b = acc_a;
        const uint32_t* xw = xw0;
        for (int32_t j = row_nnzb[o]; j > 0; --j) {
            xw += (int32_t)(*runs++) * words_per_block;
            /* plain C, fully unrolled for the constant block sizes (beats the asm loop for 1-4 groups) */
            for (int32_t g = 0; g < groups_per_block; ++g) {
                tk_dot_group_x2(xw + 4 * g, 2, tk_read_u32(vals + 4 * g), &acc_a, &acc_b);
            }
            xw += words_per_block;
            vals += groups_per_block * 4;
        }
        accs_a[o] = acc_a;
        accs_b[o] = acc_b;
    }
}

void tk_fc_s8_brl(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch, int32_t use_dsp) {
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    const int32_t block = p->block;
    const int32_t padded_k = (k_len + block - 1) / block * block;
    const int32_t dsp = use_dsp && (block % 4 == 0);
    int32_t n = 0;
    if (dsp) {
        /* scratch: [widened rows a and b interleaved per group][accs a][accs b] */
        int32_t* accs_a = (int32_t*)(scratch + padded_k);
        int32_t* accs_b = accs_a + n_out;
        for (; n + 2 <= p->rows; n += 2) {
            const int8_t* x = in + n * k_len;
            tk_widen_s8_pairs(x, k_len, padded_k, p->in_zp, scratch, 4);
            tk_widen_s8_pairs(x + k_len, k_len, padded_k, p->in_zp, scratch + 2, 4);
            switch (block) {
                case 4: brl_rows_dsp_x2(p, scratch, accs_a, accs_b, 1); break;
                case 8: brl_rows_dsp_x2(p, scratch, accs_a, accs_b, 2); break;
                case 16: brl_rows_dsp_x2(p, scratch, accs_a, accs_b, 4); break;
                default: brl_rows_dsp_x2(p, scratch, accs_a, accs_b, block / 4); break;
            }
            tk_requant_row_s8(accs_a, n_out, p->multiplier, p->shift, p->out_zp, p->act_min, p->act_max, out);
            tk_requant_row_s8(accs_b, n_out, p->multiplier, p->shift, p->out_zp, p->act_min, p->act_max, out + n_out);
            out += 2 * n_out;
        }
    }
    for (; n < p->rows; ++n) {
        const int8_t* x = in + n * k_len;
        if (dsp) {
            int32_t* accs = (int32_t*)(scratch + padded_k / 2); /* [n_out] after the widened row */
            tk_widen_s8_pairs(x, k_len, padded_k, p->in_zp, scratch, 2);
            switch (block) {
                case 4: brl_rows_dsp(p, scratch, accs, 1); break;
                case 8: brl_rows_dsp(p, scratch, accs, 2); break;
                case 16: brl_rows_dsp(p, scratch, accs, 4); break;
                default: brl_rows_dsp(p, scratch, accs, block / 4); break;
            }
            tk_requant_row_s8(accs, n_out, p->multiplier, p->shift, p->out_zp, p->act_min, p->act_max, out);
        } else {
            const uint16_t* runs = p->runs;
            const int8_t* vals = p->values;
            for (int32_t o = 0; o < n_out; ++o) {
                const int32_t nnzb = p->row_nnzb[o];
                int32_t acc = brl_row_scalar(x, k_len, p->in_zp, block, nnzb, runs, vals, p->bias ? p->bias[o] : 0);
                vals += nnzb * block;
                runs += nnzb;
                out[o] = tk_requant_s8(acc, p->multiplier[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
            }
        }
        out += n_out;
    }
}
