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

int32_t tk_conv2d_dsp_scratch_bytes(const tk_conv_params* p, int32_t block) {
    const int32_t kc = p->k_h * p->k_w * p->in_c;
    const int32_t padded = block > 0 ? (kc + block - 1) / block * block : kc;
    return (kc + 3) / 4 * 4 + (padded + 3) / 4 * 8 + 4 * p->out_c;
}

/* Gather the receptive field of output pixel (oh, ow) into an int8 patch [k_h][k_w][in_c]; positions
 * outside the image get the input zero point, so they contribute (zp - zp) * w = 0. */
static void gather_patch(const tk_conv_params* p, const int8_t* img, int32_t oh, int32_t ow, int8_t* patch) {
    const int32_t ih0 = oh * p->stride_h - p->pad_top;
    const int32_t iw0 = ow * p->stride_w - p->pad_left;
    const int32_t row_bytes = p->k_w * p->in_c;
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
}

/* im2col one pixel at a time, then the fully-connected kernel (dense DSP, or BRL when brl != NULL). */
static void conv_by_patches(const tk_conv_params* p, const tk_fc_params* brl, const int8_t* in, int8_t* out,
                            uint32_t* scratch, int32_t use_dsp) {
    const int32_t kc = p->k_h * p->k_w * p->in_c;
    int8_t* patch = (int8_t*)scratch;
    uint32_t* widened = scratch + (kc + 3) / 4;
    tk_fc_params fc;
    if (brl) {
        fc = *brl;
    } else {
        fc.weights = p->weights;
        fc.block = 0;
        fc.row_nnzb = 0;
        fc.runs = 0;
        fc.values = 0;
    }
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
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * p->in_c;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                gather_patch(p, img, oh, ow, patch);
                if (brl) {
                    tk_fc_s8_brl(&fc, patch, out, widened, use_dsp);
                } else {
                    tk_fc_s8_dsp(&fc, patch, out, widened);
                }
                out += p->out_c;
            }
        }
    }
}

void tk_conv2d_s8_dsp(const tk_conv_params* p, const int8_t* in, int8_t* out, uint32_t* scratch) {
    conv_by_patches(p, 0, in, out, scratch, 1);
}

void tk_conv2d_s8_brl(const tk_conv_params* p, const tk_fc_params* brl, const int8_t* in, int8_t* out,
                      uint32_t* scratch, int32_t use_dsp) {
    conv_by_patches(p, brl, in, out, scratch, use_dsp);
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

void tk_depthwise_conv2d_s8_inplace(const tk_conv_params* p, int8_t* buf, int8_t* scratch) {
    const int32_t ch = p->in_c;
    const int32_t plane = p->in_h * p->in_w;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = buf + n * plane * ch;
        int8_t* dst = buf + n * p->out_h * p->out_w * ch;
        for (int32_t c = 0; c < ch; ++c) {
            /* save input channel c: output channel c overwrites only channel-c bytes */
            for (int32_t i = 0; i < plane; ++i) {
                scratch[i] = img[i * ch + c];
            }
            for (int32_t oh = 0; oh < p->out_h; ++oh) {
                for (int32_t ow = 0; ow < p->out_w; ++ow) {
                    const int32_t ih0 = oh * p->stride_h - p->pad_top;
                    const int32_t iw0 = ow * p->stride_w - p->pad_left;
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
                            acc += ((int32_t)scratch[ih * p->in_w + iw] - p->in_zp) *
                                   (int32_t)p->weights[(kh * p->k_w + kw) * ch + c];
                        }
                    }
                    dst[(oh * p->out_w + ow) * ch + c] =
                        tk_requant_s8(acc, p->multiplier[c], p->shift[c], p->out_zp, p->act_min, p->act_max);
                }
            }
        }
    }
}
