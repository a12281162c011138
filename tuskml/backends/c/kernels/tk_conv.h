/* Convolution kernels, NHWC int8 activations.
 *   tk_conv2d_s8_portable   general conv2d (OHWI weights, stride, asymmetric padding, dilation)
 *   tk_conv2d_s8_dsp        same result; each output pixel's receptive field is gathered into an
 *                           int8 patch (padding = input zero point, which contributes 0) and run
 *                           through the SMLAD fully-connected kernel
 *   tk_depthwise_conv2d_s8  depthwise, multiplier 1, weights [KH][KW][C]
 * A 1x1 stride-1 unpadded conv is lowered to the fully-connected kernels by the code generator.
 */
#ifndef TK_CONV_H
#define TK_CONV_H

#include <stdint.h>

#include "tk_fc.h"

typedef struct {
    int32_t batch, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t dil_h, dil_w;
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t* weights;      /* conv2d: [out_c][k_h][k_w][in_c]; depthwise: [k_h][k_w][in_c] */
    const int32_t* bias;        /* [out_c], may be NULL */
    const int32_t* multiplier;  /* [out_c] */
    const int32_t* shift;       /* [out_c] */
} tk_conv_params;

/* Scratch bytes tk_conv2d_s8_dsp (block 0) / tk_conv2d_s8_brl (block B) need: an int8 patch plus its
 * widened int16 copy. */
int32_t tk_conv2d_dsp_scratch_bytes(const tk_conv_params* p, int32_t block);

void tk_conv2d_s8_portable(const tk_conv_params* p, const int8_t* in, int8_t* out);
void tk_conv2d_s8_dsp(const tk_conv_params* p, const int8_t* in, int8_t* out, uint32_t* scratch);
/* Block-sparse conv (e.g. a patch embedding): im2col per pixel into the BRL fully-connected kernel;
 * brl holds the BRL arrays of the weight viewed as [out_c][k_h*k_w*in_c]. */
void tk_conv2d_s8_brl(const tk_conv_params* p, const tk_fc_params* brl, const int8_t* in, int8_t* out,
                      uint32_t* scratch, int32_t use_dsp);
void tk_depthwise_conv2d_s8(const tk_conv_params* p, const int8_t* in, int8_t* out);
/* Depthwise conv whose output overwrites its input (same arena offset), as the memory planner may
 * arrange: four input channels at a time (then single channels) are saved to a word-aligned scratch
 * of tk_depthwise_inplace_scratch_bytes(p) bytes (4*in_h*in_w, or in_h*in_w when in_c < 4) and
 * then overwritten. */
int32_t tk_depthwise_inplace_scratch_bytes(const tk_conv_params* p);
void tk_depthwise_conv2d_s8_inplace(const tk_conv_params* p, int8_t* buf, int8_t* scratch);

#endif
