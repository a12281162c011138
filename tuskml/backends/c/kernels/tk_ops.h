/* The remaining int8 ops of the SparseEngine IR (tuskml/backends/sparse_engine/ir.py gives the exact
 * integer semantics each kernel implements). N-dimensional ops use TK_MAX_DIMS dims, padded with
 * leading 1s by the code generator; element strides of 0 express numpy broadcasting. */
#ifndef TK_OPS_H
#define TK_OPS_H

#include <stdint.h>

#define TK_MAX_DIMS 6

/* ---- pooling (NHWC) ---------------------------------------------------------------------------- */
typedef struct {
    int32_t batch, in_h, in_w, channels, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
    int32_t in_zp, out_zp, multiplier, shift; /* avg pool only */
} tk_pool_params;

void tk_avg_pool2d_s8(const tk_pool_params* p, const int8_t* in, int8_t* out);
void tk_max_pool2d_s8(const tk_pool_params* p, const int8_t* in, int8_t* out);

/* mean over some axes: out_dims has 1 on reduced axes, reduce_dims has 1 on kept axes */
typedef struct {
    int32_t out_dims[TK_MAX_DIMS];
    int32_t reduce_dims[TK_MAX_DIMS];
    int32_t in_strides[TK_MAX_DIMS];
    int32_t in_zp, out_zp, multiplier, shift;
} tk_mean_params;

void tk_mean_s8(const tk_mean_params* p, const int8_t* in, int8_t* out);

/* ---- element-wise ------------------------------------------------------------------------------- */
typedef struct {
    int32_t dims[TK_MAX_DIMS];       /* output dims */
    int32_t a_strides[TK_MAX_DIMS];  /* element strides of a over the output index, 0 = broadcast */
    int32_t b_strides[TK_MAX_DIMS];
    int32_t a_zp, b_zp, out_zp;
    int32_t left_shift;              /* add only */
    int32_t a_multiplier, a_shift, b_multiplier, b_shift; /* add only */
    int32_t out_multiplier, out_shift;
    int32_t act_min, act_max;
} tk_binary_params;

void tk_add_s8(const tk_binary_params* p, const int8_t* a, const int8_t* b, int8_t* out);
void tk_mul_s8(const tk_binary_params* p, const int8_t* a, const int8_t* b, int8_t* out);

void tk_requantize_s8(const int8_t* in, int8_t* out, int32_t n, int32_t in_zp, int32_t out_zp, int32_t multiplier,
                      int32_t shift);
void tk_lut_s8(const int8_t* in, int8_t* out, int32_t n, const int8_t* table);

/* ---- normalisation, softmax, attention ------------------------------------------------------------ */
typedef struct {
    int32_t rows, channels;
    int32_t in_zp, out_zp, eps_q;
    const int32_t* multiplier;  /* [channels] */
    const int32_t* shift;       /* [channels] */
    const int32_t* beta_q;      /* [channels] */
} tk_layer_norm_params;

void tk_layer_norm_s8(const tk_layer_norm_params* p, const int8_t* in, int8_t* out);
void tk_softmax_s8(const int8_t* in, int8_t* out, int32_t rows, int32_t length, const int32_t* exp_table);
uint32_t tk_isqrt(uint32_t n);

typedef struct {
    int32_t batch, m, k, n;
    int32_t a_zp, b_zp, out_zp, multiplier, shift;
} tk_batch_matmul_params;

void tk_batch_matmul_s8_portable(const tk_batch_matmul_params* p, const int8_t* a, const int8_t* b, int8_t* out);
/* DSP variant: each column of b is widened once (scratch of (k+3)/4*8 bytes), rows of a are read raw
 * with SXTB16, and a_zp is applied through the column sum. */
void tk_batch_matmul_s8_dsp(const tk_batch_matmul_params* p, const int8_t* a, const int8_t* b, int8_t* out,
                            uint32_t* scratch);

/* ---- data movement ---------------------------------------------------------------------------- */
typedef struct {
    int32_t outer;              /* product of dims before the concat axis */
    int32_t n_inputs;
    const int32_t* inner;       /* [n_inputs] elements per outer index of each input */
    const int32_t* zero_points; /* [n_inputs] */
    const int32_t* multipliers; /* [n_inputs] */
    const int32_t* shifts;      /* [n_inputs] */
    int32_t out_zp;
} tk_concat_params;

void tk_concat_s8(const tk_concat_params* p, const int8_t* const* inputs, int8_t* out);

typedef struct {
    int32_t out_dims[TK_MAX_DIMS];
    int32_t in_strides[TK_MAX_DIMS]; /* stride in the input of each output axis */
} tk_transpose_params;

void tk_transpose_s8(const tk_transpose_params* p, const int8_t* in, int8_t* out);
void tk_copy_s8(const int8_t* in, int8_t* out, int32_t n);

#endif
