/* General conv2d, portable and DSP. See tk_conv.h. */
#include "tk_conv.h"
#include "tk_fc.h"
#include "tk_libc.h"
#include "tk_requant.h"

void tk_conv2d_s8_portable(const tk_conv_params* p, const int8_t* in, int8_t* out) {
    const int32_t kc = p->k_h * p->k_w * p->in_c;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * p->in_c;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                const int32_t ih0 = oh * p->stride_h - p->pad_top;
                const int32_t iw0 = ow * p->stride_w - p->pad_left;
                for (int32_t o = 0; o < p->out_c; ++o) {
                    int32_t acc = p->bias ? p->bias[o] : 0;
                    const int8_t* w = p->weights + o * kc;
                    for (int32_t kh = 0; kh < p->k_h; ++kh) {
                        const int32_t ih = ih0 + kh * p->dil_h;
                        if (ih < 0 || ih >= p->in_h) {
                            continue;
                        }
                        for (int32_t kw = 0; kw < p->k_w; ++kw) {
                            const int32_t iw = iw0 + kw * p->dil_w;
                            if (iw < 0 || iw >= p->in_w) {
                                continue;
                            }
                            const int8_t* x = img + (ih * p->in_w + iw) * p->in_c;
                            const int8_t* wk = w + (kh * p->k_w + kw) * p->in_c;
                            for (int32_t c = 0; c < p->in_c; ++c) {
                                acc += ((int32_t)x[c] - p->in_zp) * (int32_t)wk[c];
                            }
                        }
                    }
                    *out++ = tk_requant_s8(acc, p->multiplier[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
                }
            }
        }
    }
}

int32_t tk_conv2d_dsp_scratch_bytes(const tk_conv_params* p) {
    const int32_t kc = p->k_h * p->k_w * p->in_c;
    const int32_t patch = (kc + 3) / 4 * 4;
    return patch + (kc + 3) / 4 * 8;
}

void tk_conv2d_s8_dsp(const tk_conv_params* p, const int8_t* in, int8_t* out, uint32_t* scratch) {
    const int32_t kc = p->k_h * p->k_w * p->in_c;
    const int32_t patch_bytes = (kc + 3) / 4 * 4;
    int8_t* patch = (int8_t*)scratch;
    uint32_t* widened = scratch + patch_bytes / 4;
    tk_fc_params fc;
    fc.rows = 1;
    fc.in_features = kc;
    fc.out_features = p->out_c;
    fc.in_zp = p->in_zp;
    fc.out_zp = p->out_zp;
    fc.act_min = p->act_min;
    fc.act_max = p->act_max;
    fc.bias = p->bias;
    fc.multiplier = p->multiplier;
    fc.shift = p->shift;
    fc.weights = p->weights;
    fc.block = 0;
    fc.row_nnzb = 0;
    fc.runs = 0;
    fc.values = 0;
    const int32_t row_bytes = p->k_w * p->in_c;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * p->in_c;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                const int32_t ih0 = oh * p->stride_h - p->pad_top;
                const int32_t iw0 = ow * p->stride_w - p->pad_left;
                int8_t* dst = patch;
                for (int32_t kh = 0; kh < p->k_h; ++kh) {
                    const int32_t ih = ih0 + kh * p->dil_h;
                    if (ih < 0 || ih >= p->in_h) {
                        tk_memset(dst, (int8_t)p->in_zp, (uint32_t)row_bytes);
                        dst += row_bytes;
                        continue;
                    }
                    for (int32_t kw = 0; kw < p->k_w; ++kw) {
                        const int32_t iw = iw0 + kw * p->dil_w;
                        if (iw < 0 || iw >= p->in_w) {
                            tk_memset(dst, (int8_t)p->in_zp, (uint32_t)p->in_c);
                        } else {
                            tk_memcpy(dst, img + (ih * p->in_w + iw) * p->in_c, (uint32_t)p->in_c);
                        }
                        dst += p->in_c;
                    }
                }
                tk_fc_s8_dsp(&fc, patch, out, widened);
                out += p->out_c;
            }
        }
    }
}

void tk_depthwise_conv2d_s8(const tk_conv_params* p, const int8_t* in, int8_t* out) {
    const int32_t ch = p->in_c;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * ch;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                const int32_t ih0 = oh * p->stride_h - p->pad_top;
                const int32_t iw0 = ow * p->stride_w - p->pad_left;
                for (int32_t c = 0; c < ch; ++c) {
                    int32_t acc = p->bias ? p->bias[c] : 0;
                    for (int32_t kh = 0; kh < p->k_h; ++kh) {
                        const int32_t ih = ih0 + kh * p->dil_h;
                        if (ih < 0 || ih >= p->in_h) {
                            continue;
                        }
                        for (int32_t kw = 0; kw < p->k_w; ++kw) {
                            const int32_t iw = iw0 + kw * p->dil_w;
                            if (iw < 0 || iw >= p->in_w) {
                                continue;
                            }
                            acc += ((int32_t)img[(ih * p->in_w + iw) * ch + c] - p->in_zp) *
                                   (int32_t)p->weights[(kh * p->k_w + kw) * ch + c];
                        }
                    }
                    *out++ = tk_requant_s8(acc, p->multiplier[c], p->shift[c], p->out_zp, p->act_min, p->act_max);
                }
            }
        }
    }
}
