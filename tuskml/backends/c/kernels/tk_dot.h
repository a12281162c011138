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

#endif
