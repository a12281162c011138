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

/* B = 16 stored blocks of one output row against one widened input row, hand-scheduled (DSP target).
 *
 * Why asm: the compiler's version of this loop spent 32 instructions per block (index arithmetic,
 * single-word loads, a register copy per group); here a block is 26: LDRH run + ADD (skip the zero
 * blocks: run * 16 inputs = run * 32 bytes of widened input), 2 LDRD for the 16 weights (the values
 * array is word aligned and B = 16 keeps every block word aligned, checked by the caller), 4 LDRD for
 * the widened input, 8 SXTB16 + 8 SMLAD, SUBS + BNE. Same arithmetic as tk_dot_groups. nnzb > 0. */
#if TK_HAVE_DSP_INSTRUCTIONS
TK_INLINE int32_t brl_blocks16_asm(const uint32_t* xw, const uint16_t** runs_io, const int8_t** vals_io,
                                   int32_t nnzb, int32_t acc) {
    const uint16_t* runs = *runs_io;
    const int8_t* v = *vals_io;
    uint32_t t, w0, w1, x0, x1;
    __asm__ volatile(
        "1:\n\t"
        "ldrh %[t], [%[runs]], #2\n\t"
        "add %[xw], %[xw], %[t], lsl #5\n\t"
        "ldrd %[w0], %[w1], [%[v]], #8\n\t"
        "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
        "sxtb16 %[t], %[w0]\n\t"
        "smlad %[a], %[x0], %[t], %[a]\n\t"
        "sxtb16 %[t], %[w0], ror #8\n\t"
        "smlad %[a], %[x1], %[t], %[a]\n\t"
        "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
        "sxtb16 %[t], %[w1]\n\t"
        "smlad %[a], %[x0], %[t], %[a]\n\t"
        "sxtb16 %[t], %[w1], ror #8\n\t"
        "smlad %[a], %[x1], %[t], %[a]\n\t"
        "ldrd %[w0], %[w1], [%[v]], #8\n\t"
        "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
        "sxtb16 %[t], %[w0]\n\t"
        "smlad %[a], %[x0], %[t], %[a]\n\t"
        "sxtb16 %[t], %[w0], ror #8\n\t"
        "smlad %[a], %[x1], %[t], %[a]\n\t"
        "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
        "sxtb16 %[t], %[w1]\n\t"
        "smlad %[a], %[x0], %[t], %[a]\n\t"
        "sxtb16 %[t], %[w1], ror #8\n\t"
        "smlad %[a], %[x1], %[t], %[a]\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [a] "+r"(acc), [xw] "+r"(xw), [runs] "+r"(runs), [v] "+r"(v), [n] "+r"(nnzb), [t] "=&r"(t),
          [w0] "=&r"(w0), [w1] "=&r"(w1), [x0] "=&r"(x0), [x1] "=&r"(x1)
        :
        : "cc", "memory");
    *runs_io = runs;
    *vals_io = v;
    return acc;
}
#endif

/* One input row (a linear layer with batch 1), DSP path, in two passes: every output's int32
 * accumulator into accs, then tk_requant_row_s8 -- the same requantisation loop the dense DSP
 * kernel uses, so the sparse/dense comparison pays identical requant code.
 *
 * Why two passes: fused, the per-output requant constants (clamp bounds, zero point) and the block
 * walk's pointers do not fit the registers together and spill around every output; split, the
 * accumulate loop keeps its pointers in registers and walks them by post-increment (bias, nnzb,
 * runs, values, accs), and the requant loop is the tight shared one. has_bias is a compile-time
 * constant at each call site, so the loop has no per-output bias branch. */
TK_INLINE void brl_row_dsp_accs(const tk_fc_params* p, const uint32_t* xw0, int32_t* accs, const int32_t groups_per_block,
                                const int32_t has_bias, const int32_t use_asm16) {
    const uint16_t* runs = p->runs;
    const int8_t* vals = p->values;
    const uint16_t* nnzb_p = p->row_nnzb;
    const int32_t* bias = p->bias;
    int32_t* const end = accs + p->out_features;
    const int32_t words_per_block = groups_per_block * 2;
    (void)use_asm16;
    while (accs < end) {
        int32_t acc = has_bias ? *bias++ : 0;
        int32_t j = *nnzb_p++;
#if TK_HAVE_DSP_INSTRUCTIONS
        if (use_asm16) {
            if (j > 0) {
                acc = brl_blocks16_asm(xw0, &runs, &vals, j, acc);
            }
            *accs++ = acc;
            continue;
        }
#endif
        const uint32_t* xw = xw0;
        for (; j > 0; --j) {
            xw += (int32_t)(*runs++) * words_per_block;
            acc = tk_dot_groups(xw, vals, groups_per_block, acc);
            xw += words_per_block;
            vals += groups_per_block * 4;
        }
        *accs++ = acc;
    }
}

/* Dispatch to a block-size-specialised brl_row_dsp_accs, then requantise the row. */
static void brl_row_dsp(const tk_fc_params* p, const uint32_t* xw0, int32_t* accs, int8_t* out) {
    const int32_t has_bias = p->bias != 0;
    /* the asm B = 16 loop reads the values with LDRD: needs a word-aligned values array */
    const int32_t asm16 = TK_HAVE_DSP_INSTRUCTIONS && ((uintptr_t)p->values & 3u) == 0;
    switch (p->block) {
        case 4:
            if (has_bias) brl_row_dsp_accs(p, xw0, accs, 1, 1, 0); else brl_row_dsp_accs(p, xw0, accs, 1, 0, 0);
            break;
        case 8:
            if (has_bias) brl_row_dsp_accs(p, xw0, accs, 2, 1, 0); else brl_row_dsp_accs(p, xw0, accs, 2, 0, 0);
            break;
        case 16:
            if (asm16) {
                if (has_bias) brl_row_dsp_accs(p, xw0, accs, 4, 1, 1); else brl_row_dsp_accs(p, xw0, accs, 4, 0, 1);
            } else {
                if (has_bias) brl_row_dsp_accs(p, xw0, accs, 4, 1, 0); else brl_row_dsp_accs(p, xw0, accs, 4, 0, 0);
            }
            break;
        default:
            brl_row_dsp_accs(p, xw0, accs, p->block / 4, has_bias, 0);
            break;
    }
    tk_requant_row_s8(accs, p->out_features, p->multiplier, p->shift, p->out_zp, p->act_min, p->act_max, out);
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

/* One group of 4 raw int8 inputs against 4 int8 weights: SXTB16 splits both into (0,2) and (1,3)
 * int16 pairs, two SMLAD. The input zero point is not subtracted here (see brl_channel_major). */
TK_INLINE int32_t dot4_raw(const int8_t* x, const int8_t* w, int32_t acc) {
    const uint32_t xv = tk_read_u32(x), wv = tk_read_u32(w);
    acc = tk_smlad(tk_sxtb16(xv), tk_sxtb16(wv), acc);
    return tk_smlad(tk_sxtb16_ror8(xv), tk_sxtb16_ror8(wv), acc);
}

/* Many input rows (the pixels of a 1x1 conv), output channel by output channel.
 *
 * Why channel-major: at high block sparsity most of the time used to go into what sparsity cannot
 * skip -- the per-output requantisation and row walk. Walking one weight row for all input rows
 * keeps that channel's requant constants (multiplier, exponent, 2^(e-1), clamp bounds) in registers
 * (tk_requant_fast_q, ~10 instructions), and a channel with no stored block at all has the same
 * output, requant(bias), for every row: computed once, then only stored.
 * The input is read raw (no widened copy per row): sum_k (x_k - zp) w_k = sum_k x_k w_k - zp sum_k w_k,
 * and bias - zp * sum(w) is computed once per channel. Exact modulo 2^32 like every SMLAD
 * accumulator here (the true sum fits int32). Needs K % B == 0 (blocks never read past a row). */
TK_INLINE void brl_channel_major(const tk_fc_params* p, const int8_t* in, int8_t* out, const int32_t groups_per_block,
                                 const int32_t full_int8) {
    const int32_t rows = p->rows, k_len = p->in_features, n_out = p->out_features;
    const int32_t in_zp = p->in_zp, out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
    const int32_t lo = act_min - out_zp, hi = act_max - out_zp;
    const int32_t* bias = p->bias;
    const int32_t* mult = p->multiplier;
    const int32_t* shift = p->shift;
    const uint16_t* row_nnzb = p->row_nnzb;
    const uint16_t* runs = p->runs;
    const int8_t* vals = p->values;
    const int32_t bsz = groups_per_block * 4;
    for (int32_t o = 0; o < n_out; ++o) {
        const int32_t nnzb = row_nnzb[o];
        const int32_t b = bias ? bias[o] : 0;
        const int32_t m = mult[o], s = shift[o];
        int8_t* dst = out + o;
        if (nnzb == 0) {
            const int8_t c = tk_requant_s8(b, m, s, out_zp, act_min, act_max);
            int32_t n = 0;
            for (; n + 4 <= rows; n += 4) {
                dst[0] = c;
                dst[n_out] = c;
                dst[2 * n_out] = c;
                dst[3 * n_out] = c;
                dst += 4 * n_out;
            }
            for (; n < rows; ++n) {
                *dst = c;
                dst += n_out;
            }
            continue;
        }
        uint32_t wsum = 0;
        for (int32_t i = 0; i < nnzb * bsz; ++i) {
            wsum += (uint32_t)(int32_t)vals[i];
        }
        const int32_t acc0 = (int32_t)((uint32_t)b - (uint32_t)in_zp * wsum);
        const int32_t fast = tk_requant_is_fast(m, s);
        const int32_t e = fast ? -s : 1;
        const int32_t half = (int32_t)(0x80000000u >> (32 - e));
        const int8_t* x = in;
        int32_t n = fast ? 0 : rows; /* a channel off the fast path takes the one-row loop below */
        /* two rows per walk of the weight row: each weight word is loaded and split once for both */
        for (; n + 2 <= rows; n += 2) {
            int32_t acc_a = acc0, acc_b = acc0;
            const int8_t* xa = x;
            const uint16_t* r = runs;
            const int8_t* v = vals;
            for (int32_t j = nnzb; j > 0; --j) {
                xa += (int32_t)(*r++) * bsz;
                for (int32_t g = 0; g < groups_per_block; ++g) {
                    const uint32_t w = tk_read_u32(v + 4 * g);
                    const uint32_t w02 = tk_sxtb16(w), w13 = tk_sxtb16_ror8(w);
                    const uint32_t va = tk_read_u32(xa + 4 * g), vb = tk_read_u32(xa + k_len + 4 * g);
                    acc_a = tk_smlad(tk_sxtb16_ror8(va), w13, tk_smlad(tk_sxtb16(va), w02, acc_a));
                    acc_b = tk_smlad(tk_sxtb16_ror8(vb), w13, tk_smlad(tk_sxtb16(vb), w02, acc_b));
                }
                xa += bsz;
                v += bsz;
            }
            int32_t qa = tk_requant_fast_q(acc_a, m, e, half);
            int32_t qb = tk_requant_fast_q(acc_b, m, e, half);
            if (full_int8) {
                /* the full int8 clamp: ADD + SSAT, as in tk_requant_row_s8 (|q| <= 2^30, no overflow) */
                dst[0] = (int8_t)tk_ssat8(qa + out_zp);
                dst[n_out] = (int8_t)tk_ssat8(qb + out_zp);
            } else {
                qa = qa < lo ? lo : qa;
                qa = qa > hi ? hi : qa;
                qb = qb < lo ? lo : qb;
                qb = qb > hi ? hi : qb;
                dst[0] = (int8_t)(qa + out_zp);
                dst[n_out] = (int8_t)(qb + out_zp);
            }
            dst += 2 * n_out;
            x += 2 * k_len;
        }
        if (!fast) {
            x = in;
            dst = out + o;
            n = 0;
        }
        for (; n < rows; ++n) {
            int32_t acc = acc0;
            const int8_t* xp = x;
            const uint16_t* r = runs;
            const int8_t* v = vals;
            for (int32_t j = nnzb; j > 0; --j) {
                xp += (int32_t)(*r++) * bsz;
                for (int32_t g = 0; g < groups_per_block; ++g) {
                    acc = dot4_raw(xp + 4 * g, v + 4 * g, acc);
                }
                xp += bsz;
                v += bsz;
            }
            *dst = tk_requant_s8(acc, m, s, out_zp, act_min, act_max);
            dst += n_out;
            x += k_len;
        }
        runs += nnzb;
        vals += nnzb * bsz;
    }
}

void tk_fc_s8_brl(const tk_fc_params* p, const int8_t* in, int8_t* out, uint32_t* scratch, int32_t use_dsp) {
    const int32_t k_len = p->in_features;
    const int32_t n_out = p->out_features;
    const int32_t block = p->block;
    const int32_t padded_k = (k_len + block - 1) / block * block;
    const int32_t dsp = use_dsp && (block % 4 == 0);
    int32_t n = 0;
    if (dsp && p->rows >= 2 && k_len % block == 0) {
        /* full int8 output range (no fused activation): the SSAT clamp, like tk_requant_row_s8 */
        const int32_t full = p->act_min == -128 && p->act_max == 127 && p->out_zp >= -128 && p->out_zp <= 127;
        switch (block) {
            case 4: if (full) brl_channel_major(p, in, out, 1, 1); else brl_channel_major(p, in, out, 1, 0); break;
            case 8: if (full) brl_channel_major(p, in, out, 2, 1); else brl_channel_major(p, in, out, 2, 0); break;
            case 16: if (full) brl_channel_major(p, in, out, 4, 1); else brl_channel_major(p, in, out, 4, 0); break;
            default: brl_channel_major(p, in, out, block / 4, full); break;
        }
        return;
    }
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
            /* scratch: [widened row: padded_k / 2 words][accs] (tk_fc_scratch_bytes) */
            tk_widen_s8_pairs(x, k_len, padded_k, p->in_zp, scratch, 2);
            brl_row_dsp(p, scratch, (int32_t*)(scratch + padded_k / 2), out);
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
