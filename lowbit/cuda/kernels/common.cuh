// Shared by every family file (lowbit_cuda.cu includes them all into one compilation unit, so
// the static globals below are shared): type codes, the weight/job descriptors, the XQ activation
// layout, the runtime's state and kill switches, error helpers, device helpers, job output
// (gemv_store) and the kernel launch with programmatic dependent launch.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>

#define LB_API extern "C" __attribute__((visibility("default")))

// Type ids: the generated lowbit_types.h (lowbit/quants/ctypes_header.py, written by build.py
// into the build's include folder), the one id space of Python, C and CUDA. lb_mat.type holds the
// id of the type whose kernels read the bytes (q4_ke and `.h` tensors arrive as their kernel type).
#include "lowbit_types.h"
// CUDA-only layout variants of the float types: rows that are not 16-byte multiples take scalar
// loads. Codes T_SCALAR + id, above every type id (a `.h` id is 64 + its base's, so ids stay < 128);
// lowbit/cuda/weights.py sets them (SCALAR_CODE).
constexpr int T_SCALAR = 128;
enum { T_F32S = T_SCALAR + LB_F32, T_F16S = T_SCALAR + LB_F16, T_BF16S = T_SCALAR + LB_BF16 };
// the k-quants' ids and the codebook types' ids are each one contiguous range
static_assert(LB_Q3_K == LB_Q2_K + 1 && LB_Q4_K == LB_Q2_K + 2 && LB_Q5_K == LB_Q2_K + 3 && LB_Q6_K == LB_Q2_K + 4, "k-quant ids");
static_assert(LB_CBK4 == LB_CBK2 + 1 && LB_D4L2 == LB_CBK2 + 2, "codebook ids");
static_assert(LB_Q4_KE_H < T_SCALAR && LB_D4L2_H < T_SCALAR, "type ids below the CUDA-only codes");
__host__ __device__ __forceinline__ constexpr bool is_kquant(int t) { return t >= LB_Q2_K && t <= LB_Q6_K; }
__host__ __device__ __forceinline__ constexpr bool is_vq(int t) { return t >= LB_CBK2 && t <= LB_D4L2; }

typedef struct {
    uint64_t body, tail, bias, xtra;   // device pointers (tail, bias, xtra may be 0)
    int32_t type, rows, cols, pad;
    uint64_t body_row, tail_row, xtra_row;   // bytes per row in body / tail / xtra (tail blocks)
} lb_mat;

typedef struct {
    lb_mat m[3];
    uint64_t y[3];                 // float32 outputs, one per matrix
    int32_t ldy[3];
    int32_t nmat;
    int32_t mode;                  // 0 store (+bias), 1 accumulate y += W x, 2 y0 = silu(W0 x) * (W1 x)
    int32_t rpw[3];                // rows per warp of each matrix (set by lb_gemv)
    int32_t wcnt[3];               // warps of each matrix (set by lb_gemv)
    int32_t ksplit;                // q4_k decode: warps sharing a row group, each a slice of K (set by lb_gemv)
    int32_t xq_ready;              // decode: x is already quantized in xq (by lb_rmsnorm); else lb_gemv quantizes it
    uint64_t xq;                   // decode: q8_K activation buffer (see XQ layout below), 0 = float path only
    int32_t xq_cap;                // its capacity in 256-blocks
} lb_job;

// XQ: one token's activations quantized like GGML's q8_K (what the CPU runtime does for k-quants):
// per 256 values a float scale d = amax/127 and int8 q = rint(x/d). At base: cap x 256 bytes of q,
// each block's bytes permuted for the q4_k lanes: [lo half: 8 segments of 16][hi half: 8 of 16],
// segment s = (c = s/2, h = s%2) holding positions 64c+16h..+15 (lo) or 64c+32+16h..+15 (hi);
// then cap x 16 ints: the sum of each segment's 16 quants, as (lo, hi) pairs per s; then cap floats d.
__host__ __device__ __forceinline__ size_t xq_bs_off(int cap) { return (size_t)cap * 256; }
__host__ __device__ __forceinline__ size_t xq_d_off(int cap) { return (size_t)cap * 256 + (size_t)cap * 64; }

static char g_err[512];
static cudaStream_t g_stream = 0;
// Kill switches, read once by lb_init (docs list them with the other LOWBIT_* variables):
static bool g_pdl = true;       // LOWBIT_CUDA_PDL=0: no programmatic dependent launch (to rule it out when a kernel misbehaves)
static bool g_dp4a = true;      // LOWBIT_CUDA_DP4A=0: q4_k/q6_k decode on float activations (the float GEMV, to bisect a dp4a mismatch)
static bool g_mma = true;       // LOWBIT_CUDA_MMA=0: prompt passes on the batched GEMV instead of tensor cores (to bisect a GEMM mismatch)
static int g_mma_min = 96;      // LOWBIT_CUDA_MMA_MIN: the shortest prompt pass run on tensor cores (shorter ones are faster
                                // on the batched GEMV; tests lower it to reach the GEMM with small models)
static int g_sms = 132;
// Decode geometry (the measured winners, docs/history/cuda-notes.md): persistent blocks per SM of the
// dp4a GEMVs, rows per group of the q4_k (modes 0/1), q4_k gate/up and q6_k dp4a GEMVs, decode
// attention threads per block and P.V positions in flight per warp, decode RMSNorm threads per block.
constexpr int DP4A_BPSM = 4, ROWS_Q4 = 8, ROWS_GU = 4, ROWS_Q6 = 8;
constexpr int ATT_THREADS = 512, ATT_PVU = 16, NORM_MB = 256;

static int fail(const char* what, cudaError_t e) {
    snprintf(g_err, sizeof g_err, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return (int)e ? (int)e : -1;
}
#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return fail(#call, e_); } while (0)
#define CKL(what) do { cudaError_t e_ = cudaGetLastError(); if (e_ != cudaSuccess) return fail(what, e_); } while (0)

// ------------------------------------------------------------------------------------ helpers

// Programmatic dependent launch (sm_90+): every kernel lets the next one start at once
// (pdl_launch), and waits for the previous one (pdl_wait) before it reads activations or writes
// anything; the GEMVs issue their first weight loads before waiting, so a kernel's launch and
// first memory round trip overlap the previous kernel's tail. Without the launch attribute
// (or before sm_90) both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Hint: bring the 128-byte line at p into L2 (decode attention prefetches the cached keys/values).
__device__ __forceinline__ void l2_prefetch_line(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}

__device__ __forceinline__ float h2f(uint32_t bits) { return __half2float(__ushort_as_half((unsigned short)(bits & 0xFFFF))); }
__device__ __forceinline__ float bf2f(uint32_t bits) { return __uint_as_float((bits & 0xFFFF) << 16); }
__device__ __forceinline__ float4 ldx4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ __forceinline__ uint4 ldw(const uint8_t* p) { return __ldcs(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// small integers to float without the quarter-rate I2F: place the bits in the mantissa of 2^23
__device__ __forceinline__ float u2f(uint32_t v) { return __uint_as_float(0x4B000000u | v) - 8388608.f; }   // v < 2^23
__device__ __forceinline__ float sext8(uint32_t v, int c) {   // signed byte c of v
    return __uint_as_float(__byte_perm(v ^ 0x80808080u, 0x4B000000u, 0x7650 | c)) - 8388736.f;
}
// byte i (run-time 0..11) of the 12 bytes in words a|b|c, without a local-memory array
__device__ __forceinline__ uint32_t byte12(uint32_t a, uint32_t b, uint32_t c, int i) {
    uint32_t w = i < 4 ? a : i < 8 ? b : c;
    return (w >> (8 * (i & 3))) & 0xFF;
}

// GGML's get_scale_min_k4: 6-bit scale and min number j (0..7) from the 12 packed bytes
__device__ __forceinline__ void q4k_scale_min(int j, const uint8_t* q, int& sc, int& mn) {
    if (j < 4) { sc = q[j] & 63; mn = q[j + 4] & 63; }
    else { sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}

__device__ __forceinline__ void q4k_scale_min_reg(int j, uint32_t a, uint32_t b, uint32_t c, int& sc, int& mn) {
    if (j < 4) { sc = byte12(a, b, c, j) & 63; mn = byte12(a, b, c, j + 4) & 63; }
    else {
        sc = (byte12(a, b, c, j + 4) & 0xF) | ((byte12(a, b, c, j - 4) >> 6) << 4);
        mn = (byte12(a, b, c, j + 4) >> 4) | ((byte12(a, b, c, j) >> 6) << 4);
    }
}

constexpr int GEMV_WARPS = 4;

__device__ __forceinline__ void gemv_store(const lb_job& job, int mi, int row, int t, float a, float b) {
    if (job.mode == 2) {
        if (job.m[0].bias) a += ((const float*)job.m[0].bias)[row];
        if (job.m[1].bias) b += ((const float*)job.m[1].bias)[row];
        ((float*)job.y[0])[(size_t)t * job.ldy[0] + row] = a / (1.f + __expf(-a)) * b;
        return;
    }
    const lb_mat& m = mi == 0 ? job.m[0] : mi == 1 ? job.m[1] : job.m[2];
    float* y = (float*)(mi == 0 ? job.y[0] : mi == 1 ? job.y[1] : job.y[2]);
    int ldy = mi == 0 ? job.ldy[0] : mi == 1 ? job.ldy[1] : job.ldy[2];
    if (m.bias) a += ((const float*)m.bias)[row];
    size_t o = (size_t)t * ldy + row;
    if (job.mode == 1) y[o] += a; else y[o] = a;
}
__device__ __forceinline__ const lb_mat& job_mat(const lb_job& job, int mi) { return mi == 0 ? job.m[0] : mi == 1 ? job.m[1] : job.m[2]; }

// a kernel launch on the runtime's stream, with programmatic dependent launch when enabled
template <typename... P, typename... A>
static cudaError_t launch_smem(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = g_stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = g_pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, ((P)args)...);
}
template <typename... P, typename... A>
static cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) { return launch_smem(kernel, grid, block, 0, args...); }
