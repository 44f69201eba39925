/* lowbit native CPU kernels. Compiled once per feature level (LB_AVX512: AVX-512 BW/VL + VNNI,
   LB_AVX2: AVX2 + FMA + F16C, neither: portable scalar); the loader picks the best level the CPU has.
   Weights are read straight from the memory map: every kernel fuses dequantization with the dot
   product, 4 weight rows at a time against one activation row (decoding), or against 4 activation
   rows at once for prompts (AVX-512: q8_0 and k-quant tiles). Activations for integer types are
   quantized once per matmul input to 8-bit blocks (like GGML's q8_0) and multiplied with integer
   dot products (vpdpbusd on VNNI). Work is split over a persistent pthread pool.

   The kernels live in kernels/, one file per family as in lowbit/quants/, and are included here
   in order as one compilation unit: static helpers stay visible to every later file and the
   compiler sees the whole library at once, as it did when it was one file. */
#define _GNU_SOURCE
#include "lowbit_native.h"

#include "kernels/common.h"      /* system headers, feature level, fp16/bf16, horizontal sums */
#include "kernels/threadpool.c"  /* the persistent pthread pool, barrier, scratch memory */
#include "kernels/kquants.c"     /* q2_k .. q6_k: unpacking, decode and prompt kernels */
#include "kernels/q8_floats.c"   /* q8_0 and f32 / f16 / bf16: dot4 kernels, q8_0 prompt tiles */
#include "kernels/codebook.c"    /* cbk2, cbk4, d4l2 */
#include "kernels/huffman.c"     /* `<base>.h`: rows decoded into the base type's layout */
#include "kernels/matmul.c"      /* activation formats; the tiles of a matmul over the threads */
#include "kernels/attention.c"   /* causal attention over the KV cache */
#include "kernels/norm_rope.c"   /* RMSNorm, RoPE, SwiGLU rows */
#include "kernels/layer.c"       /* one transformer block, step by step */
#include "kernels/api.c"         /* the exported lb_* functions of lowbit_native.h */
#ifdef LB_BENCH
#include "lowbit_bench.h"
#include "kernels/bench.c"       /* entry points for tools/ only (lb_huff_bench) */
#endif
