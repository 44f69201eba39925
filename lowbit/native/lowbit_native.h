/* lowbit native CPU kernels: the C API seen by cffi (build.py feeds this file, minus preprocessor
   lines, to cffi's cdef, so keep it plain C declarations). */
#ifndef LOWBIT_NATIVE_H
#define LOWBIT_NATIVE_H
#include <stdint.h>

/* Type ids (LB_F32, LB_Q4_K, ...) and block sizes: lowbit_types.h, generated from the type table
   (lowbit/quants/) by the build. The kernels run the ids LB_F32..LB_D4L2; a new kernel type adds
   its row size in lb_row_bytes(), an activation format and a dot4 kernel in its family file of
   kernels/, and its name in lowbit/native/weights.py's C_TYPES. */
#include "lowbit_types.h"

/* A Huffman-coded (".h") weight's decoder state, built once per tensor by lb_huff_new (opaque). */
typedef struct lb_huff lb_huff;

typedef struct {
    int type;                 /* LB_* */
    const uint8_t *data;      /* rows x row_bytes, straight from the memory map */
    int64_t rows, cols;
    const float *bias;        /* [rows] or NULL */
    /* codebook types (cbk2, cbk4, d4l2): data points at the rows, past the tensor's prefix; the
       prefix's fp16 values reach C widened to float (exact) by the caller, once per load */
    const float *codebook;    /* 256 x D points (d4l2: the D4 lattice) */
    const float *row_scale;   /* [rows]: d_r of each row */
    /* Huffman-coded index bytes (format_spec/types/huffman.md): non-NULL for a `<base>.h` tensor,
       whose rows are then decoded from it into the base type's layout (type = the base type);
       data is then unused (any non-NULL pointer). */
    const lb_huff *huff;
} lb_weight;

typedef struct {
    int64_t dim, n_heads, n_kv_heads, head_dim, ffn;
    float eps;
    const float *attn_norm, *ffn_norm;
    lb_weight wq, wk, wv, wo, w_gate, w_up, w_down;
} lb_layer;

int lb_init(int nthreads);            /* (re)start the pool; returns the thread count */
int lb_threads(void);
int lb_cpu_level(void);               /* 2: AVX-512 + VNNI, 1: AVX2 + FMA + F16C, 0: neither */
const char *lb_level_name(void);      /* the level this library was compiled for */
const char *lb_source_hash(void);
int lb_type_supported(int type);
int64_t lb_row_bytes(int type, int64_t cols);   /* -1 when cols does not fit the type */

/* y[n, rows] (+)= x[n, cols] @ W^T (+ bias). Returns 0, or -1 on bad arguments. */
int lb_matmul(const lb_weight *w, const float *x, float *y, int64_t n, int accumulate);
/* out[i] = row ids[i] of W, dequantized (embedding lookup); ids must be in range. */
int lb_get_rows(const lb_weight *w, const int64_t *ids, int64_t n, float *out);
int lb_rmsnorm(const float *x, const float *w, float eps, int64_t n, int64_t dim, float *out);
/* One transformer block in place on x[n, dim] at positions pos0..pos0+n-1, appending k/v to the
   layer's cache (n_ctx, n_kv_heads, head_dim); cos/sin: (n_ctx, head_dim/2) rotate-half tables. */
int lb_layer_forward(const lb_layer *L, float *x, int64_t n, int64_t pos0, float *k_cache, float *v_cache,
                     int64_t n_ctx, const float *cos, const float *sin);

/* ---- Huffman-coded types (format_spec/types/huffman.md) */
/* The decoder of one `<base>.h` tensor: code lengths len[256]; rows; n_idx index and n_other other
   bytes per row; other[rows * n_other]; the stream (stream_bytes) and its chunk offsets (u32 LE
   [rows + 1], any alignment); runs[2 * nruns]: the base row as alternating runs (is_index, length)
   in position order, lengths summing to row_bytes. Everything is checked (complete code of at most
   12 bits, offsets non-decreasing from 0 to stream_bytes, run sums); NULL on bad input. The pointers
   must stay valid while the decoder is used. */
lb_huff *lb_huff_new(const uint8_t *lengths, int64_t rows, int64_t n_idx, int64_t n_other, const uint8_t *other,
                     const uint8_t *stream, uint64_t stream_bytes, const uint8_t *offsets,
                     const uint32_t *runs, int64_t nruns, int64_t row_bytes);
void lb_huff_free(lb_huff *h);
/* Rows ids[0..n) of the base type's bytes (row_bytes each) into out: the decode alone (tests, tools). */
int lb_huff_rows(const lb_huff *h, const int64_t *ids, int64_t n, uint8_t *out);
#endif /* LOWBIT_NATIVE_H */
