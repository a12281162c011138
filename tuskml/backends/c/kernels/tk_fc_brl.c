/* Block-sparse fully-connected kernel over the block run-length (BRL) weight format.
 *
 * Per output row: row_nnzb[o] stored blocks; before each, runs[j] all-zero blocks are skipped, so
 * the input pointer advances by runs[j]*B and then B for the stored block itself. Work is
 * proportional to the stored blocks only. With a block size that is a multiple of 4 (and use_dsp),
 * the input row is widened once (tk_widen_s8_pairs, zero-padded up to the padded K) and each block
 * is a run of SMLAD pairs; otherwise a scalar loop clipped to the real K. */
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

void tk_fc_s8_brl(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch, int32_t use_dsp) {
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    const int32_t block = p->block;
    const int32_t padded_k = (k_len + block - 1) / block * block;
    const int32_t dsp = use_dsp && (block % 4 == 0);
    const int32_t groups_per_block = block / 4;
    for (int32_t n = 0; n < p->rows; ++n) {
        const int8_t* x = in + n * k_len;
        const uint16_t* runs = p->runs;
        const int8_t* vals = p->values;
        if (dsp) {
            tk_widen_s8_pairs(x, k_len, padded_k, p->in_zp, scratch);
        }
        for (int32_t o = 0; o < n_out; ++o) {
            const int32_t nnzb = p->row_nnzb[o];
            int32_t acc = p->bias ? p->bias[o] : 0;
            if (dsp) {
                /* 2 words of widened input per group of 4 */
                const uint32_t* xw = scratch;
                for (int32_t j = 0; j < nnzb; ++j) {
                    xw += (int32_t)runs[j] * groups_per_block * 2;
                    acc = tk_dot_widened_s8(xw, vals, groups_per_block, acc);
                    xw += groups_per_block * 2;
                    vals += block;
                }
            } else {
                acc = brl_row_scalar(x, k_len, p->in_zp, block, nnzb, runs, vals, acc);
                vals += nnzb * block;
            }
            runs += nnzb;
            out[o] = tk_requant_s8(acc, p->multiplier[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
        }
        out += n_out;
    }
}
