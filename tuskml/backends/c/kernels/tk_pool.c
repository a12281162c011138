/* Average / max pooling (NHWC) and mean over arbitrary axes. */
#include "tk_ops.h"
#include "tk_requant.h"

void tk_avg_pool2d_s8(const tk_pool_params* p, const int8_t* in, int8_t* out) {
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * p->channels;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                for (int32_t c = 0; c < p->channels; ++c) {
                    int32_t acc = 0;
                    for (int32_t kh = 0; kh < p->k_h; ++kh) {
                        const int8_t* row = img + ((oh * p->stride_h + kh) * p->in_w + ow * p->stride_w) * p->channels + c;
                        for (int32_t kw = 0; kw < p->k_w; ++kw) {
                            acc += (int32_t)row[kw * p->channels] - p->in_zp;
                        }
                    }
                    *out++ = tk_offset_clamp_s8(tk_mbqm(acc, p->multiplier, p->shift), p->out_zp, -128, 127);
                }
            }
        }
    }
}

void tk_max_pool2d_s8(const tk_pool_params* p, const int8_t* in, int8_t* out) {
    for (int32_t n = 0; n < p->batch; ++n) {
        const int8_t* img = in + n * p->in_h * p->in_w * p->channels;
        for (int32_t oh = 0; oh < p->out_h; ++oh) {
            for (int32_t ow = 0; ow < p->out_w; ++ow) {
                const int32_t ih0 = oh * p->stride_h - p->pad_top;
                const int32_t iw0 = ow * p->stride_w - p->pad_left;
                for (int32_t c = 0; c < p->channels; ++c) {
                    int32_t best = -128;
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
                            const int32_t v = img[(ih * p->in_w + iw) * p->channels + c];
                            best = v > best ? v : best;
                        }
                    }
                    *out++ = (int8_t)best;
                }
            }
        }
    }
}

void tk_mean_s8(const tk_mean_params* p, const int8_t* in, int8_t* out) {
    const int32_t* od = p->out_dims;
    const int32_t* rd = p->reduce_dims;
    const int32_t* st = p->in_strides;
    for (int32_t o0 = 0; o0 < od[0]; ++o0)
    for (int32_t o1 = 0; o1 < od[1]; ++o1)
    for (int32_t o2 = 0; o2 < od[2]; ++o2)
    for (int32_t o3 = 0; o3 < od[3]; ++o3)
    for (int32_t o4 = 0; o4 < od[4]; ++o4)
    for (int32_t o5 = 0; o5 < od[5]; ++o5) {
        const int8_t* base = in + o0 * st[0] + o1 * st[1] + o2 * st[2] + o3 * st[3] + o4 * st[4] + o5 * st[5];
        int32_t acc = 0;
        for (int32_t r0 = 0; r0 < rd[0]; ++r0)
        for (int32_t r1 = 0; r1 < rd[1]; ++r1)
        for (int32_t r2 = 0; r2 < rd[2]; ++r2)
        for (int32_t r3 = 0; r3 < rd[3]; ++r3)
        for (int32_t r4 = 0; r4 < rd[4]; ++r4)
        for (int32_t r5 = 0; r5 < rd[5]; ++r5) {
            acc += (int32_t)base[r0 * st[0] + r1 * st[1] + r2 * st[2] + r3 * st[3] + r4 * st[4] + r5 * st[5]] - p->in_zp;
        }
        *out++ = tk_offset_clamp_s8(tk_mbqm(acc, p->multiplier, p->shift), p->out_zp, -128, 127);
    }
}
