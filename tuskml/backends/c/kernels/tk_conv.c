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

/* ---- depthwise ---------------------------------------------------------------------------------
 * Four channels at a time: one LDR brings channels c..c+3 of an input pixel (NHWC, or the in-place
 * variant's 4-channel scratch copy), another the 4 weights of that tap; SXTB16 splits both into even
 * and odd int16 lanes, SADD16 subtracts the input zero point (x - zp is within [-255, 255]) and
 * SMLABB/SMLATT add the four products into four register accumulators. The taps of an output pixel
 * are clipped to the image once (no test per MAC), and the four sums are requantised by the row
 * requantiser (fast exact path). Channels past the last multiple of 4 take the scalar loop. The
 * integer result is the formula of ir.py whatever the grouping: every product and sum is exact. */

/* Valid kernel index range [lo, hi) of one axis: positions base + k*dil inside [0, size). */
static inline void tap_range(int32_t base, int32_t dil, int32_t k, int32_t size, int32_t* lo, int32_t* hi) {
    int32_t a = 0;
    if (base < 0) {
        a = (-base + dil - 1) / dil;
    }
    int32_t b = 0;
    if (base <= size - 1) {
        b = (size - 1 - base) / dil + 1;
        if (b > k) {
            b = k;
        }
    }
    *lo = a;
    *hi = b > a ? b : a;
}

/* Channels c..c+3 of every output pixel. src: input pixel 0 channel c, src_step bytes between pixels;
 * dst: output pixel 0 channel c, dst_step bytes between pixels. */
static void dw_group4(const tk_conv_params* p, const int8_t* src, int32_t src_step, int8_t* dst, int32_t dst_step,
                      int32_t c) {
    const int32_t ch = p->in_c;
    const int8_t* wbase = p->weights + c;
    const uint32_t neg_zp = (uint32_t)(uint16_t)(int16_t)(-p->in_zp) * 0x00010001u;
    const int32_t b0 = p->bias ? p->bias[c] : 0, b1 = p->bias ? p->bias[c + 1] : 0;
    const int32_t b2 = p->bias ? p->bias[c + 2] : 0, b3 = p->bias ? p->bias[c + 3] : 0;
    const int32_t x_row = p->dil_h * p->in_w * src_step, x_col = p->dil_w * src_step;
    const int32_t w_row = p->k_w * ch;
    int32_t acc[4];
    for (int32_t oh = 0; oh < p->out_h; ++oh) {
        const int32_t ih0 = oh * p->stride_h - p->pad_top;
        int32_t kh_lo, kh_hi;
        tap_range(ih0, p->dil_h, p->k_h, p->in_h, &kh_lo, &kh_hi);
        for (int32_t ow = 0; ow < p->out_w; ++ow) {
            const int32_t iw0 = ow * p->stride_w - p->pad_left;
            int32_t kw_lo, kw_hi;
            tap_range(iw0, p->dil_w, p->k_w, p->in_w, &kw_lo, &kw_hi);
            int32_t a0 = b0, a1 = b1, a2 = b2, a3 = b3;
            const int8_t* xr = src + ((ih0 + kh_lo * p->dil_h) * p->in_w + iw0 + kw_lo * p->dil_w) * src_step;
            const int8_t* wr = wbase + (kh_lo * p->k_w + kw_lo) * ch;
            const int32_t taps_w = kw_hi - kw_lo;
            for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
                const int8_t* xp = xr;
                const int8_t* wp = wr;
                for (int32_t t = 0; t < taps_w; ++t) {
                    const uint32_t x4 = tk_read_u32(xp);
                    const uint32_t w4 = tk_read_u32(wp);
                    const uint32_t xe = tk_sadd16(tk_sxtb16(x4), neg_zp);
                    const uint32_t xo = tk_sadd16(tk_sxtb16_ror8(x4), neg_zp);
                    const uint32_t we = tk_sxtb16(w4);
                    const uint32_t wo = tk_sxtb16_ror8(w4);
                    a0 = tk_smlabb(xe, we, a0);
                    a2 = tk_smlatt(xe, we, a2);
                    a1 = tk_smlabb(xo, wo, a1);
                    a3 = tk_smlatt(xo, wo, a3);
                    xp += x_col;
                    wp += ch;
                }
                xr += x_row;
                wr += w_row;
            }
            acc[0] = a0;
            acc[1] = a1;
            acc[2] = a2;
            acc[3] = a3;
            tk_requant_row_s8(acc, 4, p->multiplier + c, p->shift + c, p->out_zp, p->act_min, p->act_max,
                              dst + (oh * p->out_w + ow) * dst_step);
        }
    }
}

/* One channel c, scalar: src/dst as in dw_group4. */
static void dw_channel(const tk_conv_params* p, const int8_t* src, int32_t src_step, int8_t* dst, int32_t dst_step,
                       int32_t c) {
    const int32_t ch = p->in_c;
    for (int32_t oh = 0; oh < p->out_h; ++oh) {
        const int32_t ih0 = oh * p->stride_h - p->pad_top;
        int32_t kh_lo, kh_hi;
        tap_range(ih0, p->dil_h, p->k_h, p->in_h, &kh_lo, &kh_hi);
        for (int32_t ow = 0; ow < p->out_w; ++ow) {
            const int32_t iw0 = ow * p->stride_w - p->pad_left;
            int32_t kw_lo, kw_hi;
            tap_range(iw0, p->dil_w, p->k_w, p->in_w, &kw_lo, &kw_hi);
            int32_t acc = p->bias ? p->bias[c] : 0;
            for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
                const int32_t ih = ih0 + kh * p->dil_h;
                for (int32_t kw = kw_lo; kw < kw_hi; ++kw) {
                    const int32_t iw = iw0 + kw * p->dil_w;
                    acc += ((int32_t)src[(ih * p->in_w + iw) * src_step] - p->in_zp) *
                           (int32_t)p->weights[(kh * p->k_w + kw) * ch + c];
                }
            }
            dst[(oh * p->out_w + ow) * dst_step] =
                tk_requant_s8(acc, p->multiplier[c], p->shift[c], p->out_zp, p->act_min, p->act_max);
        }
    }
}

void tk_depthwise_conv2d_s8(const tk_conv_params* p, const int8_t* in, int8_t* out) {
    const int32_t ch = p->in_c;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * ch;
        int8_t* dst = out + n * p->out_h * p->out_w * ch;
        int32_t c = 0;
        for (; c + 4 <= ch; c += 4) {
            dw_group4(p, img + c, ch, dst + c, ch, c);
        }
        for (; c < ch; ++c) {
            dw_channel(p, img + c, ch, dst + c, ch, c);
        }
    }
}

int32_t tk_depthwise_inplace_scratch_bytes(const tk_conv_params* p) {
    return (p->in_c >= 4 ? 4 : 1) * p->in_h * p->in_w;
}

void tk_depthwise_conv2d_s8_inplace(const tk_conv_params* p, int8_t* buf, int8_t* scratch) {
    const int32_t ch = p->in_c;
    const int32_t plane = p->in_h * p->in_w;
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = buf + n * plane * ch;
        int8_t* dst = buf + n * p->out_h * p->out_w * ch;
        int32_t c = 0;
        for (; c + 4 <= ch; c += 4) {
            /* save input channels c..c+3: the outputs overwrite only those bytes of each pixel */
            for (int32_t i = 0; i < plane; ++i) {
                const uint32_t v = tk_read_u32(img + i * ch + c);
                __builtin_memcpy(scratch + 4 * i, &v, 4);
            }
            dw_group4(p, scratch, 4, dst + c, ch, c);
        }
        for (; c < ch; ++c) {
            for (int32_t i = 0; i < plane; ++i) {
                scratch[i] = img[i * ch + c];
            }
            dw_channel(p, scratch, 1, dst + c, ch, c);
        }
    }
}
