/* Portable fully-connected kernel: the straightforward C loop, the baseline the DSP and
 * block-sparse kernels are measured against. */
#include "tk_fc.h"
#include "tk_requant.h"

int32_t tk_fc_scratch_bytes(const tk_fc_params* p) {
    int32_t k = p->in_features;
    if (p->weights == 0 && p->block > 0) {
        k = (k + p->block - 1) / p->block * p->block;
    }
    return (k + 3) / 4 * 8;
}

void tk_fc_s8_portable(const tk_fc_params* p, const int8_t* in, int8_t* out) {
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    for (int32_t n = 0; n < p->rows; ++n) {
        const int8_t* x = in + n * k_len;
        const int8_t* w = p->weights;
        for (int32_t o = 0; o < n_out; ++o) {
            int32_t acc = p->bias ? p->bias[o] : 0;
            for (int32_t k = 0; k < k_len; ++k) {
                acc += ((int32_t)x[k] - p->in_zp) * (int32_t)w[k];
            }
            w += k_len;
            out[o] = tk_requant_s8(acc, p->multiplier[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
        }
        out += n_out;
    }
}
