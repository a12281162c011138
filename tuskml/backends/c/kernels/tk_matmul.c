/* Batch matmul of two int8 activations (attention q @ k^T and attn @ v), portable and DSP. */
#include "tk_dsp.h"
#include "tk_fc.h"
#include "tk_ops.h"
#include "tk_requant.h"

void tk_batch_matmul_s8_portable(const tk_batch_matmul_params* p, const int8_t* a, const int8_t* b, int8_t* out) {
    const int32_t m_len = p->m, k_len = p->k, n_len = p->n;
    for (int32_t bi = 0; bi < p->batch; ++bi) {
        const int8_t* ab = a + bi * m_len * k_len;
        const int8_t* bb = b + bi * k_len * n_len;
        int8_t* ob = out + bi * m_len * n_len;
        for (int32_t m = 0; m < m_len; ++m) {
            for (int32_t n = 0; n < n_len; ++n) {
                int32_t acc = 0;
                for (int32_t k = 0; k < k_len; ++k) {
                    acc += ((int32_t)ab[m * k_len + k] - p->a_zp) * ((int32_t)bb[k * n_len + n] - p->b_zp);
                }
                ob[m * n_len + n] = tk_offset_clamp_s8(tk_mbqm(acc, p->multiplier, p->shift), p->out_zp, -128, 127);
            }
        }
    }
}

void tk_batch_matmul_s8_dsp(const tk_batch_matmul_params* p, const int8_t* a, const int8_t* b, int8_t* out,
                            uint32_t* scratch) {
    const int32_t m_len = p->m, k_len = p->k, n_len = p->n;
    const int32_t groups = k_len / 4;
    const int32_t k_main = groups * 4;
    for (int32_t bi = 0; bi < p->batch; ++bi) {
        const int8_t* ab = a + bi * m_len * k_len;
        const int8_t* bb = b + bi * k_len * n_len;
        int8_t* ob = out + bi * m_len * n_len;
        for (int32_t n = 0; n < n_len; ++n) {
            /* widen column n of b (minus b_zp) into SXTB16 pair order; keep its sum for a_zp */
            uint32_t col_sum = 0;
            uint32_t* w = scratch;
            for (int32_t g = 0; g < groups; ++g) {
                const int32_t k = 4 * g;
                const int32_t v0 = (int32_t)bb[k * n_len + n] - p->b_zp;
                const int32_t v1 = (int32_t)bb[(k + 1) * n_len + n] - p->b_zp;
                const int32_t v2 = (int32_t)bb[(k + 2) * n_len + n] - p->b_zp;
                const int32_t v3 = (int32_t)bb[(k + 3) * n_len + n] - p->b_zp;
                col_sum += (uint32_t)(v0 + v1 + v2 + v3);
                w[0] = tk_pkhbt16((uint32_t)v0, (uint32_t)v2);
                w[1] = tk_pkhbt16((uint32_t)v1, (uint32_t)v3);
                w += 2;
            }
            const uint32_t zp_term = (uint32_t)p->a_zp * col_sum;
            for (int32_t m = 0; m < m_len; ++m) {
                const int8_t* row = ab + m * k_len;
                /* sum (a - a_zp) * b' = sum a * b' - a_zp * sum b'  (exact modulo 2^32) */
                int32_t acc = (int32_t)(0u - zp_term);
                acc = tk_dot_widened_s8(scratch, row, groups, acc);
                for (int32_t k = k_main; k < k_len; ++k) {
                    acc += ((int32_t)row[k] - p->a_zp) * ((int32_t)bb[k * n_len + n] - p->b_zp);
                }
                ob[m * n_len + n] = tk_offset_clamp_s8(tk_mbqm(acc, p->multiplier, p->shift), p->out_zp, -128, 127);
            }
        }
    }
}
