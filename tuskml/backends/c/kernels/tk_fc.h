/* Fully-connected / 1x1-convolution kernels (int8 in, int8 weights per output channel, int8 out).
 *
 * One call computes out[n][o] = requant(bias[o] + sum_k (in[n][k] - in_zp) * W[o][k]) for every
 * input row n (a batch row, a token, or an NHWC pixel of a 1x1 convolution). Three variants:
 *   tk_fc_s8_portable  plain C, one MAC per input byte;
 *   tk_fc_s8_dsp       SXTB16/SMLAD: the input row is widened once into int16 pairs (scratch), and
 *                      two output channels share each load of that widened input;
 *   tk_fc_s8_brl       block-sparse weights in block run-length (BRL) form; DSP inner loop when the
 *                      block size is a multiple of 4 and use_dsp is set.
 */
#ifndef TK_FC_H
#define TK_FC_H

#include <stdint.h>

typedef struct {
    int32_t rows;          /* N: independent input rows */
    int32_t in_features;   /* K */
    int32_t out_features;  /* O */
    int32_t in_zp;         /* input zero point */
    int32_t out_zp;        /* output zero point */
    int32_t act_min;       /* clamp range after requantisation (fused ReLU/ReLU6 or -128..127) */
    int32_t act_max;
    const int32_t* bias;        /* [O] int32, may be NULL */
    const int32_t* multiplier;  /* [O] per-channel requant multiplier */
    const int32_t* shift;       /* [O] per-channel requant shift (>0: left) */
    const int8_t* weights;      /* dense [O][K]; NULL for a BRL layer */
    /* block run-length sparse weights (tk_fc_s8_brl only) */
    int32_t block;              /* B: block length along K (K padded up to a multiple of B) */
    const uint16_t* row_nnzb;   /* [O] stored (non-zero) blocks per output row */
    const uint16_t* runs;       /* [nnzb] zero blocks skipped before each stored block */
    const int8_t* values;       /* [nnzb * B] stored blocks, row-major */
} tk_fc_params;

/* Scratch bytes the DSP / BRL paths need: two widened input rows plus two rows of int32 accumulators
 * (input rows are processed in pairs; the portable kernel needs none). */
int32_t tk_fc_scratch_bytes(const tk_fc_params* p);

void tk_fc_s8_portable(const tk_fc_params* p, const int8_t* in, int8_t* out);
void tk_fc_s8_dsp(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch);
void tk_fc_s8_brl(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch, int32_t use_dsp);

/* Widen k int8 values (minus in_zp) into the SXTB16 pair order used by the DSP kernels: for group g,
 * out[g*stride] = (x[4g]-zp, x[4g+2]-zp), out[g*stride+1] = (x[4g+1]-zp, x[4g+3]-zp) (stride 2:
 * one row; stride 4: two rows interleaved). Elements past k (up to padded_k, a multiple of 4) are
 * written as 0, so padded weight blocks contribute nothing. */
void tk_widen_s8_pairs(const int8_t* in, int32_t k, int32_t padded_k, int32_t in_zp, uint32_t* out,
                       int32_t stride_words);

/* acc + dot(widened x, w) over k4 = 4*n_groups elements, the SMLAD inner loop shared by the
 * dense, block-sparse and convolution DSP kernels. */
int32_t tk_dot_widened_s8(const uint32_t* xw, const int8_t* w, int32_t n_groups, int32_t acc);

#endif
