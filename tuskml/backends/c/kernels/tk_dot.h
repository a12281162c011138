/* Inline SMLAD dot-product loops shared by the DSP and block-sparse kernels.
 *
 * The input side is "widened": per group of 4 int8 inputs, two words of int16 pairs
 * (x0, x2) and (x1, x3) (already minus the zero point, see tk_widen_s8_pairs). The weight side is
 * raw int8, 4 per word; SXTB16 gives (w0, w2) and SXTB16 ROR 8 gives (w1, w3), which line up with
 * the widened pairs, so each group of 4 MACs is LDR + 2 SXTB16 + 2 SMLAD (+ the widened loads). */
#ifndef TK_DOT_H
#define TK_DOT_H

#include <stdint.h>

#include "tk_dsp.h"

#define TK_INLINE static inline __attribute__((always_inline))

/* One group of 4. The two widened words are read as one 64-bit value so the compiler can use a
 * single LDRD (the widened buffers are word aligned). */
TK_INLINE int32_t tk_dot_group(const uint32_t* xw, uint32_t w, int32_t acc) {
    uint64_t pair;
    __builtin_memcpy(&pair, xw, 8);
    acc = tk_smlad((uint32_t)pair, tk_sxtb16(w), acc);
    return tk_smlad((uint32_t)(pair >> 32), tk_sxtb16_ror8(w), acc);
}

/* n_groups groups, two per iteration. */
TK_INLINE int32_t tk_dot_groups(const uint32_t* xw, const int8_t* w, int32_t n_groups, int32_t acc) {
    for (; n_groups >= 2; n_groups -= 2) {
        const uint32_t w0 = tk_read_u32(w);
        const uint32_t w1 = tk_read_u32(w + 4);
        acc = tk_dot_group(xw, w0, acc);
        acc = tk_dot_group(xw + 2, w1, acc);
        xw += 4;
        w += 8;
    }
    if (n_groups) {
        acc = tk_dot_group(xw, tk_read_u32(w), acc);
    }
    return acc;
}

/* One group of 4 weights applied to two widened input rows (row b at xwa + row_words): the weight
 * word is loaded and split once for both. */
TK_INLINE void tk_dot_group_x2(const uint32_t* xwa, int32_t row_words, uint32_t w, int32_t* acc_a, int32_t* acc_b) {
    const uint32_t w02 = tk_sxtb16(w);
    const uint32_t w13 = tk_sxtb16_ror8(w);
    uint64_t pa, pb;
    __builtin_memcpy(&pa, xwa, 8);
    __builtin_memcpy(&pb, xwa + row_words, 8);
    *acc_a = tk_smlad((uint32_t)(pa >> 32), w13, tk_smlad((uint32_t)pa, w02, *acc_a));
    *acc_b = tk_smlad((uint32_t)(pb >> 32), w13, tk_smlad((uint32_t)pb, w02, *acc_b));
}

/* n_groups groups of 4 weights (wp, consecutive) applied to two interleaved widened rows (group g at
 * xw + 4g: a02 a13 b02 b13). On the DSP target the loop is hand-scheduled inline asm: C compilers
 * split the 64-bit widened loads into single LDRs here; with LDRD it is 2 LDRD + 1 LDR + 2 SXTB16 +
 * 4 SMLAD per group (8 MACs), two groups per iteration. Same arithmetic as the C version. */
TK_INLINE void tk_dot_groups_x2(const uint32_t* xw, const int8_t* wp, int32_t n_groups, int32_t* acc_a,
                                int32_t* acc_b) {
#if TK_HAVE_DSP_INSTRUCTIONS
    int32_t a = *acc_a, b = *acc_b;
    int32_t pairs = n_groups >> 1;
    if (pairs > 0) {
        uint32_t x0, x1, x2, x3, w, t;
        __asm__ volatile(
            "1:\n\t"
            "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
            "ldrd %[x2], %[x3], [%[xw]], #8\n\t"
            "ldr %[w], [%[wp]], #4\n\t"
            "sxtb16 %[t], %[w]\n\t"
            "smlad %[a], %[x0], %[t], %[a]\n\t"
            "smlad %[b], %[x2], %[t], %[b]\n\t"
            "sxtb16 %[t], %[w], ror #8\n\t"
            "smlad %[a], %[x1], %[t], %[a]\n\t"
            "smlad %[b], %[x3], %[t], %[b]\n\t"
            "ldrd %[x0], %[x1], [%[xw]], #8\n\t"
            "ldrd %[x2], %[x3], [%[xw]], #8\n\t"
            "ldr %[w], [%[wp]], #4\n\t"
            "sxtb16 %[t], %[w]\n\t"
            "smlad %[a], %[x0], %[t], %[a]\n\t"
            "smlad %[b], %[x2], %[t], %[b]\n\t"
            "sxtb16 %[t], %[w], ror #8\n\t"
            "smlad %[a], %[x1], %[t], %[a]\n\t"
            "smlad %[b], %[x3], %[t], %[b]\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b\n\t"
            : [a] "+r"(a), [b] "+r"(b), [xw] "+r"(xw), [wp] "+r"(wp), [n] "+r"(pairs), [x0] "=&r"(x0),
              [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [w] "=&r"(w), [t] "=&r"(t)
            :
            : "cc", "memory");
    }
    if (n_groups & 1) {
        tk_dot_group_x2(xw, 2, tk_read_u32(wp), &a, &b);
    }
    *acc_a = a;
    *acc_b = b;
#else
    for (int32_t g = 0; g < n_groups; ++g) {
        tk_dot_group_x2(xw + 4 * g, 2, tk_read_u32(wp + 4 * g), acc_a, acc_b);
    }
#endif
}

#endif
