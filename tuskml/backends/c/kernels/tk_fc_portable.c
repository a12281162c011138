/* Portable fully-connected kernel: the straightforward C loop, the baseline the DSP and
 * block-sparse kernels are measured against. */
#include "tk_fc.h"
#include "tk_requant.h"

int32_t tk_fc_scratch_bytes(const tk_fc_params* p) {
    int32_t k = p->in_features;
    if (p->weights == 0 && p->block > 0) {
        k = (k + p->block - 1) / p->block * p->block;
    }
    /* two widened input rows + two rows of int32 accumulators (the DSP kernels process input rows in pairs) */
    return 2 * ((k + 3) / 4 * 8) + 8 * p->out_features;
}

void tk_fc_s8_portable(const tk_fc_params* p, const int8_t* in, int8_t* out) {
    /* parameters in locals: int8_t stores may alias *p, which would force reloads */
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    const int32_t rows = p->rows, in_zp = p->in_zp, out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
    const int32_t* bias = p->bias;
    const int32_t* mult = p->multiplier;
    const int32_t* shift = p->shift;
    for (int32_t n = 0; n < rows; ++n) {
        const int8_t* x = in + n * k_len;
        const int8_t* w = p->weights;
        for (int32_t o = 0; o < n_out; ++o) {
            int32_t acc = bias ? bias[o] : 0;
            for (int32_t k = 0; k < k_len; ++k) {
                acc += ((int32_t)x[k] - in_zp) * (int32_t)w[k];
            }
            w += k_len;
            out[o] = tk_requant_s8(acc, mult[o], shift[o], out_zp, act_min, act_max);
        }
        out += n_out;
    }
}
