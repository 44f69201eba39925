// lowbit's CUDA runtime: fused dequantize-GEMV for every tensor type, RMSNorm, RoPE, attention
// over an fp16 KV cache, SwiGLU, and a small C API (loaded from Python with cffi, ABI mode).
//
// Weights stay in their quantized bytes on the GPU (same byte count as the file); some types are
// rearranged at load so that weight loads are wide, aligned and x loads coalesced:
//   q8_0: body = the int8 quants, each full 512-weight chunk of a row permuted so that lane l's
//         16 bytes hold weights 128i+4l..+3 (i = 0..3); tail = the fp16 scales.
//   q6_k: body = the first 208 bytes of each block (ql, qh, scales); tail = the fp16 d.
//   q2_k: body = the 64 bytes of qs; tail = 16 scale bytes, d, dmin.
//   q3_k: body = hmask and qs (96 bytes); tail = 12 scale bytes, d.
//   q4_k (144 bytes) and q5_k (176 bytes) blocks are 16-byte multiples and stay as in the file.
// A k-quant row whose length is not a multiple of 256 ends in a tail block (format_spec/types/
// kquants.md): tail blocks live in their own array (lb_mat.xtra, one per row, as in the file).
//   cbk2, cbk4, d4l2 (codebook types, format_spec/types/codebook.md): body = the index bytes of a
//         row, each full 512-vector chunk permuted (vq_pos), tail = the scale byte of each block, xtra = side
//         data: the codebook (256 x D fp16; d4l2's fixed D4 lattice written out by the loader) then
//         the fp16 row scales (the tensor's prefix). Their GEMV is gemv_vq_kernel (codebook in
//         shared memory as float), launched by lb_gemv for the job's codebook matrices.
//   <base>.h (Huffman-coded) tensors are decoded on the host at load back into the base type's
//         bytes (lowbit/cuda/weights.py) and run the base type's kernels.
// Adding a type: its functions in its family file (row dot, dequant_one's case in gemv.cu), its
// entry in lowbit/cuda/weights.py.
//
// One compilation unit: the family files below are included in dependency order (common first,
// the C API last) and share common.cuh's static state.
#include "common.cuh"
#include "kquants.cu"
#include "q8_floats.cu"
#include "codebook.cu"
#include "gemv.cu"
#include "mma.cu"
#include "norm_rope.cu"
#include "attention.cu"
#include "argmax.cu"
#include "api.cu"
