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
//         bytes (lowbit/cuda/host_repack.py) and run the base type's kernels.
// Adding a type: its functions here (row dot, dequant_one), its entry in lowbit/cuda/layouts.py.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>

#define LB_API extern "C" __attribute__((visibility("default")))

enum { T_F32 = 0, T_F16 = 1, T_BF16 = 2, T_Q8_0 = 3, T_Q4_K = 4, T_Q6_K = 5, T_Q2_K = 6, T_Q3_K = 7, T_Q5_K = 8,
       T_CBK2 = 9, T_CBK4 = 10, T_D4L2 = 11,   // codebook types (vq_* below)
       T_F32S = 16, T_F16S = 17, T_BF16S = 18 };   // *S: rows not a multiple of 16 bytes (scalar loads)

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

// ------------------------------------------------------------------- per-type row dot products
// Each computes lane `lane`'s share of dot(W[row], x[t]) for NT tokens (x rows ldx apart) and
// adds it to acc[t]. Several 16-byte weight loads are issued before the first use.

// Lane-to-weight mapping: in every load instruction the warp's lanes read consecutive weight
// bytes AND consecutive x floats (float4 each), so the L1 serves x at full rate (a scattered
// mapping made x's L1 wavefronts, not DRAM, the limit: ~1 TB/s).

// q4_k: one 144-byte block per warp step; lane = (j = lane/8: 64-weight group, p = lane%8) reads
// qs bytes 32j+4p..+3 = weights 64j+4p..+3 (low nibbles) and 64j+32+4p..+3 (high nibbles).
template <int NT>
__device__ __forceinline__ void row_dot_q4k(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const int nb = m.cols >> 8, j = lane >> 3, p = lane & 7;
    constexpr int U = 8;
    for (int b0 = 0; b0 < nb; b0 += U) {
        uint4 hd[U];
        uint32_t q[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (b0 + k < nb) {
                const uint8_t* blk = base + (size_t)(b0 + k) * 144;
                hd[k] = __ldg(reinterpret_cast<const uint4*>(blk));
                q[k] = __ldcs(reinterpret_cast<const unsigned int*>(blk + 16 + 32 * j + 4 * p));
            }
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (b0 + k >= nb) continue;
            float d = h2f(hd[k].x), dmin = h2f(hd[k].x >> 16);
            int s1, m1, s2, m2;
            q4k_scale_min_reg(2 * j, hd[k].y, hd[k].z, hd[k].w, s1, m1);
            q4k_scale_min_reg(2 * j + 1, hd[k].y, hd[k].z, hd[k].w, s2, m2);
            float d1 = d * s1, mm1 = dmin * m1, d2 = d * s2, mm2 = dmin * m2;
            int k0 = (b0 + k) * 256 + 64 * j + 4 * p;
            uint32_t v = q[k];
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float* xt = x + (size_t)t * ldx + k0;
                float4 a = ldx4(xt), b = ldx4(xt + 32);
                float slo = u2f(v & 15) * a.x + u2f((v >> 8) & 15) * a.y + u2f((v >> 16) & 15) * a.z + u2f((v >> 24) & 15) * a.w;
                float shi = u2f((v >> 4) & 15) * b.x + u2f((v >> 12) & 15) * b.y + u2f((v >> 20) & 15) * b.z + u2f(v >> 28) * b.w;
                acc[t] += d1 * slo - mm1 * ((a.x + a.y) + (a.z + a.w)) + d2 * shi - mm2 * ((b.x + b.y) + (b.z + b.w));
            }
        }
    }
}

// q6_k (repacked: 208-byte body + fp16 d in the tail): two blocks per warp step; lane =
// (block half of the warp, n = 128-weight half, p) reads 4 bytes of ql, of ql+32 and of qh:
// weights 128n+4p..+3 plus 0, 32, 64, 96.
template <int NT>
__device__ __forceinline__ void row_dot_q6k(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint16_t* dt = (const uint16_t*)((const uint8_t*)m.tail + (size_t)row * m.tail_row);
    const int nb = m.cols >> 8, bl = lane >> 4, n = (lane >> 3) & 1, p = lane & 7, is = p >> 2;
    constexpr int U = NT == 1 ? 8 : 4;
    for (int b0 = 0; b0 < nb; b0 += 2 * U) {
        uint32_t qa[U], qb[U], qh[U], dbits[U];
        uint2 sc[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            int b = b0 + 2 * k + bl;
            if (b < nb) {
                const uint8_t* blk = base + (size_t)b * 208;
                qa[k] = __ldcs(reinterpret_cast<const unsigned int*>(blk + 64 * n + 4 * p));
                qb[k] = __ldcs(reinterpret_cast<const unsigned int*>(blk + 64 * n + 32 + 4 * p));
                qh[k] = __ldcs(reinterpret_cast<const unsigned int*>(blk + 128 + 32 * n + 4 * p));
                sc[k] = __ldg(reinterpret_cast<const uint2*>(blk + 192 + 8 * n));
                dbits[k] = __ldg(dt + b);
            }
        }
        if (b0 == 0) pdl_wait();
#pragma unroll
        for (int k = 0; k < U; k++) {
            int b = b0 + 2 * k + bl;
            if (b >= nb) continue;
            // int8 scales 8n+is+{0,2,4,6}: bytes is and is+2 of the two words
            float d = h2f(dbits[k]);
            float c0 = d * (float)(int8_t)(sc[k].x >> (8 * is)), c1 = d * (float)(int8_t)(sc[k].x >> (8 * is + 16));
            float c2 = d * (float)(int8_t)(sc[k].y >> (8 * is)), c3 = d * (float)(int8_t)(sc[k].y >> (8 * is + 16));
            int k0 = b * 256 + 128 * n + 4 * p;
            uint32_t A = qa[k], B = qb[k], H = qh[k];
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float* xt = x + (size_t)t * ldx + k0;
                float4 x1 = ldx4(xt), x2 = ldx4(xt + 32), x3 = ldx4(xt + 64), x4 = ldx4(xt + 96);
                const float f1[4] = {x1.x, x1.y, x1.z, x1.w}, f2[4] = {x2.x, x2.y, x2.z, x2.w};
                const float f3[4] = {x3.x, x3.y, x3.z, x3.w}, f4[4] = {x4.x, x4.y, x4.z, x4.w};
                float s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    uint32_t a = (A >> (8 * c)) & 0xFF, bb = (B >> (8 * c)) & 0xFF, h = (H >> (8 * c)) & 0xFF;
                    s1 += (u2f((a & 0xF) | ((h & 3) << 4)) - 32.f) * f1[c];
                    s2 += (u2f((bb & 0xF) | (((h >> 2) & 3) << 4)) - 32.f) * f2[c];
                    s3 += (u2f((a >> 4) | (((h >> 4) & 3) << 4)) - 32.f) * f3[c];
                    s4 += (u2f((bb >> 4) | (((h >> 6) & 3) << 4)) - 32.f) * f4[c];
                }
                acc[t] += c0 * s1 + c1 * s2 + c2 * s3 + c3 * s4;
            }
        }
    }
    pdl_wait();   // rows shorter than one block: nothing was loaded above
}

// q8_0 (repacked: permuted int8 body + fp16 scales in the tail). Full 512-weight chunks: lane
// loads 16 bytes = weights 128i+4l..+3 (i = 0..3), so each x float4 load is coalesced across the
// warp; the rest of the row (cols % 512, a multiple of 32) is in natural order, 4 bytes a lane.
__device__ __forceinline__ int q8_pos(int c, int cols) {   // body byte of weight c in its row
    if (c >= (cols & ~511)) return c;
    return (c & ~511) + 16 * ((c & 127) >> 2) + 4 * ((c & 511) >> 7) + (c & 3);
}
template <int NT>
__device__ __forceinline__ void row_dot_q8_0(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint16_t* dt = (const uint16_t*)((const uint8_t*)m.tail + (size_t)row * m.tail_row);
    const int cols = m.cols, nch = cols >> 9;
    constexpr int U = NT == 1 ? 8 : 2;   // one token: a 4096-wide row in one round of loads
    for (int ch0 = 0; ch0 < nch; ch0 += U) {
        uint4 q[U];
        uint32_t db[U][4];
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (ch0 + k < nch) {
                q[k] = ldw(base + (size_t)(ch0 + k) * 512 + 16 * lane);
#pragma unroll
                for (int i = 0; i < 4; i++) db[k][i] = __ldg(dt + (ch0 + k) * 16 + 4 * i + (lane >> 3));
            }
        }
        if (ch0 == 0) pdl_wait();
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (ch0 + k >= nch) continue;
            const uint32_t qw[4] = {q[k].x, q[k].y, q[k].z, q[k].w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int c = (ch0 + k) * 512 + 128 * i + 4 * lane;
                float d = h2f(db[k][i]);
                float w0 = sext8(qw[i], 0), w1 = sext8(qw[i], 1), w2 = sext8(qw[i], 2), w3 = sext8(qw[i], 3);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    float4 a = ldx4(x + (size_t)t * ldx + c);
                    acc[t] += d * (w0 * a.x + w1 * a.y + w2 * a.z + w3 * a.w);
                }
            }
        }
    }
    pdl_wait();   // rows shorter than one chunk
    for (int c = nch * 512 + 4 * lane; c < cols; c += 128) {
        uint32_t q = __ldcs(reinterpret_cast<const unsigned int*>(base + c));
        float d = h2f(__ldg(dt + (c >> 5)));
        float w0 = sext8(q, 0), w1 = sext8(q, 1), w2 = sext8(q, 2), w3 = sext8(q, 3);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float4 a = ldx4(x + (size_t)t * ldx + c);
            acc[t] += d * (w0 * a.x + w1 * a.y + w2 * a.z + w3 * a.w);
        }
    }
}

// q4_k decode (one token), four rows per warp: 8-lane group g takes row row0+g, lane s = (c, h)
// of the group reads 16 bytes qs[32c+16h..] of each block = 16 weights of sub-block 2c (low
// nibbles) and 16 of sub-block 2c+1 (high nibbles). All groups read the same x (one L1 access).
// Scales: the 16 six-bit values are unpacked four at a time with word operations, the lane's two
// picked by byte permutes. Weights: q -> f = 0.5 + q/256 by placing the nibble in the mantissa
// (one PRMT), so sum(w x) = 256 A sum(f x) - (128 A + B) sum(x) per sub-block (A = d sc, B = dmin m).
__device__ __forceinline__ float magic_q(uint32_t w, int k) { return __uint_as_float(__byte_perm(w, 0x3F000000u, 0x7054 | (k << 8))); }
// M matrices with the same columns (gate and up) in one pass; loads of the next U blocks are
// issued before the current ones are used (software pipelined: a warp has few blocks per row).
template <int M>
__device__ __forceinline__ void dot_q4k_g8(const uint8_t* base0, const uint8_t* base1, int nb, const float* __restrict__ x, int lane, float* acc) {
    const int s = lane & 7, c = s >> 1, h = s & 1;
    const bool low = c < 2;
    const int jb = (2 * c) & 3;
    const uint32_t sel0 = 0x7540 | jb, sel1 = 0x7540 | (jb + 1);   // byte jb (jb+1) -> 2^23 + value
    constexpr int U = M == 1 ? 4 : 2;
    uint4 hd[M][U], q[M][U], hn[M][U], qn[M][U];
#define Q4K_LOAD(HD, Q, B0)                                                                    \
    _Pragma("unroll") for (int mm = 0; mm < M; mm++) {                                         \
        _Pragma("unroll") for (int k = 0; k < U; k++) {                                        \
            if ((B0) + k < nb) {                                                               \
                const uint8_t* blk = (mm ? base1 : base0) + (size_t)((B0) + k) * 144;          \
                HD[mm][k] = __ldg(reinterpret_cast<const uint4*>(blk));                        \
                Q[mm][k] = ldw(blk + 16 + 32 * c + 16 * h);                                    \
            }                                                                                  \
        }                                                                                      \
    }
    Q4K_LOAD(hd, q, 0)
    pdl_wait();
    for (int b0 = 0; b0 < nb; b0 += U) {
        if (b0 + U < nb) { Q4K_LOAD(hn, qn, b0 + U) }
#pragma unroll
        for (int k = 0; k < U; k++) {
            if (b0 + k >= nb) continue;
            const float* xl = x + (b0 + k) * 256 + 64 * c + 16 * h;
            float4 xa[4], xb[4];
            float X0 = 0.f, X1 = 0.f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                xa[i] = ldx4(xl + 4 * i); xb[i] = ldx4(xl + 32 + 4 * i);
                X0 += (xa[i].x + xa[i].y) + (xa[i].z + xa[i].w);
                X1 += (xb[i].x + xb[i].y) + (xb[i].z + xb[i].w);
            }
#pragma unroll
            for (int mm = 0; mm < M; mm++) {
                const uint32_t y = hd[mm][k].y, z = hd[mm][k].z, w = hd[mm][k].w;
                uint32_t SC = low ? (y & 0x3F3F3F3Fu) : ((w & 0x0F0F0F0Fu) | ((y >> 2) & 0x30303030u));
                uint32_t MN = low ? (z & 0x3F3F3F3Fu) : (((w >> 4) & 0x0F0F0F0Fu) | ((z >> 2) & 0x30303030u));
                float d = h2f(hd[mm][k].x), dmin = h2f(hd[mm][k].x >> 16);
                float A0 = d * (__uint_as_float(__byte_perm(SC, 0x4B000000u, sel0)) - 8388608.f);
                float A1 = d * (__uint_as_float(__byte_perm(SC, 0x4B000000u, sel1)) - 8388608.f);
                float B0 = dmin * (__uint_as_float(__byte_perm(MN, 0x4B000000u, sel0)) - 8388608.f);
                float B1 = dmin * (__uint_as_float(__byte_perm(MN, 0x4B000000u, sel1)) - 8388608.f);
                const uint32_t qw[4] = {q[mm][k].x, q[mm][k].y, q[mm][k].z, q[mm][k].w};
                float F0 = 0.f, F1 = 0.f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    uint32_t lo = qw[i] & 0x0F0F0F0Fu, hi = (qw[i] >> 4) & 0x0F0F0F0Fu;
                    F0 += magic_q(lo, 0) * xa[i].x + magic_q(lo, 1) * xa[i].y + magic_q(lo, 2) * xa[i].z + magic_q(lo, 3) * xa[i].w;
                    F1 += magic_q(hi, 0) * xb[i].x + magic_q(hi, 1) * xb[i].y + magic_q(hi, 2) * xb[i].z + magic_q(hi, 3) * xb[i].w;
                }
                acc[mm] += 256.f * (A0 * F0 + A1 * F1) - (128.f * A0 + B0) * X0 - (128.f * A1 + B1) * X1;
            }
        }
#pragma unroll
        for (int mm = 0; mm < M; mm++)
#pragma unroll
            for (int k = 0; k < U; k++) { hd[mm][k] = hn[mm][k]; q[mm][k] = qn[mm][k]; }
    }
#undef Q4K_LOAD
}

// q2_k, q3_k, q5_k (and a general path for any NT): lane takes weights 8*lane..8*lane+7 of each
// block (one sub-block, one scale), so the warp's x loads are contiguous.
template <int TY, int NT>
__device__ __forceinline__ void row_dot_k8(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    constexpr int BODY = TY == T_Q2_K ? 64 : TY == T_Q3_K ? 96 : 176;
    constexpr int TAIL = TY == T_Q2_K ? 20 : TY == T_Q3_K ? 14 : 0;
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* meta = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    const int nb = m.cols >> 8;
    const int l8 = 8 * (lane & 3);
    for (int b = 0; b < nb; b++) {
        const uint8_t* blk = base + (size_t)b * BODY;
        float A, B = 0.f;   // w = A * q - B for the lane's 8 weights
        uint32_t qlo, qhi;  // the 8 quants, one per byte (0..31)
        if (TY == T_Q2_K) {
            const uint8_t* mt = meta + (size_t)b * TAIL;
            uint2 v = __ldcs(reinterpret_cast<const uint2*>(blk + 32 * (lane >> 4) + l8));
            int sh = 2 * ((lane >> 2) & 3);
            qlo = (v.x >> sh) & 0x03030303u; qhi = (v.y >> sh) & 0x03030303u;
            uint32_t sc = mt[lane >> 1];
            float d = h2f(mt[16] | (mt[17] << 8)), dmin = h2f(mt[18] | (mt[19] << 8));
            A = d * (float)(sc & 15); B = dmin * (float)(sc >> 4);
        } else if (TY == T_Q3_K) {
            const uint8_t* mt = meta + (size_t)b * TAIL;
            uint2 v = __ldcs(reinterpret_cast<const uint2*>(blk + 32 + 32 * (lane >> 4) + l8));
            uint2 hm = __ldcs(reinterpret_cast<const uint2*>(blk + l8));
            int sh = 2 * ((lane >> 2) & 3), hb = lane >> 2;
            // q + 4 = low | (high << 2) in 0..7, the -4 goes into B
            qlo = ((v.x >> sh) & 0x03030303u) | (((hm.x >> hb) & 0x01010101u) << 2);
            qhi = ((v.y >> sh) & 0x03030303u) | (((hm.y >> hb) & 0x01010101u) << 2);
            int j = lane >> 1;
            int lo = j < 8 ? (mt[j] & 15) : (mt[j - 8] >> 4);
            int hi = (mt[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            float d = h2f(mt[12] | (mt[13] << 8));
            A = d * (float)((lo | (hi << 4)) - 32); B = 4.f * A;
        } else {   // q5_k, in place: d, dmin, 12 scale bytes, qh[32], qs[128]
            int cc = lane >> 3, t = (lane >> 2) & 1, j = lane >> 2;
            uint2 v = __ldcs(reinterpret_cast<const uint2*>(blk + 48 + 32 * cc + l8));
            uint2 hq = __ldcs(reinterpret_cast<const uint2*>(blk + 16 + l8));
            qlo = ((v.x >> (4 * t)) & 0x0F0F0F0Fu) | (((hq.x >> j) & 0x01010101u) << 4);
            qhi = ((v.y >> (4 * t)) & 0x0F0F0F0Fu) | (((hq.y >> j) & 0x01010101u) << 4);
            int sc, mn;
            q4k_scale_min(j, blk + 4, sc, mn);
            float d = h2f(blk[0] | (blk[1] << 8)), dmin = h2f(blk[2] | (blk[3] << 8));
            A = d * (float)sc; B = dmin * (float)mn;
        }
        const int k0 = b * 256 + 8 * lane;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float* xt = x + (size_t)t * ldx + k0;
            float4 a = ldx4(xt), bb = ldx4(xt + 4);
            float s = u2f(qlo & 0xFF) * a.x + u2f((qlo >> 8) & 0xFF) * a.y + u2f((qlo >> 16) & 0xFF) * a.z + u2f(qlo >> 24) * a.w
                    + u2f(qhi & 0xFF) * bb.x + u2f((qhi >> 8) & 0xFF) * bb.y + u2f((qhi >> 16) & 0xFF) * bb.z + u2f(qhi >> 24) * bb.w;
            float sx = ((a.x + a.y) + (a.z + a.w)) + ((bb.x + bb.y) + (bb.z + bb.w));
            acc[t] += A * s - B * sx;
        }
    }
}

// ----------------------------------------------------------------------------- tail blocks
// The last r = cols % 256 weights of a k-quant row: fp16 d, [fp16 dmin], scale bytes, [min
// bytes], then LSB-first bit-packed quants (format_spec/types/kquants.md, "Tail block").
__device__ __forceinline__ int tail_bits(const uint8_t* p, int i, int bits) {
    int pos = i * bits, b = pos >> 3, sh = pos & 7;
    int v = p[b] >> sh;
    if (sh + bits > 8) v |= p[b + 1] << (8 - sh);
    return v & ((1 << bits) - 1);
}
// exact dequantization (no fused multiply-add, products in the spec's order)
__device__ float tail_weight(int type, const uint8_t* tb, int r, int i) {
    const bool k32 = type == T_Q4_K || type == T_Q5_K;
    const int S = k32 ? 32 : 16;
    const int bits = type == T_Q2_K ? 2 : type == T_Q3_K ? 3 : type == T_Q4_K ? 4 : type == T_Q5_K ? 5 : 6;
    const int nsub = (r + S - 1) / S, j = i / S;
    float d = h2f(tb[0] | (tb[1] << 8));
    const bool affine = type == T_Q2_K || k32;
    float dmin = affine ? h2f(tb[2] | (tb[3] << 8)) : 0.f;
    const uint8_t* sc = tb + (affine ? 4 : 2);
    const uint8_t* qp = sc + (k32 ? 2 * nsub : nsub);
    int q = tail_bits(qp, i, bits);
    switch (type) {
    case T_Q2_K: { int s = sc[j]; return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)(s & 15)), (float)q), __fmul_rn(dmin, (float)(s >> 4))); }
    case T_Q3_K: return __fmul_rn(__fmul_rn(d, (float)(sc[j] - 32)), (float)(q - 4));
    case T_Q6_K: return __fmul_rn(__fmul_rn(d, (float)(int8_t)sc[j]), (float)(q - 32));
    default: return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc[j]), (float)q), __fmul_rn(dmin, (float)sc[nsub + j]));
    }
}
template <int NT>
__device__ __forceinline__ void row_dot_tail(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, int step, float* acc) {
    const int r = m.cols & 255, c0 = m.cols - r;
    const uint8_t* tb = (const uint8_t*)m.xtra + (size_t)row * m.xtra_row;
    for (int i = lane; i < r; i += step) {
        float w = tail_weight(m.type, tb, r, i);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += w * x[(size_t)t * ldx + c0 + i];
    }
}

// plain floats, rows a multiple of 16 bytes: 16-byte loads (4 f32 or 8 f16/bf16 per unit)
template <int NT, int TY>
__device__ __forceinline__ void row_dot_float(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    constexpr int PER = TY == T_F32 ? 4 : 8;
    const int units = m.cols / PER;
    constexpr int U = 4;
    for (int u0 = 0; u0 < units; u0 += 32 * U) {
        uint4 q[U];
#pragma unroll
        for (int k = 0; k < U; k++) { int u = u0 + 32 * k + lane; if (u < units) q[k] = ldw(base + 16 * (size_t)u); }
#pragma unroll
        for (int k = 0; k < U; k++) {
            int u = u0 + 32 * k + lane;
            if (u >= units) continue;
            float w[PER];
            const uint32_t qw[4] = {q[k].x, q[k].y, q[k].z, q[k].w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (TY == T_F32) w[i] = __uint_as_float(qw[i]);
                else if (TY == T_F16) { w[2 * i] = h2f(qw[i]); w[2 * i + 1] = h2f(qw[i] >> 16); }
                else { w[2 * i] = bf2f(qw[i]); w[2 * i + 1] = bf2f(qw[i] >> 16); }
            }
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float* xt = x + (size_t)t * ldx + PER * u;
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < PER / 4; i++) {
                    float4 a = ldx4(xt + 4 * i);
                    s += w[4 * i] * a.x + w[4 * i + 1] * a.y + w[4 * i + 2] * a.z + w[4 * i + 3] * a.w;
                }
                acc[t] += s;
            }
        }
    }
}

// ----------------------------------------------------------------------------- codebook types
// w[b*B + v*D + j] = d_row * SCALE[s_b] * codebook[idx[b, v], j], SCALE[0] = 0, SCALE[s] =
// 2^((s - 255) / 16) (float32 of the double value, as the CPU's table). VQ_D/VQ_B: D and B of a type.
__host__ __device__ constexpr int VQ_D(int ty) { return ty == T_CBK4 ? 2 : 4; }
__host__ __device__ constexpr int VQ_B(int ty) { return ty == T_CBK2 ? 64 : 32; }
__device__ __forceinline__ float vq_scale(int s) { return s ? (float)exp2((double)(s - 255) / 16.0) : 0.f; }
// Index bytes of a row in the body: each full chunk of 512 vectors permuted so that lane l's 16
// bytes hold vectors l, l+32, ..., l+480 (then every x load of the warp is contiguous); the rest
// of the row (nvec % 512 vectors) in natural order. Byte position of vector v of nvec:
__host__ __device__ __forceinline__ int vq_pos(int v, int nvec) {
    return v < (nvec & ~511) ? (v & ~511) | ((v & 31) << 4) | ((v >> 5) & 15) : v;
}
__device__ __forceinline__ float vq_weight(const lb_mat& m, int row, int c) {
    const int D = VQ_D(m.type), B = VQ_B(m.type), blk = c / B, v = c / D, j = c % D;
    const uint8_t* idx = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* sc = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    const uint16_t* side = (const uint16_t*)m.xtra;   // codebook [256][D], then fp16 d per row
    const float d = h2f(side[256 * D + row]);
    return __fmul_rn(__fmul_rn(d, vq_scale(sc[blk])), h2f(side[idx[vq_pos(v, m.cols / D)] * D + j]));
}

// one weight, any type (embedding rows, tests, and the scalar float path); exact: the spec's
// products in its order, no fused multiply-add (__fmul_rn/__fsub_rn are never contracted)
__device__ __forceinline__ float affine_w(float d, int sc, int q, float dmin, int mn) {
    return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)q), __fmul_rn(dmin, (float)mn));
}
__device__ float dequant_one(const lb_mat& m, int row, int c) {
    const uint8_t* r = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* mt = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    if (m.type >= T_Q4_K && m.type <= T_Q5_K && c >= (m.cols & ~255))
        return tail_weight(m.type, (const uint8_t*)m.xtra + (size_t)row * m.xtra_row, m.cols & 255, c & 255);
    const int i = c & 255, b = c >> 8;
    switch (m.type) {
    case T_F32: case T_F32S: return reinterpret_cast<const float*>(r)[c];
    case T_F16: case T_F16S: return h2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case T_BF16: case T_BF16S: return bf2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case T_Q8_0: {
        const uint16_t* dt = (const uint16_t*)mt;
        return __fmul_rn(h2f(dt[c >> 5]), (float)(int8_t)r[q8_pos(c, m.cols)]);
    }
    case T_CBK2: case T_CBK4: case T_D4L2: return vq_weight(m, row, c);
    case T_Q4_K: {
        const uint8_t* blk = r + (size_t)b * 144;
        int j = i >> 6, hi = (i >> 5) & 1, l = i & 31, sc, mn;
        q4k_scale_min(2 * j + hi, blk + 4, sc, mn);
        uint8_t q = blk[16 + 32 * j + l];
        return affine_w(h2f(blk[0] | (blk[1] << 8)), sc, hi ? (q >> 4) : (q & 15), h2f(blk[2] | (blk[3] << 8)), mn);
    }
    case T_Q5_K: {
        const uint8_t* blk = r + (size_t)b * 176;
        int j = i >> 5, cc = i >> 6, hi = (i >> 5) & 1, l = i & 31, sc, mn;
        q4k_scale_min(j, blk + 4, sc, mn);
        int q = ((blk[48 + 32 * cc + l] >> (4 * hi)) & 15) | (((blk[16 + l] >> j) & 1) << 4);
        return affine_w(h2f(blk[0] | (blk[1] << 8)), sc, q, h2f(blk[2] | (blk[3] << 8)), mn);
    }
    case T_Q2_K: {
        const uint8_t* blk = r + (size_t)b * 64;
        const uint8_t* t = mt + (size_t)b * 20;
        int h = i >> 7, j = (i >> 5) & 3, l = i & 31, s = t[i >> 4];
        int q = (blk[32 * h + l] >> (2 * j)) & 3;
        return affine_w(h2f(t[16] | (t[17] << 8)), s & 15, q, h2f(t[18] | (t[19] << 8)), s >> 4);
    }
    case T_Q3_K: {
        const uint8_t* blk = r + (size_t)b * 96;
        const uint8_t* t = mt + (size_t)b * 14;
        int h = i >> 7, j = (i >> 5) & 3, l = i & 31, js = i >> 4;
        int low = (blk[32 + 32 * h + l] >> (2 * j)) & 3, high = (blk[l] >> (i >> 5)) & 1;
        int lo = js < 8 ? (t[js] & 15) : (t[js - 8] >> 4);
        int hs = (t[8 + (js & 3)] >> (2 * (js >> 2))) & 3;
        float d = h2f(t[12] | (t[13] << 8));
        return __fmul_rn(__fmul_rn(d, (float)((lo | (hs << 4)) - 32)), (float)(low - (high ? 0 : 4)));
    }
    case T_Q6_K: {
        const uint16_t* dt = (const uint16_t*)mt;
        const uint8_t* blk = r + (size_t)b * 208;
        int n = i >> 7, quarter = (i >> 5) & 3, l = i & 31;
        const uint8_t* ql = blk + 64 * n;
        uint8_t h = blk[128 + 32 * n + l];
        int q;
        switch (quarter) {
        case 0: q = (ql[l] & 0xF) | ((h & 3) << 4); break;
        case 1: q = (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4); break;
        case 2: q = (ql[l] >> 4) | (((h >> 4) & 3) << 4); break;
        default: q = (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4); break;
        }
        int8_t s = (int8_t)blk[192 + 8 * n + (l >> 4) + 2 * quarter];
        return __fmul_rn(__fmul_rn(h2f(dt[b]), (float)s), (float)(q - 32));
    }
    }
    return __int_as_float(0x7fc00000);
}

template <int NT>
__device__ __forceinline__ void row_dot_scalar(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* r = (const uint8_t*)m.body + (size_t)row * m.body_row;
    for (int c = lane; c < m.cols; c += 32) {
        float w = m.type == T_F32S ? reinterpret_cast<const float*>(r)[c]
                : m.type == T_F16S ? h2f(reinterpret_cast<const uint16_t*>(r)[c]) : bf2f(reinterpret_cast<const uint16_t*>(r)[c]);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += w * x[(size_t)t * ldx + c];
    }
}

template <int NT>
__device__ __forceinline__ void row_dot(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    switch (m.type) {
    case T_Q4_K: row_dot_q4k<NT>(m, row, x, ldx, lane, acc); break;
    case T_Q6_K: row_dot_q6k<NT>(m, row, x, ldx, lane, acc); break;
    case T_Q2_K: row_dot_k8<T_Q2_K, NT>(m, row, x, ldx, lane, acc); break;
    case T_Q3_K: row_dot_k8<T_Q3_K, NT>(m, row, x, ldx, lane, acc); break;
    case T_Q5_K: row_dot_k8<T_Q5_K, NT>(m, row, x, ldx, lane, acc); break;
    case T_Q8_0: row_dot_q8_0<NT>(m, row, x, ldx, lane, acc); break;
    case T_F32: row_dot_float<NT, T_F32>(m, row, x, ldx, lane, acc); break;
    case T_F16: row_dot_float<NT, T_F16>(m, row, x, ldx, lane, acc); break;
    case T_BF16: row_dot_float<NT, T_BF16>(m, row, x, ldx, lane, acc); break;
    default: row_dot_scalar<NT>(m, row, x, ldx, lane, acc); break;
    }
    if (m.xtra) row_dot_tail<NT>(m, row, x, ldx, lane, 32, acc);
}

// ------------------------------------------------------------------------------------- kernels

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

// q4_k decode, four rows per 8-lane group (see gemv_kernel); the matrix is re-read from the job
// parameters after the dot product instead of being kept in registers across it
__device__ __forceinline__ const lb_mat& job_mat(const lb_job& job, int mi) { return mi == 0 ? job.m[0] : mi == 1 ? job.m[1] : job.m[2]; }
__device__ __forceinline__ void gemv_q4k_rows(const lb_job& job, int mi, int warp, int lane, const float* __restrict__ x) {
    __shared__ float red[2][GEMV_WARPS][4];
    const int S = job.ksplit, grp = warp / S, ks = warp - grp * S;   // S == GEMV_WARPS: the block's warps, in order
    float ab[2] = {0.f, 0.f};
    {
        const lb_mat& m = job_mat(job, mi);
        const int rr = min(4 * grp + (lane >> 3), m.rows - 1);
        const int nb = m.cols >> 8, kb0 = nb * ks / S, kb1 = nb * (ks + 1) / S;
        const uint8_t* b0 = (const uint8_t*)m.body + (size_t)rr * m.body_row + (size_t)kb0 * 144;
        const float* xs = x + (size_t)kb0 * 256;
        if (job.mode == 2) dot_q4k_g8<2>(b0, (const uint8_t*)job.m[1].body + (size_t)rr * job.m[1].body_row + (size_t)kb0 * 144, kb1 - kb0, xs, lane, ab);
        else dot_q4k_g8<1>(b0, b0, kb1 - kb0, xs, lane, ab);
    }
    const lb_mat& m = job_mat(job, mi);
    const int row = 4 * grp + (lane >> 3), rr = min(row, m.rows - 1);
    float a = ab[0], b = ab[1];
    if (ks == 0 && m.xtra) row_dot_tail<1>(m, rr, x, 0, lane & 7, 8, &a);
    if (ks == 0 && job.mode == 2 && job.m[1].xtra) row_dot_tail<1>(job.m[1], rr, x, 0, lane & 7, 8, &b);
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) { a += __shfl_xor_sync(0xffffffffu, a, o); b += __shfl_xor_sync(0xffffffffu, b, o); }
    if (S == 1) {
        if ((lane & 7) == 0 && row < m.rows) gemv_store(job, mi, row, 0, a, b);
        return;
    }
    if ((lane & 7) == 0) { red[0][ks][lane >> 3] = a; red[1][ks][lane >> 3] = b; }
    __syncthreads();
    if (ks == 0 && lane < 4) {
        float sa = 0.f, sb = 0.f;
#pragma unroll
        for (int w = 0; w < GEMV_WARPS; w++) { sa += red[0][w][lane]; sb += red[1][w][lane]; }
        const int r = 4 * grp + lane;
        if (r < m.rows) gemv_store(job, mi, r, 0, sa, sb);
    }
}

// warps are laid end to end over the rows of up to 3 matrices (q, k, v): job.wcnt[i] warps of
// job.rpw[i] rows each. One row per warp, except q4_k in decode (four rows, dot_q4k_g8), where
// job.ksplit (1 or GEMV_WARPS) warps of a block share a row group, each taking a contiguous slice
// of its blocks, and add up in shared memory: a short row (4096 weights = 16 blocks) then needs
// one round of loads per warp instead of four, and the grid is several waves instead of ~one.
template <int NT>
__global__ void __launch_bounds__(32 * GEMV_WARPS, NT == 1 ? 4 : 1) gemv_kernel(const lb_job job, const float* __restrict__ x, int ldx) {
    pdl_launch();
    int warp = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    int mi = 0;
    if (job.mode != 2)
        while (mi < job.nmat - 1 && warp >= job.wcnt[mi]) { warp -= job.wcnt[mi]; mi++; }
    const int wcnt = mi == 0 ? job.wcnt[0] : mi == 1 ? job.wcnt[1] : job.wcnt[2];
    if (warp >= wcnt) return;
    const lb_mat m = mi == 0 ? job.m[0] : mi == 1 ? job.m[1] : job.m[2];   // no dynamic param indexing
    const int R = mi == 0 ? job.rpw[0] : mi == 1 ? job.rpw[1] : job.rpw[2];
    if (NT == 1 && R == 4) { gemv_q4k_rows(job, mi, warp, lane, x); return; }
    // the q8_0 / q6_k decode paths wait for the previous kernel after their first weight loads
    if (!(NT == 1 && (m.type == T_Q8_0 || m.type == T_Q6_K))) pdl_wait();
    const int row = warp;
    float a[NT], b[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) a[t] = b[t] = 0.f;
    row_dot<NT>(m, row, x, ldx, lane, a);
    if (job.mode == 2) row_dot<NT>(job.m[1], row, x, ldx, lane, b);
    pdl_wait();   // (a no-op when already waited)
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float va = warp_sum(a[t]), vb = job.mode == 2 ? warp_sum(b[t]) : 0.f;
        if (lane == 0) gemv_store(job, mi, row, t, va, vb);
    }
}

// ------------------------------------------------------- q8_K activations and the q4_k dp4a GEMV
// One 256-block of x -> XQ, by one warp: the block's first n values (n < 256: a row's tail block,
// zero-padded like the CPU's), lane l quantizing positions 8l..8l+7 with the CPU runtime's
// arithmetic (amax/127 divided exactly, 1/d exactly, x*inv rounded to nearest even: adding
// 1.5*2^23 leaves the integer in the low bits).
__device__ __forceinline__ void load8(const float* x, int b, int n, int lane, float* v) {   // x[256b + 8lane..+7], 0 past n
    const float* p = x + 256 * b + 8 * lane;
    if (n >= 256) {
        const float4 a = *reinterpret_cast<const float4*>(p);
        const float4 c4 = *reinterpret_cast<const float4*>(p + 4);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = c4.x; v[5] = c4.y; v[6] = c4.z; v[7] = c4.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = 8 * lane + i < n ? p[i] : 0.f;
    }
}
__device__ __forceinline__ void quant_x_vals(const float* v, int b, int lane, uint8_t* xq, int cap);
__device__ __forceinline__ void quant_x_block(const float* x, int b, int n, int lane, uint8_t* xq, int cap) {
    float v[8];
    load8(x, b, n, lane, v);
    quant_x_vals(v, b, lane, xq, cap);
}
// the quantization of one block whose values lane l holds at positions 8l..8l+7 (zeros past the row)
__device__ __forceinline__ void quant_x_vals(const float* v, int b, int lane, uint8_t* xq, int cap) {
    float m = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) m = fmaxf(m, fabsf(v[i]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float d = m / 127.f, inv = d != 0.f ? 1.f / d : 0.f;
    uint32_t q[8];
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = (uint32_t)__float_as_int(__fadd_rn(__fmul_rn(v[i], inv), 12582912.f));
    const uint32_t w0 = __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
    const uint32_t w1 = __byte_perm(__byte_perm(q[4], q[5], 0x0040), __byte_perm(q[6], q[7], 0x0040), 0x5410);
    int bsum = __dp4a((int)w0, 0x01010101, __dp4a((int)w1, 0x01010101, 0));
    bsum += __shfl_xor_sync(0xffffffffu, bsum, 1);
    const int hi = (lane & 7) >= 4, seg = 2 * (lane >> 3) + ((lane >> 1) & 1);
    *reinterpret_cast<uint2*>(xq + 256 * (size_t)b + 128 * hi + 16 * seg + 8 * (lane & 1)) = make_uint2(w0, w1);
    if ((lane & 1) == 0) reinterpret_cast<int*>(xq + xq_bs_off(cap))[(b * 8 + seg) * 2 + hi] = bsum;
    if (lane == 0) reinterpret_cast<float*>(xq + xq_d_off(cap))[b] = d;
}

// quantized activation at position p (0..255) of XQ block xb, and the sum of the 16 quants j16
__device__ __forceinline__ int xq_at(const uint8_t* xb, int p) {
    const int w = p & 63;
    return (int)(signed char)xb[128 * (w >> 5) + 16 * (2 * (p >> 6) + ((w >> 4) & 1)) + (p & 15)];
}
__device__ __forceinline__ int xq_sum16(const int* xbs, int b, int j16) {
    return xbs[(b * 8 + 2 * (j16 >> 2) + (j16 & 1)) * 2 + ((j16 >> 1) & 1)];
}

// The tail block (cols % 256 weights) of a q4_k or q6_k row against the quantized (zero-padded)
// last activation block, as the CPU does (integer sums, then d xd I - dmin xd M): lane s of the
// row's 8 lanes; the result is added on lane s == 0 (the caller sums the 8 lanes).
__device__ __forceinline__ void tail_dot_q8(const lb_mat& m, int row, const uint8_t* __restrict__ xq, int cap, int s, float* acc) {
    const int r = m.cols & 255, b = m.cols >> 8;
    const uint8_t* tb = (const uint8_t*)m.xtra + (size_t)row * m.xtra_row;
    const uint8_t* xb = xq + 256 * (size_t)b;
    const int* xbs = reinterpret_cast<const int*>(xq + xq_bs_off(cap));
    const bool q4 = m.type == T_Q4_K;
    int I = 0, M = 0;
    if (q4) {
        const int nsub = (r + 31) >> 5;
        const uint8_t *sc = tb + 4, *mn = sc + nsub, *qs = mn + nsub;
        for (int i = s; i < r; i += 8) I += sc[i >> 5] * ((qs[i >> 1] >> (4 * (i & 1))) & 15) * xq_at(xb, i);
        for (int j = s; j < nsub; j += 8) M += mn[j] * (xq_sum16(xbs, b, 2 * j) + xq_sum16(xbs, b, 2 * j + 1));
    } else {
        const int nsub = (r + 15) >> 4;
        const signed char* sc = (const signed char*)tb + 2;
        const uint8_t* qs = tb + 2 + nsub;
        for (int i = s; i < r; i += 8) I += sc[i >> 4] * tail_bits(qs, i, 6) * xq_at(xb, i);
        for (int j = s; j < nsub; j += 8) M += 32 * sc[j] * xq_sum16(xbs, b, j);
    }
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) { I += __shfl_xor_sync(0xffffffffu, I, o); M += __shfl_xor_sync(0xffffffffu, M, o); }
    if (s == 0) {
        const float xd = reinterpret_cast<const float*>(xq + xq_d_off(cap))[b];
        const float d = h2f(tb[0] | (tb[1] << 8)), dm = q4 ? h2f(tb[2] | (tb[3] << 8)) : d;
        *acc += d * xd * (float)I - dm * xd * (float)M;
    }
}

// the 256-blocks of one x row (the last one possibly partial), one warp per block
__global__ void quant_x_kernel(const float* __restrict__ x, int cols, uint8_t* __restrict__ xq, int cap) {
    pdl_launch();
    pdl_wait();
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b < (cols + 255) >> 8) quant_x_block(x, b, cols - 256 * b, threadIdx.x & 31, xq, cap);
}

// q4_k decode against q8_K activations with integer dot products (dp4a): per 32 weights a lane
// does 4 16-byte loads (weights, header: broadcast, x lo/hi: L1), 12 logic ops, 8 dp4a, a few
// for the scales; the float path needed ~4 instructions per weight.
// Geometry: a block's 4 warps each take a quarter of K (a contiguous slice of blocks) of the same
// 4-row group (8 lanes per row, as dot_q4k_g8); blocks stride over the row groups of all the job's
// matrices (groups laid end to end, counts in job.wcnt), so a block does several groups and the
// next group's first weight loads are issued before the current group is reduced (persistent,
// software pipelined). Tail blocks (cols % 256) are done by the first warp (tail_dot_q8).
// Slots: M row sets of 4 rows loaded side by side; H = slots per matrix (a group is 4H rows of
// each of its M / H matrices: H = 1, M = 1: 4 rows; M = 2, H = 1: gate/up; H = M: 4M rows of one
// matrix). Bigger groups mean fewer reductions and barriers per byte (docs/history/cuda-notes.md, v9).
template <int M, int H>
__device__ __forceinline__ void q4k_group_ptrs(const lb_job& job, int g, int kb0, int lane, const uint8_t** p, int& mi, int& grow) {
    constexpr int NM = M / H;
    const int g0 = job.wcnt[0], g1 = job.wcnt[1];
    mi = (NM == 2 || g < g0) ? 0 : g < g0 + g1 ? 1 : 2;
    const int gl = g - (mi == 0 ? 0 : mi == 1 ? g0 : g0 + g1);
    grow = 4 * H * gl;
    const size_t off = (size_t)kb0 * 144 + 16 + 32 * ((lane & 7) >> 1) + 16 * (lane & 1);
#pragma unroll
    for (int sl = 0; sl < M; sl++) {
        const lb_mat& m = NM == 2 ? job_mat(job, sl / H) : job_mat(job, mi);
        const int rr = min(grow + 4 * (sl % H) + (lane >> 3), m.rows - 1);
        p[sl] = (const uint8_t*)m.body + (size_t)rr * m.body_row + off;
    }
}

// the q4_k dp4a GEMV's work for block bid of nblk (a kernel of its own, or part of a fused launch)
template <int M, int H>
__device__ __forceinline__ void q4k_q8_blocks(const lb_job& job, const int bid, const int nblk) {
    constexpr int NM = M / H;
    constexpr int U = M == 1 ? 4 : M == 2 ? 2 : 1;
    __shared__ float red[2][GEMV_WARPS][4][M];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 7, c = s >> 1, r4 = lane >> 3;
    const int cols = job.m[0].cols, nb = cols >> 8;
    const int kb0 = nb * warp / GEMV_WARPS, nbs = nb * (warp + 1) / GEMV_WARPS - kb0;
    const int total = NM == 2 ? job.wcnt[0] : job.wcnt[0] + job.wcnt[1] + job.wcnt[2];
    const int cap = job.xq_cap;
    const uint8_t* xq = (const uint8_t*)job.xq;
    const int* xbs = reinterpret_cast<const int*>(xq + xq_bs_off(cap));
    const float* xd = reinterpret_cast<const float*>(xq + xq_d_off(cap));
    // scale/min selection for sub-blocks 2c (low nibbles) and 2c+1 (high nibbles), as dot_q4k_g8
    const bool low = c < 2;
    const int jb = (2 * c) & 3;
    const uint32_t sel0 = 0x4440 | jb, sel1 = 0x4440 | (jb + 1);
    uint4 hd[M][U], q[M][U], hn[M][U], qn[M][U];
#define Q4Q_LOAD(HD, Q, P, B0)                                                                     \
    _Pragma("unroll") for (int mm = 0; mm < M; mm++) {                                             \
        _Pragma("unroll") for (int k = 0; k < U; k++) {                                            \
            if ((B0) + k < nbs) {                                                                  \
                const uint8_t* qp = (P)[mm] + (size_t)((B0) + k) * 144;                            \
                Q[mm][k] = ldw(qp);                                                                \
                HD[mm][k] = __ldg(reinterpret_cast<const uint4*>(qp - (16 + 32 * c + 16 * (lane & 1)))); \
            }                                                                                      \
        }                                                                                          \
    }
    int g = bid, mi = 0, grow = 0;
    const uint8_t* p[M] = {};
    if (g < total) { q4k_group_ptrs<M, H>(job, g, kb0, lane, p, mi, grow); Q4Q_LOAD(hd, q, p, 0) }
    pdl_wait();
    int par = 0;
    for (; g < total; g += nblk) {
        const int gn = g + nblk;
        const uint8_t* n[M] = {};
        int nmi = 0, ngrow = 0;
        if (gn < total) q4k_group_ptrs<M, H>(job, gn, kb0, lane, n, nmi, ngrow);
        float acc[M];
#pragma unroll
        for (int mm = 0; mm < M; mm++) acc[mm] = 0.f;
        for (int b0 = 0; b0 < nbs; b0 += U) {
            if (b0 + U < nbs) { Q4Q_LOAD(hn, qn, p, b0 + U) }
            else if (gn < total) { Q4Q_LOAD(hn, qn, n, 0) }
#pragma unroll
            for (int k = 0; k < U; k++) {
                if (b0 + k >= nbs) continue;
                const int xb = kb0 + b0 + k;
                const uint4 xl = __ldg(reinterpret_cast<const uint4*>(xq + 256 * (size_t)xb + 16 * s));
                const uint4 xh = __ldg(reinterpret_cast<const uint4*>(xq + 256 * (size_t)xb + 128 + 16 * s));
                const int2 bs = __ldg(reinterpret_cast<const int2*>(xbs + (xb * 8 + s) * 2));
                const float dx = __ldg(xd + xb);
#pragma unroll
                for (int mm = 0; mm < M; mm++) {
                    const uint32_t y = hd[mm][k].y, z = hd[mm][k].z, w = hd[mm][k].w;
                    const uint32_t SC = low ? (y & 0x3F3F3F3Fu) : ((w & 0x0F0F0F0Fu) | ((y >> 2) & 0x30303030u));
                    const uint32_t MN = low ? (z & 0x3F3F3F3Fu) : (((w >> 4) & 0x0F0F0F0Fu) | ((z >> 2) & 0x30303030u));
                    const int sc0 = __byte_perm(SC, 0, sel0), sc1 = __byte_perm(SC, 0, sel1);
                    const int mn0 = __byte_perm(MN, 0, sel0), mn1 = __byte_perm(MN, 0, sel1);
                    const uint32_t qw[4] = {q[mm][k].x, q[mm][k].y, q[mm][k].z, q[mm][k].w};
                    const uint32_t xlw[4] = {xl.x, xl.y, xl.z, xl.w}, xhw[4] = {xh.x, xh.y, xh.z, xh.w};
                    int slo = 0, shi = 0;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        slo = __dp4a((int)(qw[i] & 0x0F0F0F0Fu), (int)xlw[i], slo);
                        shi = __dp4a((int)((qw[i] >> 4) & 0x0F0F0F0Fu), (int)xhw[i], shi);
                    }
                    const float fi = (float)(sc0 * slo + sc1 * shi), fm = (float)(mn0 * bs.x + mn1 * bs.y);
                    acc[mm] += dx * (h2f(hd[mm][k].x) * fi - h2f(hd[mm][k].x >> 16) * fm);
                }
            }
#pragma unroll
            for (int mm = 0; mm < M; mm++)
#pragma unroll
                for (int k = 0; k < U; k++) { hd[mm][k] = hn[mm][k]; q[mm][k] = qn[mm][k]; }
        }
        // this group's rows: tail blocks, the 8 lanes of a row, then the 4 K slices
        const lb_mat& m = job_mat(job, mi);
        if (warp == 0) {
#pragma unroll
            for (int mm = 0; mm < M; mm++) {
                const lb_mat& ms = NM == 2 ? job_mat(job, mm / H) : m;
                if (ms.xtra) tail_dot_q8(ms, min(grow + 4 * (mm % H) + r4, ms.rows - 1), xq, cap, s, &acc[mm]);
            }
        }
#pragma unroll
        for (int mm = 0; mm < M; mm++)
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) acc[mm] += __shfl_xor_sync(0xffffffffu, acc[mm], o);
        if (s == 0) {
#pragma unroll
            for (int mm = 0; mm < M; mm++) red[par][warp][r4][mm] = acc[mm];
        }
        __syncthreads();
        {
            const int h = lane >> 2, r = lane & 3, row = grow + 4 * h + r;   // lane: row 4h + r of the group
            if (warp == 0 && lane < 4 * H && row < m.rows) {
                float sa = 0.f, sb = 0.f;
#pragma unroll
                for (int w = 0; w < GEMV_WARPS; w++) {
                    sa += red[par][w][r][h];
                    if (NM == 2) sb += red[par][w][r][H + h];
                }
                gemv_store(job, mi, row, 0, sa, sb);
            }
        }
        par ^= 1;
#pragma unroll
        for (int mm = 0; mm < M; mm++) p[mm] = n[mm];
        mi = nmi; grow = ngrow;
    }
#undef Q4Q_LOAD
}

template <int M, int H>
__global__ void __launch_bounds__(32 * GEMV_WARPS, 4) gemv_q4k_q8_kernel(const lb_job job, const float* __restrict__ x) {
    pdl_launch();
    q4k_q8_blocks<M, H>(job, blockIdx.x, gridDim.x);
}

// q6_k decode against q8_K activations, the same geometry as gemv_q4k_q8_kernel (one matrix type
// per launch, modes 0 and 1). Lane s = (n = s/4: 128-weight half, p4 = s%4) takes 8 bytes of ql
// (quarters 0, 2), of ql+32 (quarters 1, 3) and of qh: weights 128n + 32k + 8p4..+7, k = 0..3,
// rebuilt as 6-bit bytes by masks and shifts; w = d sc (q - 32): the -32 term is 32 sc times the
// x sum of the 16-weight segment, added by the even lane of the pair sharing it.
// P = 2 or 4: a group is 4P rows, parts h (rows grow + 4h + lane/8) loaded side by side (as the
// q4_k slots): one reduction per 4P rows, and each x load serves every part
template <int P>
__device__ __forceinline__ void q6k_group_ptrs(const lb_job& job, int g, int kb0, int lane, const uint8_t** p, const uint16_t** dp, int& mi, int& grow) {
    const int g0 = job.wcnt[0], g1 = job.wcnt[1];
    mi = g < g0 ? 0 : g < g0 + g1 ? 1 : 2;
    const int gl = g - (mi == 0 ? 0 : mi == 1 ? g0 : g0 + g1);
    const lb_mat& m = job_mat(job, mi);
    grow = 4 * P * gl;
#pragma unroll
    for (int h = 0; h < P; h++) {
        const int rr = min(grow + 4 * h + (lane >> 3), m.rows - 1);
        p[h] = (const uint8_t*)m.body + (size_t)rr * m.body_row + (size_t)kb0 * 208;
        dp[h] = (const uint16_t*)((const uint8_t*)m.tail + (size_t)rr * m.tail_row) + kb0;
    }
}

template <int P>
__device__ __forceinline__ void q6k_q8_blocks(const lb_job& job, const int bid, const int nblk) {
    constexpr int U = P == 1 ? 4 : P == 2 ? 2 : 1;
    __shared__ float red[2][GEMV_WARPS][4][P];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, s = lane & 7, n = s >> 2, p4 = s & 3, r4 = lane >> 3;
    const int cols = job.m[0].cols, nb = cols >> 8;
    const int kb0 = nb * warp / GEMV_WARPS, nbs = nb * (warp + 1) / GEMV_WARPS - kb0;
    const int total = job.wcnt[0] + job.wcnt[1] + job.wcnt[2];
    const int cap = job.xq_cap;
    const uint8_t* xq = (const uint8_t*)job.xq;
    const int* xbs = reinterpret_cast<const int*>(xq + xq_bs_off(cap));
    const float* xd = reinterpret_cast<const float*>(xq + xq_d_off(cap));
    const int qoff = 64 * n + 8 * p4, hoff = 128 + 32 * n + 8 * p4, soff = 192 + 8 * n, sb = p4 >> 1;
    const bool even = (p4 & 1) == 0;
    uint2 qa[P][U], qb[P][U], qh[P][U], sc[P][U], na[P][U], nbq[P][U], nh[P][U], ns[P][U];
    uint32_t db[P][U], nd[P][U];
#define Q6Q_LOAD(A, B, H, S, D, PP, DP, B0)                                                        \
    _Pragma("unroll") for (int h = 0; h < P; h++) {                                                \
        _Pragma("unroll") for (int k = 0; k < U; k++) {                                            \
            if ((B0) + k < nbs) {                                                                  \
                const uint8_t* blk = (PP)[h] + (size_t)((B0) + k) * 208;                           \
                A[h][k] = __ldcs(reinterpret_cast<const uint2*>(blk + qoff));                      \
                B[h][k] = __ldcs(reinterpret_cast<const uint2*>(blk + qoff + 32));                 \
                H[h][k] = __ldcs(reinterpret_cast<const uint2*>(blk + hoff));                      \
                S[h][k] = __ldg(reinterpret_cast<const uint2*>(blk + soff));                       \
                D[h][k] = __ldg((DP)[h] + (B0) + k);                                               \
            }                                                                                      \
        }                                                                                          \
    }
    int g = bid, mi = 0, grow = 0;
    const uint8_t* p0[P] = {};
    const uint16_t* dp[P] = {};
    if (g < total) { q6k_group_ptrs<P>(job, g, kb0, lane, p0, dp, mi, grow); Q6Q_LOAD(qa, qb, qh, sc, db, p0, dp, 0) }
    pdl_wait();
    int par = 0;
    for (; g < total; g += nblk) {
        const int gn = g + nblk;
        const uint8_t* n0[P] = {};
        const uint16_t* ndp[P] = {};
        int nmi = 0, ngrow = 0;
        if (gn < total) q6k_group_ptrs<P>(job, gn, kb0, lane, n0, ndp, nmi, ngrow);
        float acc[P];
#pragma unroll
        for (int h = 0; h < P; h++) acc[h] = 0.f;
        for (int b0 = 0; b0 < nbs; b0 += U) {
            if (b0 + U < nbs) { Q6Q_LOAD(na, nbq, nh, ns, nd, p0, dp, b0 + U) }
            else if (gn < total) { Q6Q_LOAD(na, nbq, nh, ns, nd, n0, ndp, 0) }
#pragma unroll
            for (int k = 0; k < U; k++) {
                if (b0 + k >= nbs) continue;
                const int xb = kb0 + b0 + k;
                const uint8_t* xbp = xq + 256 * (size_t)xb;
                int tot[P];
#pragma unroll
                for (int h = 0; h < P; h++) tot[h] = 0;
#pragma unroll
                for (int qk = 0; qk < 4; qk++) {
                    const int seg = 2 * (2 * n + (qk >> 1)) + sb, hi = qk & 1;
                    const uint2 xv = __ldg(reinterpret_cast<const uint2*>(xbp + 128 * hi + 16 * seg + 8 * (p4 & 1)));
                    const int bs = __ldg(xbs + (xb * 8 + seg) * 2 + hi);
#pragma unroll
                    for (int h = 0; h < P; h++) {
                        const uint2 L = (qk & 1) ? qb[h][k] : qa[h][k];
                        const uint32_t h0 = qh[h][k].x, h1 = qh[h][k].y;
                        uint32_t w0, w1;
                        if (qk == 0) { w0 = (L.x & 0x0F0F0F0Fu) | ((h0 << 4) & 0x30303030u); w1 = (L.y & 0x0F0F0F0Fu) | ((h1 << 4) & 0x30303030u); }
                        else if (qk == 1) { w0 = (L.x & 0x0F0F0F0Fu) | ((h0 << 2) & 0x30303030u); w1 = (L.y & 0x0F0F0F0Fu) | ((h1 << 2) & 0x30303030u); }
                        else if (qk == 2) { w0 = ((L.x >> 4) & 0x0F0F0F0Fu) | (h0 & 0x30303030u); w1 = ((L.y >> 4) & 0x0F0F0F0Fu) | (h1 & 0x30303030u); }
                        else { w0 = ((L.x >> 4) & 0x0F0F0F0Fu) | ((h0 >> 2) & 0x30303030u); w1 = ((L.y >> 4) & 0x0F0F0F0Fu) | ((h1 >> 2) & 0x30303030u); }
                        const uint32_t sw = (qk >> 1) ? sc[h][k].y : sc[h][k].x;
                        const int scale = (int)(signed char)((sw >> (8 * (sb + 2 * (qk & 1)))) & 0xFF);
                        const int dot = __dp4a((int)w0, (int)xv.x, __dp4a((int)w1, (int)xv.y, 0));
                        tot[h] += scale * (dot - (even ? 32 * bs : 0));
                    }
                }
                const float dx = __ldg(xd + xb);
#pragma unroll
                for (int h = 0; h < P; h++) acc[h] += __fmul_rn(h2f(db[h][k]), dx) * (float)tot[h];
            }
#pragma unroll
            for (int h = 0; h < P; h++)
#pragma unroll
                for (int k = 0; k < U; k++) { qa[h][k] = na[h][k]; qb[h][k] = nbq[h][k]; qh[h][k] = nh[h][k]; sc[h][k] = ns[h][k]; db[h][k] = nd[h][k]; }
        }
        const lb_mat& m = job_mat(job, mi);
#pragma unroll
        for (int h = 0; h < P; h++) {
            const int rr = min(grow + 4 * h + r4, m.rows - 1);
            if (warp == 0 && m.xtra) tail_dot_q8(m, rr, xq, cap, s, &acc[h]);
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) acc[h] += __shfl_xor_sync(0xffffffffu, acc[h], o);
            if (s == 0) red[par][warp][r4][h] = acc[h];
        }
        __syncthreads();
        {
            const int h = P > 1 ? lane >> 2 : 0, r = lane & 3;
            if (warp == 0 && lane < 4 * P && grow + 4 * h + r < m.rows) {
                float sa = 0.f;
#pragma unroll
                for (int w = 0; w < GEMV_WARPS; w++) sa += red[par][w][r][h];
                gemv_store(job, mi, grow + 4 * h + r, 0, sa, 0.f);
            }
        }
        par ^= 1;
#pragma unroll
        for (int h = 0; h < P; h++) { p0[h] = n0[h]; dp[h] = ndp[h]; }
        mi = nmi; grow = ngrow;
    }
#undef Q6Q_LOAD
}

template <int P>
__global__ void __launch_bounds__(32 * GEMV_WARPS, 4) gemv_q6k_q8_kernel(const lb_job job, const float* __restrict__ x) {
    pdl_launch();
    q6k_q8_blocks<P>(job, blockIdx.x, gridDim.x);
}

// q4_k and q6_k matrices of one job (qkv where v is q6_k) in one launch: blocks [0, nb4) do the
// q4_k row groups, the rest the q6_k ones (block counts in proportion to the bytes), so the
// q6_k part pays no launch ramp and tail of its own. 8-row groups only (with 4-row ones too,
// the four bodies in one kernel spill registers).
__global__ void __launch_bounds__(32 * GEMV_WARPS, 4) gemv_q46_q8_kernel(const lb_job j4, const lb_job j6, int nb4) {
    pdl_launch();
    if ((int)blockIdx.x < nb4) q4k_q8_blocks<2, 2>(j4, blockIdx.x, nb4);
    else q6k_q8_blocks<2>(j6, blockIdx.x - nb4, gridDim.x - nb4);
}

// Prompt passes: x rounded in place to the CPU runtime's 8-bit activation grid, so that the GPU
// computes what the CPU does (which quantizes every q8_0 / k-quant matmul input): blocks of bs =
// 32 (q8_0) or 256 (k-quants, the last one zero-padded), d = amax/127, x = rint(x/d) * d. One
// warp per block, grid (blocks, tokens).
__global__ void actq_kernel(float* x, int ldx, int cols, int bs) {
    pdl_launch();
    pdl_wait();
    const int warp = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31, per = bs >> 5;
    const int c0 = warp * bs;
    if (c0 >= cols) return;
    float* p = x + (size_t)blockIdx.y * ldx + c0;
    float v[8], m = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int c = lane * per + i;
        v[i] = i < per && c0 + c < cols ? p[c] : 0.f;
        m = fmaxf(m, fabsf(v[i]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float d = m / 127.f, inv = d != 0.f ? 1.f / d : 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int c = lane * per + i;
        if (i < per && c0 + c < cols) p[c] = __fmul_rn((float)__float2int_rn(__fmul_rn(v[i], inv)), d);
    }
}

__global__ void embed_kernel(const lb_mat m, const int32_t* __restrict__ ids, float* __restrict__ out) {
    pdl_launch();
    pdl_wait();
    int t = blockIdx.x, row = ids[t];
    for (int c = threadIdx.x; c < m.cols; c += blockDim.x) out[(size_t)t * m.cols + c] = dequant_one(m, row, c);
}

__global__ void dequant_kernel(const lb_mat m, float* __restrict__ out) {
    int row = blockIdx.x;
    for (int c = threadIdx.x; c < m.cols; c += blockDim.x) out[(size_t)row * m.cols + c] = dequant_one(m, row, c);
}

// One row per block of 1024 threads, in registers: warp w holds the row's 256-blocks w and w + 32
// (lane l: floats 8l..8l+7 of each, dim <= 16384), so the quantization for the decode GEMVs
// (xq != 0) works on the values in registers, without reading the output back. The norm weights
// are loaded before the wait for the previous kernel. The CPU runtime's arithmetic: the sum of
// squares in double, 1/sqrt(ss/dim + eps) in double rounded to float, then x * inv * w in float.
constexpr int NORM_THREADS = 1024, NORM_R = 2, NORM_MAX = NORM_THREADS / 32 * 256 * NORM_R;
__device__ __forceinline__ void norm_load8(const float* p, int n, bool vec, float* v) {   // p[0..7], 0 past n
    if (vec && n >= 8) {
        const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = i < n ? p[i] : 0.f;
    }
}
__global__ void __launch_bounds__(NORM_THREADS) rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* out, int dim, float eps,
                                                               uint8_t* __restrict__ xq, int cap) {
    __shared__ double part[NORM_THREADS / 32];
    pdl_launch();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nblk = (dim + 255) >> 8;
    const bool vec = (dim & 3) == 0;   // rows 16-byte aligned
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* orow = out + (size_t)blockIdx.x * dim;
    float v[NORM_R][8], g[NORM_R][8];
#pragma unroll
    for (int r = 0; r < NORM_R; r++) {
        const int o = 256 * (warp + 32 * r) + 8 * lane;
        norm_load8(w + o, dim - o, vec, g[r]);
    }
    pdl_wait();
    double s = 0.0;
#pragma unroll
    for (int r = 0; r < NORM_R; r++) {
        const int o = 256 * (warp + 32 * r) + 8 * lane;
        norm_load8(xr + o, dim - o, vec, v[r]);
#pragma unroll
        for (int i = 0; i < 8; i++) s += (double)v[r][i] * v[r][i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    double t = 0.0;
#pragma unroll
    for (int i = 0; i < NORM_THREADS / 32; i++) t += part[i];
    const float inv = (float)(1.0 / sqrt(t / dim + (double)eps));
#pragma unroll
    for (int r = 0; r < NORM_R; r++) {
        const int b = warp + 32 * r, o = 256 * b + 8 * lane;
        if (b >= nblk) continue;   // (warp-uniform)
#pragma unroll
        for (int i = 0; i < 8; i++) v[r][i] = v[r][i] * inv * g[r][i];
        if (vec && dim - o >= 8) {
            *reinterpret_cast<float4*>(orow + o) = make_float4(v[r][0], v[r][1], v[r][2], v[r][3]);
            *reinterpret_cast<float4*>(orow + o + 4) = make_float4(v[r][4], v[r][5], v[r][6], v[r][7]);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) if (o + i < dim) orow[o + i] = v[r][i];
        }
        if (xq) quant_x_vals(v[r], b, lane, xq, cap);
    }
}

// One decode row, a block of NORM_MB_THREADS (NORM_MB) per 256 outputs: every block sums the squares of the
// whole row (the same order in every block, so all get the same 1/rms) and its first warp
// normalizes and quantizes its own 256-block. A 1024-thread block (rmsnorm_kernel) needs a whole
// SM free of the previous GEMV's blocks before it can start, and then reduces 32 partial sums
// serially; these small blocks start as single GEMV blocks retire and reduce 8.
template <int NORM_MB_THREADS>
__global__ void __launch_bounds__(NORM_MB_THREADS) rmsnorm_mb_kernel(const float* __restrict__ x, const float* __restrict__ w, float* out, int dim,
                                                                     float eps, uint8_t* __restrict__ xq, int cap) {
    __shared__ double part[NORM_MB_THREADS / 32];
    pdl_launch();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, b = blockIdx.x, o = 256 * b + 8 * lane;
    const bool vec = (dim & 3) == 0;
    float g[8], v[8];
    if (warp == 0) norm_load8(w + o, dim - o, vec, g);
    pdl_wait();
    if (warp == 0) norm_load8(x + o, dim - o, vec, v);
    double s = 0.0;
    if (vec) {
        for (int i = 4 * threadIdx.x; i < dim; i += 4 * NORM_MB_THREADS) {
            const float4 a = *reinterpret_cast<const float4*>(x + i);
            s += (double)a.x * a.x + (double)a.y * a.y + (double)a.z * a.z + (double)a.w * a.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += NORM_MB_THREADS) s += (double)x[i] * x[i];
    }
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) s += __shfl_xor_sync(0xffffffffu, s, k);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (warp) return;
    double t = 0.0;
#pragma unroll
    for (int i = 0; i < NORM_MB_THREADS / 32; i++) t += part[i];
    const float inv = (float)(1.0 / sqrt(t / dim + (double)eps));
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = v[i] * inv * g[i];
    if (vec && dim - o >= 8) {
        *reinterpret_cast<float4*>(out + o) = make_float4(v[0], v[1], v[2], v[3]);
        *reinterpret_cast<float4*>(out + o + 4) = make_float4(v[4], v[5], v[6], v[7]);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) if (o + i < dim) out[o + i] = v[i];
    }
    if (xq) quant_x_vals(v, b, lane, xq, cap);
}

// RoPE (Hugging Face rotate-half: i pairs with i + D/2) on q in place and on k, then k and v
// go into the fp16 cache at positions *pos0 + t. Layout of a layer's cache: [ctx][KVH][D].
__global__ void rope_store_kernel(float* __restrict__ q, int ldq, const float* __restrict__ k, const float* __restrict__ v, int ldkv,
                                  const float* __restrict__ cosT, const float* __restrict__ sinT,
                                  __half* __restrict__ kc, __half* __restrict__ vc, const int32_t* __restrict__ pos0p,
                                  int H, int KVH, int D) {
    int t = blockIdx.x, pos = *pos0p + t, half = D / 2;
    const float* c = cosT + (size_t)pos * half;
    const float* s = sinT + (size_t)pos * half;
    for (int e = threadIdx.x; e < H * half; e += blockDim.x) {
        int h = e / half, i = e % half;
        float* qp = q + (size_t)t * ldq + h * D;
        float a = qp[i], b = qp[i + half];
        qp[i] = a * c[i] - b * s[i];
        qp[i + half] = b * c[i] + a * s[i];
    }
    for (int e = threadIdx.x; e < KVH * half; e += blockDim.x) {
        int h = e / half, i = e % half;
        const float* kp = k + (size_t)t * ldkv + h * D;
        float a = kp[i], b = kp[i + half];
        __half* kd = kc + ((size_t)pos * KVH + h) * D;
        kd[i] = __float2half(a * c[i] - b * s[i]);
        kd[i + half] = __float2half(b * c[i] + a * s[i]);
    }
    for (int e = threadIdx.x; e < KVH * D; e += blockDim.x)
        vc[(size_t)pos * KVH * D + e] = __float2half(v[(size_t)t * ldkv + e]);
}

// causal grouped-query attention, one block (16 warps) per (head, token); online softmax per
// warp over a strided subset of positions, merged at the end. D <= 256.
// kf != 0 (one decode token): RoPE is fused in: the block rotates its q head and the new k
// itself (kf, vf: this token's k and v, float), uses them for the newest position and the first
// head of each kv group stores them in the cache (other blocks only read older positions).
constexpr int ATT_WARPS = 16;
__global__ void __launch_bounds__(32 * ATT_WARPS) attention_kernel(const float* __restrict__ q, __half* __restrict__ kc, __half* __restrict__ vc,
                                                                   float* __restrict__ out, const int32_t* __restrict__ pos0p, int H, int KVH, int D,
                                                                   const float* __restrict__ kf, const float* __restrict__ vf,
                                                                   const float* __restrict__ cosT, const float* __restrict__ sinT) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS], sm_acc[ATT_WARPS][256];
    pdl_launch();
    pdl_wait();
    int h = blockIdx.x, t = blockIdx.y, kvh = h / (H / KVH);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = *pos0p + t + 1;
    float scale = rsqrtf((float)D);
    float qv[8], acc[8];
    __half kcur[8], vcur[8];
    const float* qrow = q + ((size_t)t * H + h) * D;
    if (kf) {
        const int half_d = D / 2;
        const float* cs = cosT + (size_t)(len - 1) * half_d;
        const float* sn = sinT + (size_t)(len - 1) * half_d;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int i = lane + 32 * e;
            qv[e] = 0.f;
            kcur[e] = vcur[e] = __float2half(0.f);
            if (i < D) {
                bool first = i < half_d;
                int ii = first ? i : i - half_d, pi = first ? i + half_d : i - half_d;
                float c = cs[ii], sg = first ? -sn[ii] : sn[ii];
                qv[e] = (qrow[i] * c + qrow[pi] * sg) * scale;
                kcur[e] = __float2half(kf[kvh * D + i] * c + kf[kvh * D + pi] * sg);
                vcur[e] = __float2half(vf[kvh * D + i]);
            }
        }
        if (warp == 0 && h % (H / KVH) == 0) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                int i = lane + 32 * e;
                if (i < D) { kc[((size_t)(len - 1) * KVH + kvh) * D + i] = kcur[e]; vc[((size_t)(len - 1) * KVH + kvh) * D + i] = vcur[e]; }
            }
        }
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int i = lane + 32 * e;
            qv[e] = i < D ? qrow[i] * scale : 0.f;
            kcur[e] = vcur[e] = __float2half(0.f);
        }
    }
#pragma unroll
    for (int e = 0; e < 8; e++) acc[e] = 0.f;
    float mx = -INFINITY, l = 0.f;
    __half kn[8], vn[8];   // the next position's k and v, loaded one step ahead
#define ATT_LOAD(J)                                                                                         \
    if (kf && (J) == len - 1) {                                                                             \
        _Pragma("unroll") for (int e = 0; e < 8; e++) { kn[e] = kcur[e]; vn[e] = vcur[e]; }                 \
    } else {                                                                                                \
        _Pragma("unroll") for (int e = 0; e < 8; e++) { int i = lane + 32 * e; if (i < D) {                 \
            kn[e] = kc[((size_t)(J) * KVH + kvh) * D + i]; vn[e] = vc[((size_t)(J) * KVH + kvh) * D + i]; } } \
    }
#pragma unroll
    for (int e = 0; e < 8; e++) { kn[e] = vn[e] = __float2half(0.f); }
    if (warp < len) { ATT_LOAD(warp) }
    for (int j = warp; j < len; j += ATT_WARPS) {
        float kf_[8], vf_[8];
#pragma unroll
        for (int e = 0; e < 8; e++) { kf_[e] = __half2float(kn[e]); vf_[e] = __half2float(vn[e]); }
        int jn = j + ATT_WARPS;
        if (jn < len) { ATT_LOAD(jn) }
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) s += qv[e] * kf_[e];
        s = warp_sum(s);
        float mn = fmaxf(mx, s), corr = __expf(mx - mn), p = __expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] = acc[e] * corr + p * vf_[e];
        mx = mn;
    }
#undef ATT_LOAD
    if (lane == 0) { sm_m[warp] = mx; sm_l[warp] = l; }
#pragma unroll
    for (int e = 0; e < 8; e++) { int i = lane + 32 * e; if (i < D) sm_acc[warp][i] = acc[e]; }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm_m[w]);
    float L = 0.f, f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++) { f[w] = sm_m[w] == -INFINITY ? 0.f : __expf(sm_m[w] - M); L += sm_l[w] * f[w]; }
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < ATT_WARPS; w++) o += sm_acc[w][i] * f[w];
        out[((size_t)t * H + h) * D + i] = o / L;
    }
}

// Greedy decoding on the device: argmax of one token's logits (the first index of the largest
// value, as numpy's argmax), written as the next step's input (io[1] = token, io[0] = pos + 1)
// and into host-mapped memory (out[pos], 0 = none), so the host can queue the next decode step
// before it has read this one's token. Each block reduces its slice to a 64-bit key (ordered
// float bits, then the inverted index) and atomicMax'es it into state[0]; the last block to
// finish (counter state[1]) publishes the result and resets the state for the next launch.
constexpr int ARGMAX_BLOCKS = 32, ARGMAX_THREADS = 256;
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
    uint32_t u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (0xFFFFFFFFu - (uint32_t)i);
}
// after this block's atomicMax into state[0]: the last of nblocks blocks (counter state[1]) takes
// the result, writes the token and resets the state for the next launch
__device__ __forceinline__ void argmax_publish(unsigned long long* state, int32_t* io, int32_t* out, unsigned int nblocks) {
    __threadfence();
    if (atomicAdd(reinterpret_cast<unsigned int*>(state + 1), 1u) == nblocks - 1) {
        __threadfence();
        const unsigned long long k = atomicExch(state, 0ull);
        const int tok = (int)(0xFFFFFFFFu - (uint32_t)(k & 0xFFFFFFFFu));
        const int pos = io[0];
        if (out) out[pos] = tok;
        io[1] = tok;
        io[0] = pos + 1;
        state[1] = 0;
    }
}
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float* __restrict__ logits, int n, unsigned long long* state,
                                                                int32_t* io, int32_t* out) {
    __shared__ unsigned long long red[ARGMAX_THREADS / 32];
    pdl_launch();
    pdl_wait();
    unsigned long long best = 0;
    for (int i = blockIdx.x * ARGMAX_THREADS + threadIdx.x; i < n; i += ARGMAX_BLOCKS * ARGMAX_THREADS) {
        const unsigned long long k = argmax_key(logits[i], i);
        best = k > best ? k : best;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) { unsigned long long t = __shfl_xor_sync(0xffffffffu, best, o); best = t > best ? t : best; }
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; w++) best = red[w] > best ? red[w] : best;
        atomicMax(state, best);
        argmax_publish(state, io, out, ARGMAX_BLOCKS);
    }
}

// One decode token's attention (RoPE, cache store and attention fused), one block per head:
// scores with a thread per position (its whole fp16 key row in 16-byte loads, all in flight at
// once), the softmax in shared memory, then P.V with a warp per position stride and lanes over
// the head's dims; positions in tiles of AD_TILE with an online softmax across tiles. The q head
// and this token's k are rotated here; the first head of each kv group stores k and v in the
// cache (other heads use kcur/vcur for the newest position and only read older ones from the
// cache).
constexpr int AD_TILE = 1024;
template <int AD_WARPS>
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* wred) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) { float t = __shfl_xor_sync(0xffffffffu, v, o); v = is_max ? fmaxf(v, t) : v + t; }
    __syncthreads();   // wred free (an earlier reduction may still be reading it)
    if (lane == 0) wred[warp] = v;
    __syncthreads();
    float r = wred[0];
    for (int w = 1; w < AD_WARPS; w++) r = is_max ? fmaxf(r, wred[w]) : r + wred[w];
    return r;
}
// ATT_THREADS threads per block; ATT_PVU: P.V (head_dim 128) positions whose values are loaded at
// once per warp. Head_dim 128: each thread's key row of the first tile (all 16 loads at once) and the first
// half of its warp's first P.V round of values are loaded into registers before the PDL wait, so their latency
// overlaps the qkv GEMV's tail instead of adding serial rounds after it. The cached rows below
// the position were written by earlier steps; the position is read again after the wait and the
// early loads are dropped if it moved (it cannot within a graph; a guard, not a hint).
__device__ __forceinline__ float dot_q_k16(const float* qs, const uint4* k) {
    float s = 0.f;
#pragma unroll
    for (int i8 = 0; i8 < 16; i8++) {
        const uint4 u = k[i8];
        const float4 qa = *reinterpret_cast<const float4*>(qs + 8 * i8), qb = *reinterpret_cast<const float4*>(qs + 8 * i8 + 4);
        s += qa.x * h2f(u.x) + qa.y * h2f(u.x >> 16) + qa.z * h2f(u.y) + qa.w * h2f(u.y >> 16)
           + qb.x * h2f(u.z) + qb.y * h2f(u.z >> 16) + qb.z * h2f(u.w) + qb.w * h2f(u.w >> 16);
    }
    return s;
}
__global__ void __launch_bounds__(ATT_THREADS, 1) attn_decode_kernel(const float* __restrict__ q, __half* __restrict__ kc, __half* __restrict__ vc,
                                                                      float* __restrict__ out, const int32_t* __restrict__ pos0p, int H, int KVH, int D,
                                                                      const float* __restrict__ kf, const float* __restrict__ vf,
                                                                      const float* __restrict__ cosT, const float* __restrict__ sinT) {
    __shared__ __align__(16) float qs[256];
    constexpr int AD_THREADS = ATT_THREADS, AD_WARPS = ATT_THREADS / 32, PVU = ATT_PVU;
    __shared__ float sc[AD_TILE], red[AD_WARPS][256], wred[AD_WARPS];
    __shared__ __align__(16) __half kcur[256], vcur[256];
    pdl_launch();
    const int h = blockIdx.x, kvh = h / (H / KVH), tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    {
        // The keys and values of the positions before this token were written by earlier steps, so
        // they go to L2 while the qkv GEMV still runs. A hint only: a position read before the wait
        // may be stale (an older, smaller one), and any row below it lies inside the cache.
        const int np = min(*(volatile const int32_t*)pos0p, AD_TILE), lpr = (2 * D + 127) >> 7;
        for (int i = tid; i < np * lpr; i += AD_THREADS) {
            const int j = i / lpr;
            const size_t o = ((size_t)j * KVH + kvh) * D * 2 + 128 * (i - j * lpr);
            l2_prefetch_line((const char*)kc + o);
            l2_prefetch_line((const char*)vc + o);
        }
    }
    uint4 kr[16];
    constexpr int VE = 8;   // values loaded early: the first 8 of the warp's first P.V round (registers)
    uint2 ve[VE];
    bool kpre = false, vpre = false;
    // nA: the cached positions of the first tile (below the newest one, whose key/value come from kcur/vcur)
    const int lenA = D == 128 ? *(volatile const int32_t*)pos0p + 1 : 0, nA = min(lenA - 1, AD_TILE);
    if (D == 128) {
        kpre = tid < nA;
        if (kpre) {
            const uint4* kp = reinterpret_cast<const uint4*>(kc + ((size_t)tid * KVH + kvh) * D);
#pragma unroll
            for (int i = 0; i < 16; i++) kr[i] = kp[i];
        }
        vpre = true;
#pragma unroll
        for (int u = 0; u < VE; u++) {
            const int j = warp + u * AD_WARPS;
            ve[u] = j < nA ? *reinterpret_cast<const uint2*>(vc + ((size_t)j * KVH + kvh) * D + 4 * lane) : make_uint2(0, 0);
        }
    }
    pdl_wait();
    const int len = *pos0p + 1, half_d = D / 2;
    if (len != lenA) kpre = vpre = false;
    const float scale = rsqrtf((float)D);
    {
        const float* qrow = q + (size_t)h * D;
        const float* cs = cosT + (size_t)(len - 1) * half_d;
        const float* sn = sinT + (size_t)(len - 1) * half_d;
        const bool store = h % (H / KVH) == 0;
        for (int i = tid; i < D; i += AD_THREADS) {
            const bool first = i < half_d;
            const int ii = first ? i : i - half_d, pi = first ? i + half_d : i - half_d;
            const float c = cs[ii], sg = first ? -sn[ii] : sn[ii];
            qs[i] = (qrow[i] * c + qrow[pi] * sg) * scale;
            const __half kh = __float2half(kf[kvh * D + i] * c + kf[kvh * D + pi] * sg), vh = __float2half(vf[kvh * D + i]);
            kcur[i] = kh; vcur[i] = vh;
            if (store) { kc[((size_t)(len - 1) * KVH + kvh) * D + i] = kh; vc[((size_t)(len - 1) * KVH + kvh) * D + i] = vh; }
        }
    }
    __syncthreads();
    float M = -INFINITY, L = 0.f, acc[8];
#pragma unroll
    for (int e = 0; e < 8; e++) acc[e] = 0.f;
    const float s0 = kpre ? dot_q_k16(qs, kr) : 0.f;   // (kr is dead after this)
    for (int t0 = 0; t0 < len; t0 += AD_TILE) {
        const int n = min(AD_TILE, len - t0);
        float lmax = -INFINITY;
        for (int jj = tid; jj < n; jj += AD_THREADS) {
            const int j = t0 + jj;
            float s = 0.f;
            if (j == len - 1) {
                for (int i = 0; i < D; i++) s += qs[i] * __half2float(kcur[i]);
            } else if (kpre && t0 == 0 && jj == tid) {
                s = s0;
            } else if ((D & 7) == 0) {
                const uint4* kr = reinterpret_cast<const uint4*>(kc + ((size_t)j * KVH + kvh) * D);
#pragma unroll 4
                for (int i8 = 0; i8 < D / 8; i8++) {
                    const uint4 u = kr[i8];
                    const float4 qa = *reinterpret_cast<const float4*>(qs + 8 * i8), qb = *reinterpret_cast<const float4*>(qs + 8 * i8 + 4);
                    s += qa.x * h2f(u.x) + qa.y * h2f(u.x >> 16) + qa.z * h2f(u.y) + qa.w * h2f(u.y >> 16)
                       + qb.x * h2f(u.z) + qb.y * h2f(u.z >> 16) + qb.z * h2f(u.w) + qb.w * h2f(u.w >> 16);
                }
            } else {
                const __half* kr = kc + ((size_t)j * KVH + kvh) * D;
                for (int i = 0; i < D; i++) s += qs[i] * __half2float(kr[i]);
            }
            sc[jj] = s;
            lmax = fmaxf(lmax, s);
        }
        const float Mn = fmaxf(M, block_reduce<AD_WARPS>(lmax, true, wred)), corr = __expf(M - Mn);
        float lsum = 0.f;
        for (int jj = tid; jj < n; jj += AD_THREADS) { const float p = __expf(sc[jj] - Mn); sc[jj] = p; lsum += p; }
        L = L * corr + block_reduce<AD_WARPS>(lsum, false, wred);   // (its barriers also publish sc)
        M = Mn;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] *= corr;
        if (D == 128) {   // lane: dims 4 lane..+3 (8-byte loads), PVU positions' loads in flight per warp
            for (int j0 = warp; j0 < n; j0 += PVU * AD_WARPS) {
                uint2 vv[PVU];
                float pp[PVU];
#pragma unroll
                for (int u = 0; u < PVU; u++) {
                    const int jj = j0 + u * AD_WARPS, j = t0 + jj;
                    pp[u] = 0.f; vv[u] = make_uint2(0, 0);
                    if (jj < n) {
                        pp[u] = sc[jj];
                        if (u < VE && vpre && t0 == 0 && j0 == warp && j != len - 1) {
                            vv[u] = ve[u < VE ? u : 0];
                        } else {
                            const __half* vr = j == len - 1 ? vcur : vc + ((size_t)j * KVH + kvh) * D;
                            vv[u] = *reinterpret_cast<const uint2*>(vr + 4 * lane);
                        }
                    }
                }
#pragma unroll
                for (int u = 0; u < PVU; u++) {
                    acc[0] += pp[u] * h2f(vv[u].x); acc[1] += pp[u] * h2f(vv[u].x >> 16);
                    acc[2] += pp[u] * h2f(vv[u].y); acc[3] += pp[u] * h2f(vv[u].y >> 16);
                }
            }
        } else {
#pragma unroll 4
            for (int jj = warp; jj < n; jj += AD_WARPS) {
                const int j = t0 + jj;
                const float p = sc[jj];
                const __half* vr = j == len - 1 ? vcur : vc + ((size_t)j * KVH + kvh) * D;
#pragma unroll
                for (int e = 0; e < 8; e++) { const int i = lane + 32 * e; if (i < D) acc[e] += p * __half2float(vr[i]); }
            }
        }
        __syncthreads();   // sc is rewritten by the next tile
    }
    if (D == 128) {
#pragma unroll
        for (int e = 0; e < 4; e++) red[warp][4 * lane + e] = acc[e];
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) { const int i = lane + 32 * e; if (i < D) red[warp][i] = acc[e]; }
    }
    __syncthreads();
    for (int i = tid; i < D; i += AD_THREADS) {
        float o = 0.f;
        for (int w = 0; w < AD_WARPS; w++) o += red[w][i];
        out[(size_t)h * D + i] = o / L;
    }
}

// split each block into a 16-byte aligned body (bytes body_off..+body_len) and a tail (the other
// bytes, in order): q6_k, q2_k, q3_k repacking at load
__global__ void repack_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ body, uint8_t* __restrict__ tail, size_t nblocks,
                              int block_bytes, int body_off, int body_len) {
    const int tail_len = block_bytes - body_len;
    for (size_t b = blockIdx.x * (size_t)blockDim.x + threadIdx.x; b < nblocks; b += (size_t)gridDim.x * blockDim.x) {
        const uint8_t* s = src + b * block_bytes;
        for (int i = 0; i < body_len; i++) body[b * body_len + i] = s[body_off + i];
        for (int i = 0; i < body_off; i++) tail[b * tail_len + i] = s[i];
        for (int i = body_off + body_len; i < block_bytes; i++) tail[b * tail_len + i - body_len] = s[i];
    }
}

// q8_0: scales to the tail, quants to the body with each full 512-weight chunk permuted (q8_pos)
__global__ void repack_q8_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ body, uint16_t* __restrict__ tail, int rows, int cols) {
    const size_t words = (size_t)rows * (cols / 4);
    for (size_t wi = blockIdx.x * (size_t)blockDim.x + threadIdx.x; wi < words; wi += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(wi / (cols / 4)), c = (int)(wi % (cols / 4)) * 4;
        const uint8_t* blk = src + ((size_t)row * (cols / 32) + c / 32) * 34;
        uint8_t* o = body + (size_t)row * cols + q8_pos(c, cols);
        for (int k = 0; k < 4; k++) o[k] = blk[2 + (c & 31) + k];
        if ((c & 31) == 0) tail[(size_t)row * (cols / 32) + c / 32] = blk[0] | (blk[1] << 8);
    }
}

// codebook types: scale bytes (byte 0 of each block) to the tail, index bytes to the body at vq_pos
__global__ void repack_vq_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ body, uint8_t* __restrict__ tail,
                                 int rows, int nvec, int nv) {
    const int nb = nvec / nv;
    const size_t n = (size_t)rows * nvec;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(i / nvec), v = (int)(i % nvec), b = v / nv;
        const uint8_t* blk = src + (size_t)row * nb * (nv + 1) + (size_t)b * (nv + 1);
        body[(size_t)row * nvec + vq_pos(v, nvec)] = blk[1 + v % nv];
        if (v % nv == 0) tail[(size_t)row * nb + b] = blk[0];
    }
}

// ------------------------------------------------------------------------------------- C API

LB_API const char* lb_last_error(void) { return g_err; }

LB_API int lb_init(int device, char* name, int name_len, int* cc, long long* total_mem, int* sms) {
    int n = 0;
    CK(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n) { snprintf(g_err, sizeof g_err, "CUDA device %d does not exist (%d found)", device, n); return -1; }
    CK(cudaSetDevice(device));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, device));
    snprintf(name, name_len, "%s", p.name);
    *cc = p.major * 10 + p.minor;
    *total_mem = (long long)p.totalGlobalMem;
    *sms = p.multiProcessorCount;
    g_sms = p.multiProcessorCount;
    if (!g_stream) CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    const char* e = getenv("LOWBIT_CUDA_PDL");
    g_pdl = *cc >= 90 && !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_DP4A");
    g_dp4a = !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_MMA");
    g_mma = !(e && e[0] == '0');
    e = getenv("LOWBIT_CUDA_MMA_MIN");
    if (e && atoi(e) >= 2) g_mma_min = atoi(e);
    return 0;
}

LB_API int lb_malloc(uint64_t* ptr, size_t bytes) {
    void* p = nullptr;
    CK(cudaMalloc(&p, bytes ? bytes : 16));
    *ptr = (uint64_t)p;
    return 0;
}
LB_API int lb_free(uint64_t ptr) { CK(cudaFree((void*)ptr)); return 0; }
LB_API int lb_mem_info(size_t* free_b, size_t* total_b) { CK(cudaMemGetInfo(free_b, total_b)); return 0; }
LB_API int lb_memset(uint64_t ptr, int v, size_t n) { CK(cudaMemsetAsync((void*)ptr, v, n, g_stream)); return 0; }
LB_API int lb_htod(uint64_t dst, const void* src, size_t n) {
    CK(cudaMemcpyAsync((void*)dst, src, n, cudaMemcpyHostToDevice, g_stream));
    CK(cudaStreamSynchronize(g_stream));
    return 0;
}
LB_API int lb_htod_async(uint64_t dst, const void* src, size_t n) {   // src must be pinned (lb_host_alloc)
    CK(cudaMemcpyAsync((void*)dst, src, n, cudaMemcpyHostToDevice, g_stream));
    return 0;
}
LB_API int lb_dtoh(void* dst, uint64_t src, size_t n) {
    CK(cudaMemcpyAsync(dst, (const void*)src, n, cudaMemcpyDeviceToHost, g_stream));
    CK(cudaStreamSynchronize(g_stream));
    return 0;
}
LB_API int lb_host_alloc(uint64_t* ptr, size_t n) { void* p; CK(cudaMallocHost(&p, n)); *ptr = (uint64_t)p; return 0; }
LB_API int lb_host_free(uint64_t ptr) { CK(cudaFreeHost((void*)ptr)); return 0; }
LB_API int lb_sync(void) { CK(cudaStreamSynchronize(g_stream)); return 0; }

LB_API int lb_repack(uint64_t src, uint64_t body, uint64_t tail, size_t nblocks, int block_bytes, int body_off, int body_len) {
    repack_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint8_t*)tail, nblocks, block_bytes, body_off, body_len);
    CKL("repack_kernel");
    return 0;
}
LB_API int lb_repack_vq(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols, int type) {
    const int D = VQ_D(type), B = VQ_B(type);
    if (type < T_CBK2 || type > T_D4L2 || cols % B) { snprintf(g_err, sizeof g_err, "codebook rows of %d weights (type %d) are not whole blocks", cols, type); return -1; }
    repack_vq_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint8_t*)tail, rows, cols / D, B / D);
    CKL("repack_vq_kernel");
    return 0;
}
LB_API int lb_repack_q8(uint64_t src, uint64_t body, uint64_t tail, int rows, int cols) {
    if (cols % 32) { snprintf(g_err, sizeof g_err, "q8_0 rows of %d weights are not whole blocks", cols); return -1; }
    repack_q8_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint16_t*)tail, rows, cols);
    CKL("repack_q8_kernel");
    return 0;
}

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

template <int NT>
static cudaError_t launch_gemv(const lb_job& job, const float* x, int ldx, int warps) {
    int blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    return launch(gemv_kernel<NT>, dim3(blocks), dim3(32 * GEMV_WARPS), job, x, ldx);
}

static int rows_per_warp(int type, int nt) { return nt == 1 && type == T_Q4_K ? 4 : 1; }

static int gemv_float(const lb_job* job_in, uint64_t x, int ldx, int ntok);

// one decode token: the q4_k and q6_k matrices of a job against q8_K activations (quantized here
// unless job.xq_ready): one launch for both types when both are present (8-row groups), else one per type; the other matrices are
// left to the float path (gemv_q8act's *rest)
static int quant_x_once(const lb_job& j, uint64_t x, bool* quantized) {
    const int cols = j.m[0].cols;
    const int nbx = (cols + 255) >> 8;   // activation blocks, the last one possibly partial
    if (nbx > j.xq_cap) { snprintf(g_err, sizeof g_err, "activation buffer of %d blocks < %d", j.xq_cap, nbx); return -1; }
    if (!j.xq_ready && !*quantized) {
        cudaError_t r = launch(quant_x_kernel, dim3(nbx), dim3(32), (const float*)x, cols, (uint8_t*)j.xq, j.xq_cap);
        if (r != cudaSuccess) return fail("quant_x_kernel launch", r);
        CKL("quant_x_kernel");
        *quantized = true;
    }
    return 0;
}

// row groups (j.ksplit rows: 4, 8 or 16) of each matrix into j.wcnt; returns their total, and
// the weight bytes in *bytes
static int q8act_groups(lb_job& j, double* bytes) {
    int groups = 0;
    *bytes = 0;
    const int n = j.mode == 2 ? 1 : j.nmat, rg = j.ksplit;
    for (int i = 0; i < 3; i++) {
        j.wcnt[i] = i < n ? (j.m[i].rows + rg - 1) / rg : 0;
        groups += j.wcnt[i];
        if (i < j.nmat) *bytes += (double)j.m[i].rows * j.m[i].body_row;
    }
    return groups;
}

// as many groups per block as makes ~budget blocks, then blocks so every block has that many
static int q8act_blocks(int groups, int budget) {
    if (budget < 1) budget = 1;
    const int per = (groups + budget - 1) / budget;
    return (groups + per - 1) / per;
}

static int launch_q8act(lb_job j, int type) {
    double bytes;
    const int groups = q8act_groups(j, &bytes), blocks = q8act_blocks(groups, DP4A_BPSM * g_sms);
    const dim3 grid(blocks), block(32 * GEMV_WARPS);
    // groups of ROWS_Q6 = 8 q6_k rows (P = 2), ROWS_GU = 4 rows of each of gate and up (M = 2, H = 1),
    // ROWS_Q4 = 8 rows of one q4_k matrix (M = H = 2)
    static_assert(ROWS_Q6 == 8 && ROWS_GU == 4 && ROWS_Q4 == 8, "the launches below instantiate these group sizes");
    cudaError_t r = type == T_Q6_K ? launch(gemv_q6k_q8_kernel<2>, grid, block, j, (const float*)0)
                  : j.mode == 2 ? launch(gemv_q4k_q8_kernel<2, 1>, grid, block, j, (const float*)0)
                                : launch(gemv_q4k_q8_kernel<2, 2>, grid, block, j, (const float*)0);
    if (r != cudaSuccess) return fail("gemv q8-activation kernel launch", r);
    CKL("gemv q8-activation kernel");
    return 0;
}

static int launch_q46(lb_job j4, lb_job j6) {
    double b4, b6;
    const int g4 = q8act_groups(j4, &b4), g6 = q8act_groups(j6, &b6), budget = DP4A_BPSM * g_sms;
    int nb4 = (int)(budget * b4 / (b4 + b6) + 0.5);
    nb4 = nb4 < 1 ? 1 : nb4 > budget - 1 ? budget - 1 : nb4;
    nb4 = q8act_blocks(g4, nb4);
    const int nb6 = q8act_blocks(g6, budget - nb4);
    cudaError_t r = launch(gemv_q46_q8_kernel, dim3(nb4 + nb6), dim3(32 * GEMV_WARPS), j4, j6, nb4);
    if (r != cudaSuccess) return fail("gemv_q46_q8_kernel launch", r);
    CKL("gemv_q46_q8_kernel");
    return 0;
}

static int gemv_q8act(const lb_job& job, uint64_t x, lb_job* rest) {
    lb_job j4 = job, j6 = job;
    *rest = job;
    rest->nmat = j4.nmat = j6.nmat = 0;
    bool quantized = false;
    if (job.mode == 2) {
        if (job.m[0].type != T_Q4_K || job.m[1].type != T_Q4_K || job.m[0].cols != job.m[1].cols) { *rest = job; return 0; }
        j4.nmat = 2;
    } else {
        for (int i = 0; i < job.nmat; i++) {
            const int t = job.m[i].type;
            lb_job& d = t == T_Q4_K ? j4 : t == T_Q6_K ? j6 : *rest;
            d.m[d.nmat] = job.m[i]; d.y[d.nmat] = job.y[i]; d.ldy[d.nmat] = job.ldy[i]; d.nmat++;
        }
    }
    if (j4.nmat || j6.nmat) { int rc = quant_x_once(job, x, &quantized); if (rc) return rc; }
    j4.ksplit = job.mode == 2 ? ROWS_GU : ROWS_Q4;   // rows per group (in the ksplit field)
    j6.ksplit = ROWS_Q6;
    if (j4.nmat && j6.nmat && j4.ksplit == 8 && j6.ksplit == 8) return launch_q46(j4, j6);   // (its bodies: 8 rows)
    if (j4.nmat) { int rc = launch_q8act(j4, T_Q4_K); if (rc) return rc; }
    if (j6.nmat) { int rc = launch_q8act(j6, T_Q6_K); if (rc) return rc; }
    return 0;
}

// ------------------------------------------------------------------ codebook types: the GEMV
// One block of VQ_WARPS warps takes a run of job.rpw[mi] rows of one matrix (mode 2: the same
// rows of gate and up). Its codebook(s) go to shared memory first, before the wait for the
// previous kernel, as 32 copies laid out so that lane l's reads always hit bank l: word w of entry
// e (the fp16 pair 2w, 2w+1) of copy l at [(e * D/2 + w) * 32 + l]. Random lookups by 32 lanes
// then never conflict (one float4 table with random indices cost ~10 wavefronts per warp load and
// bounded the kernel). 64 KB (D 4) or 32 KB (D 2) per codebook, plus the 256-float SCALE table.
// A warp does one row at a time, its index bytes permuted at load (vq_pos): per 512-vector chunk
// one 16-byte index load per lane, then for each of its 16 vectors (l + 32k) the codebook entry,
// the x floats (contiguous across the warp) and the block's scale byte (a broadcast load). Sum of
// SCALE[s] * (cb . x), times d_row at the end (the CPU sums a block first, then scales: the same
// up to rounding). Prompt passes: NT tokens per pass share each index load and lookup.
constexpr int VQ_WARPS = 16;
template <int TY>
__host__ __device__ constexpr int vq_cb_words() { return 256 * (VQ_D(TY) / 2) * 32; }

// one vector: codebook entry id (cbl = the lane's copy), x at xv (token t at xv + t * ldx), scale sc
template <int TY, int NT>
__device__ __forceinline__ void vq_vec(uint32_t id, const float* __restrict__ xv, float sc, const uint32_t* __restrict__ cbl,
                                       int ldx, float* part) {
    constexpr int D = VQ_D(TY);
    const uint32_t* e = cbl + id * (D / 2) * 32;
    const uint32_t w0 = e[0];
    const float2 c01 = __half22float2(*reinterpret_cast<const __half2*>(&w0));
    float2 c23 = make_float2(0.f, 0.f);
    if (D == 4) { const uint32_t w1 = e[32]; c23 = __half22float2(*reinterpret_cast<const __half2*>(&w1)); }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (D == 4) {
            const float4 a = ldx4(xv + (size_t)t * ldx);
            part[t] = fmaf(sc, c01.x * a.x + c01.y * a.y + c23.x * a.z + c23.y * a.w, part[t]);
        } else {
            const float2 a = __ldg(reinterpret_cast<const float2*>(xv + (size_t)t * ldx));
            part[t] = fmaf(sc, c01.x * a.x + c01.y * a.y, part[t]);
        }
    }
}

// A chunk's scales: lane l holds SCALE of block l (and 32 + l for d4l2's 64 blocks per chunk);
// vector 32k + l (block (32k + l) / NV) gets it by a shuffle instead of two loads per vector.
template <int TY, int NT>
__device__ __forceinline__ void vq_row_dot(const lb_mat& m, const uint32_t* __restrict__ cbw, const float* __restrict__ scl, int row,
                                           const float* __restrict__ x, int ldx, int lane, float* acc) {
    constexpr int D = VQ_D(TY), NV = VQ_B(TY) / D, U = NT >= 4 ? 1 : 2;   // chunks in flight (U = 2 at NT 8 spills)
    constexpr int SPC = 512 / NV;   // blocks (scale bytes) per chunk: 32 or 64
    const uint8_t* ib = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* sb = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    const uint32_t* cbl = cbw + lane;
    const float* xl = x + lane * D;
    const int nvec = m.cols / D, nch = nvec >> 9;
    float part[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) part[t] = 0.f;
    for (int c0 = 0; c0 < nch; c0 += U) {
        uint4 q[U];
        uint32_t sa[U], sbb[U];
#pragma unroll
        for (int u = 0; u < U; u++) if (c0 + u < nch) {
            q[u] = __ldcs(reinterpret_cast<const uint4*>(ib + ((size_t)(c0 + u) << 9) + 16 * lane));
            sa[u] = sb[(c0 + u) * SPC + lane];
            if (SPC == 64) sbb[u] = sb[(c0 + u) * SPC + 32 + lane];
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (c0 + u >= nch) continue;
            const float fa = scl[sa[u]], fb = SPC == 64 ? scl[sbb[u]] : 0.f;
            const uint32_t w[4] = {q[u].x, q[u].y, q[u].z, q[u].w};
            const float* xc = xl + (size_t)(c0 + u) * 512 * D;
#pragma unroll
            for (int k = 0; k < 16; k++) {
                float sc;
                if (SPC == 32) sc = __shfl_sync(0xffffffffu, fa, 2 * k + (lane >> 4));
                else sc = __shfl_sync(0xffffffffu, k < 8 ? fa : fb, (4 * k + (lane >> 3)) & 31);
                vq_vec<TY, NT>((w[k >> 2] >> (8 * (k & 3))) & 0xFF, xc + 32 * k * D, sc, cbl, ldx, part);
            }
        }
    }
    for (int v = (nch << 9) + lane; v < nvec; v += 32) vq_vec<TY, NT>(ib[v], x + (size_t)v * D, scl[sb[v / NV]], cbl, ldx, part);
    const float d = h2f(reinterpret_cast<const uint16_t*>(m.xtra)[256 * D + row]);
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = d * warp_sum(part[t]);
}

template <int TY>
__device__ __forceinline__ void vq_load_codebook(const lb_mat& m, uint32_t* cbw) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(m.xtra);   // fp16 pairs
    for (int i = threadIdx.x; i < vq_cb_words<TY>(); i += blockDim.x) cbw[i] = __ldg(src + (i >> 5));
}

template <int TY, int NT>
__global__ void __launch_bounds__(32 * VQ_WARPS) gemv_vq_kernel(const lb_job job, const float* __restrict__ x, int ldx) {
    extern __shared__ __align__(16) uint32_t vq_smem[];   // SCALE table, then the codebook copies (one or two)
    float* scl = reinterpret_cast<float*>(vq_smem);
    uint32_t* cb0 = vq_smem + 256;
    uint32_t* cb1 = cb0 + vq_cb_words<TY>();
    pdl_launch();
    int bid = blockIdx.x, mi = 0;
    if (job.mode != 2)
        while (mi < job.nmat - 1 && bid >= job.wcnt[mi]) { bid -= job.wcnt[mi]; mi++; }
    const lb_mat& m = job_mat(job, mi);
    vq_load_codebook<TY>(m, cb0);
    if (job.mode == 2) vq_load_codebook<TY>(job.m[1], cb1);
    for (int i = threadIdx.x; i < 256; i += blockDim.x) scl[i] = vq_scale(i);
    __syncthreads();
    pdl_wait();
    const int rpb = mi == 0 ? job.rpw[0] : mi == 1 ? job.rpw[1] : job.rpw[2];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r1 = min(m.rows, (bid + 1) * rpb);
    for (int row = bid * rpb + warp; row < r1; row += VQ_WARPS) {
        float a[NT], b[NT];
        vq_row_dot<TY, NT>(job_mat(job, mi), cb0, scl, row, x, ldx, lane, a);
        if (job.mode == 2) vq_row_dot<TY, NT>(job.m[1], cb1, scl, row, x, ldx, lane, b);
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < NT; t++) gemv_store(job, mi, row, t, a[t], job.mode == 2 ? b[t] : 0.f);
    }
}

// ------------------------------------------------------------ prompt passes on tensor cores (WMMA)
// A prompt pass of >= g_mma_min tokens: C[row][tok] = sum_k W[row][k] x[tok][k] as a GEMM. Each
// block owns MMA_BM weight rows and MMA_BN tokens; per K step of MMA_BK columns it dequantizes its
// weight tile into fp16 in shared memory with dequant_one (every type through one kernel: the
// exact per-type decoders of lb_dequant / the embedding), converts the activation tile (already
// rounded to the CPU's q8 grid by actq_kernel where the CPU rounds) to fp16, and multiplies with
// WMMA 16x16x16, fp32 accumulate. 8 warps: warp w computes rows 32(w&1).. x tokens 32(w>>1)..
// (2x2 fragments). A prompt of <= MMA_BN tokens dequantizes each weight once. Epilogue: each
// 16x16 result through shared memory to gemv_store (bias, accumulate, silu(gate) * up).
constexpr int MMA_BM = 64, MMA_BN = 128, MMA_BK = 64, MMA_WARPS = 8, MMA_LD = MMA_BK + 8;   // +8 halves: no bank conflicts

template <bool GU>
__global__ void __launch_bounds__(32 * MMA_WARPS) gemm_mma_kernel(const lb_job job, const float* __restrict__ x, int ldx, int ntok) {
    using namespace nvcuda;
    __shared__ __align__(32) __half ws[GU ? 2 : 1][MMA_BM * MMA_LD];
    __shared__ __align__(32) __half xs[MMA_BN * MMA_LD];
    pdl_launch();
    int tile = blockIdx.x, mi = 0;
    if (!GU)
        while (mi < job.nmat - 1 && tile >= job.wcnt[mi]) { tile -= job.wcnt[mi]; mi++; }
    const lb_mat& m = job_mat(job, mi);
    const int r0 = tile * MMA_BM, t0 = blockIdx.y * MMA_BN, K = m.cols, rows = m.rows;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wm = warp & 1, wn = warp >> 1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[GU ? 2 : 1][2][2];
#pragma unroll
    for (int g = 0; g < (GU ? 2 : 1); g++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[g][i][j], 0.f);
    pdl_wait();
    for (int k0 = 0; k0 < K; k0 += MMA_BK) {
        // consecutive threads: consecutive weights of a row (same quant block: L1 hits)
        for (int e = threadIdx.x; e < MMA_BM * MMA_BK; e += 32 * MMA_WARPS) {
            const int r = e / MMA_BK, c = e % MMA_BK, row = r0 + r, col = k0 + c;
            const bool in = row < rows && col < K;
            ws[0][r * MMA_LD + c] = __float2half_rn(in ? dequant_one(m, row, col) : 0.f);
            if (GU) ws[GU ? 1 : 0][r * MMA_LD + c] = __float2half_rn(in ? dequant_one(job.m[1], row, col) : 0.f);
        }
        for (int e = threadIdx.x; e < MMA_BN * MMA_BK; e += 32 * MMA_WARPS) {
            const int t = e / MMA_BK, c = e % MMA_BK, col = k0 + c;
            xs[t * MMA_LD + c] = __float2half_rn(t0 + t < ntok && col < K ? x[(size_t)(t0 + t) * ldx + col] : 0.f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < MMA_BK; kk += 16) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], xs + (32 * wn + 16 * j) * MMA_LD + kk, MMA_LD);
#pragma unroll
            for (int g = 0; g < (GU ? 2 : 1); g++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
                    wmma::load_matrix_sync(a, ws[g] + (32 * wm + 16 * i) * MMA_LD + kk, MMA_LD);
#pragma unroll
                    for (int j = 0; j < 2; j++) wmma::mma_sync(acc[g][i][j], a, b[j], acc[g][i][j]);
                }
        }
        __syncthreads();
    }
    // epilogue in the activation tile's space (free after the loop's last barrier): 16x16 floats
    // per warp (two for gate/up), stored column-major so that lanes write consecutive rows of y
    float* st = reinterpret_cast<float*>(xs) + warp * (GU ? 512 : 256);
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(st, acc[0][i][j], 16, wmma::mem_col_major);
            if (GU) wmma::store_matrix_sync(st + 256, acc[GU ? 1 : 0][i][j], 16, wmma::mem_col_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                const int row = r0 + 32 * wm + 16 * i + (e & 15), tok = t0 + 32 * wn + 16 * j + (e >> 4);
                if (row < rows && tok < ntok) gemv_store(job, mi, row, tok, st[e], GU ? st[256 + e] : 0.f);
            }
            __syncwarp();
        }
}

// a job's matrices on tensor cores, all ntok tokens in one launch (x already rounded where the CPU rounds)
static int gemm_mma(const lb_job& job, uint64_t x, int ldx, int ntok) {
    lb_job j = job;
    const int nm = j.mode == 2 ? 1 : j.nmat;
    int blocks = 0;
    for (int i = 0; i < 3; i++) {
        j.rpw[i] = MMA_BM;
        j.wcnt[i] = i < nm ? (j.m[i].rows + MMA_BM - 1) / MMA_BM : 0;
        blocks += j.wcnt[i];
    }
    if (!blocks) return 0;
    cudaError_t r = launch(j.mode == 2 ? gemm_mma_kernel<true> : gemm_mma_kernel<false>, dim3(blocks, (ntok + MMA_BN - 1) / MMA_BN),
                           dim3(32 * MMA_WARPS), j, (const float*)x, ldx, ntok);
    if (r != cudaSuccess) return fail("gemm_mma_kernel launch", r);
    CKL("gemm_mma_kernel");
    return 0;
}

static bool is_vq(int type) { return type == T_CBK2 || type == T_CBK4 || type == T_D4L2; }

template <int TY, int NT>
static cudaError_t launch_vq_k(const lb_job& j, const float* x, int ldx, int blocks) {
    static bool attr = false;   // dynamic shared memory over 48 KB: allowed once per kernel
    const size_t smem = 4 * (256 + (size_t)vq_cb_words<TY>() * (j.mode == 2 ? 2 : 1));
    if (!attr) {
        cudaError_t r = cudaFuncSetAttribute(gemv_vq_kernel<TY, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * (256 + 2 * vq_cb_words<TY>()));
        if (r != cudaSuccess) return r;
        attr = true;
    }
    return launch_smem(gemv_vq_kernel<TY, NT>, dim3(blocks), dim3(32 * VQ_WARPS), smem, j, x, ldx);
}
template <int TY>
static cudaError_t launch_vq_nt(const lb_job& j, const float* x, int ldx, int nt, int blocks) {
    switch (nt) {
    case 8: return launch_vq_k<TY, 8>(j, x, ldx, blocks);
    case 4: return launch_vq_k<TY, 4>(j, x, ldx, blocks);
    case 2: return launch_vq_k<TY, 2>(j, x, ldx, blocks);
    default: return launch_vq_k<TY, 1>(j, x, ldx, blocks);
    }
}

// The codebook matrices of a job (one launch per type present, NT tokens per pass); the other
// matrices go to *rest. Rows per block: ~2 blocks per SM over the launch (1 for gate/up, whose two
// codebooks fill 128 KB of shared memory), at least one row per warp, so each block's codebook
// fill (32-64 KB of shared stores) is spread over many rows.
static int gemv_vq(const lb_job& job, uint64_t x, int ldx, int ntok, lb_job* rest, bool mma) {
    *rest = job;
    if (job.mode == 2) {
        const bool a = is_vq(job.m[0].type), b = is_vq(job.m[1].type);
        if (!a && !b) return 0;
        if (a != b || job.m[0].type != job.m[1].type || job.m[0].cols != job.m[1].cols || job.m[0].rows != job.m[1].rows) {
            snprintf(g_err, sizeof g_err, "gate/up of different types (%d, %d): a codebook type must pair with the same type", job.m[0].type, job.m[1].type);
            return -1;
        }
    }
    rest->nmat = 0;
    for (int ty = T_CBK2; ty <= T_D4L2; ty++) {
        lb_job j = job;
        j.nmat = 0;
        if (job.mode == 2) { if (job.m[0].type == ty) j.nmat = 2; }
        else for (int i = 0; i < job.nmat; i++) {
            if (job.m[i].type != ty) continue;
            j.m[j.nmat] = job.m[i]; j.y[j.nmat] = job.y[i]; j.ldy[j.nmat] = job.ldy[i]; j.nmat++;
        }
        if (!j.nmat) continue;
        if (mma) {   // a long prompt pass: the tensor-core GEMM (activations not rounded, as below)
            int rc = gemm_mma(j, x, ldx, ntok);
            if (rc) return rc;
            continue;
        }
        const int nm = job.mode == 2 ? 1 : j.nmat;
        long long rows = 0;
        for (int i = 0; i < nm; i++) rows += j.m[i].rows;
        const long long budget = (job.mode == 2 && VQ_D(ty) == 4 ? 1LL : 2LL) * g_sms;
        int rpb = (int)((rows + budget - 1) / budget);
        rpb = (rpb + VQ_WARPS - 1) / VQ_WARPS * VQ_WARPS;
        int blocks = 0;
        for (int i = 0; i < 3; i++) {
            j.rpw[i] = rpb;
            j.wcnt[i] = i < nm ? (j.m[i].rows + rpb - 1) / rpb : 0;
            blocks += j.wcnt[i];
        }
        for (int t0 = 0; t0 < ntok;) {
            const int nt = ntok - t0 >= 8 ? 8 : ntok - t0 >= 4 ? 4 : ntok - t0 >= 2 ? 2 : 1;
            lb_job jt = j;
            for (int i = 0; i < 3; i++) if (jt.y[i]) jt.y[i] += (uint64_t)t0 * jt.ldy[i] * sizeof(float);
            const float* xp = (const float*)x + (size_t)t0 * ldx;
            cudaError_t r = ty == T_CBK2 ? launch_vq_nt<T_CBK2>(jt, xp, ldx, nt, blocks)
                          : ty == T_CBK4 ? launch_vq_nt<T_CBK4>(jt, xp, ldx, nt, blocks)
                                         : launch_vq_nt<T_D4L2>(jt, xp, ldx, nt, blocks);
            if (r != cudaSuccess) return fail("gemv_vq_kernel launch", r);
            CKL("gemv_vq_kernel");
            t0 += nt;
        }
    }
    if (job.mode == 2) return 0;   // (both were codebook matrices)
    for (int i = 0; i < job.nmat; i++) {
        if (is_vq(job.m[i].type)) continue;
        rest->m[rest->nmat] = job.m[i]; rest->y[rest->nmat] = job.y[i]; rest->ldy[rest->nmat] = job.ldy[i]; rest->nmat++;
    }
    return 0;
}

// y = W x for ntok tokens (x rows ldx floats apart), in chunks of at most 8 tokens per pass
LB_API int lb_gemv(const lb_job* job_in, uint64_t x, int ldx, int ntok) {
    lb_job others;   // codebook matrices first (their own kernel), then the rest as before
    const bool mma = g_mma && ntok >= g_mma_min;   // long prompt passes: tensor-core GEMM (gemm_mma_kernel)
    {
        int rc = gemv_vq(*job_in, x, ldx, ntok, &others, mma);
        if (rc) return rc;
        if (others.nmat == 0) return 0;
        job_in = &others;
    }
    if (ntok == 1 && g_dp4a && job_in->xq) {
        lb_job rest;
        int rc = gemv_q8act(*job_in, x, &rest);
        if (rc) return rc;
        return rest.nmat ? gemv_float(&rest, x, ldx, ntok) : 0;
    }
    if (ntok > 1) {   // a prompt pass: the CPU's activation rounding first (in place: x is this job's own input)
        int bs = 0;
        for (int i = 0; i < job_in->nmat; i++) {
            const int t = job_in->m[i].type, b = t == T_Q8_0 ? 32 : (t >= T_Q4_K && t <= T_Q5_K) ? 256 : -1;
            bs = i == 0 || bs == b ? b : -1;
        }
        if (bs > 0) {
            const int cols = job_in->m[0].cols, wpb = 4, nblk = (cols + bs - 1) / bs;
            cudaError_t r = launch(actq_kernel, dim3((nblk + wpb - 1) / wpb, ntok), dim3(32 * wpb), (float*)x, ldx, cols, bs);
            if (r != cudaSuccess) return fail("actq_kernel launch", r);
            CKL("actq_kernel");
        }
    }
    return mma ? gemm_mma(*job_in, x, ldx, ntok) : gemv_float(job_in, x, ldx, ntok);
}

static int gemv_float(const lb_job* job_in, uint64_t x, int ldx, int ntok) {
    lb_job job = *job_in;
    for (int t0 = 0; t0 < ntok;) {
        int nt = ntok - t0 >= 8 ? 8 : ntok - t0 >= 4 ? 4 : ntok - t0 >= 2 ? 2 : 1;
        lb_job j = job;
        int warps = 0;
        // split q4_k row groups over the warps of a block: each matrix's warps then start at a
        // block boundary (counts rounded up to whole blocks; the extra warps return at once)
        const int S = nt == 1 ? GEMV_WARPS : 1;
        j.ksplit = S;
        auto count = [&](int rows, int r) { int w = (rows + r - 1) / r; return S > 1 ? (r == 4 ? S * w : (w + S - 1) / S * S) : w; };
        for (int i = 0; i < 3; i++) { j.rpw[i] = 1; j.wcnt[i] = 0; }
        if (j.mode == 2) {
            int r = j.m[0].type == j.m[1].type ? rows_per_warp(j.m[0].type, nt) : 1;
            j.rpw[0] = j.rpw[1] = r;
            warps = j.wcnt[0] = count(j.m[0].rows, r);
        } else {
            for (int i = 0; i < j.nmat; i++) {
                j.rpw[i] = rows_per_warp(j.m[i].type, nt);
                j.wcnt[i] = count(j.m[i].rows, j.rpw[i]);
                warps += j.wcnt[i];
            }
        }
        for (int i = 0; i < 3; i++) if (j.y[i]) j.y[i] += (uint64_t)t0 * j.ldy[i] * sizeof(float);
        const float* xp = (const float*)x + (size_t)t0 * ldx;
        cudaError_t r;
        switch (nt) {
        case 8: r = launch_gemv<8>(j, xp, ldx, warps); break;
        case 4: r = launch_gemv<4>(j, xp, ldx, warps); break;
        case 2: r = launch_gemv<2>(j, xp, ldx, warps); break;
        default: r = launch_gemv<1>(j, xp, ldx, warps); break;
        }
        if (r != cudaSuccess) return fail("gemv_kernel launch", r);
        CKL("gemv_kernel");
        t0 += nt;
    }
    return 0;
}

LB_API int lb_embed(const lb_mat* m, uint64_t ids, int n, uint64_t out) {
    cudaError_t r = launch(embed_kernel, dim3(n), dim3(256), *m, (const int32_t*)ids, (float*)out);
    if (r != cudaSuccess) return fail("embed_kernel launch", r);
    CKL("embed_kernel");
    return 0;
}

LB_API int lb_dequant(const lb_mat* m, uint64_t out) {
    dequant_kernel<<<m->rows, 256, 0, g_stream>>>(*m, (float*)out);
    CKL("dequant_kernel");
    return 0;
}

LB_API int lb_rmsnorm(uint64_t x, uint64_t w, uint64_t out, int n, int dim, float eps, uint64_t xq, int cap) {
    if (dim > NORM_MAX) { snprintf(g_err, sizeof g_err, "rmsnorm of %d > %d values", dim, NORM_MAX); return -1; }
    if (xq && (n != 1 || (dim + 255) >> 8 > cap)) { snprintf(g_err, sizeof g_err, "rmsnorm: quantized output needs one row of <= %d blocks", cap); return -1; }
    if (!g_dp4a) xq = 0;
    if (n == 1) {
        cudaError_t r = launch(rmsnorm_mb_kernel<NORM_MB>, dim3((dim + 255) / 256), dim3(NORM_MB), (const float*)x, (const float*)w, (float*)out,
                               dim, eps, (uint8_t*)xq, cap);
        if (r != cudaSuccess) return fail("rmsnorm_mb_kernel launch", r);
        CKL("rmsnorm_mb_kernel");
        return 0;
    }
    cudaError_t r = launch(rmsnorm_kernel, dim3(n), dim3(NORM_THREADS), (const float*)x, (const float*)w, (float*)out, dim, eps,
                           (uint8_t*)xq, cap);
    if (r != cudaSuccess) return fail("rmsnorm_kernel launch", r);
    CKL("rmsnorm_kernel");
    return 0;
}

LB_API int lb_rope_store(uint64_t q, int ldq, uint64_t k, uint64_t v, int ldkv, uint64_t cosT, uint64_t sinT,
                         uint64_t kc, uint64_t vc, uint64_t pos0, int n, int H, int KVH, int D) {
    rope_store_kernel<<<n, 256, 0, g_stream>>>((float*)q, ldq, (const float*)k, (const float*)v, ldkv, (const float*)cosT, (const float*)sinT,
                                               (__half*)kc, (__half*)vc, (const int32_t*)pos0, H, KVH, D);
    CKL("rope_store_kernel");
    return 0;
}

LB_API int lb_attention(uint64_t q, uint64_t kc, uint64_t vc, uint64_t out, uint64_t pos0, int n, int H, int KVH, int D) {
    if (D > 256) { snprintf(g_err, sizeof g_err, "head_dim %d > 256 is not supported by the CUDA attention kernel", D); return -1; }
    cudaError_t r = launch(attention_kernel, dim3(H, n), dim3(32 * ATT_WARPS), (const float*)q, (__half*)kc, (__half*)vc, (float*)out,
                           (const int32_t*)pos0, H, KVH, D, (const float*)nullptr, (const float*)nullptr, (const float*)nullptr, (const float*)nullptr);
    if (r != cudaSuccess) return fail("attention_kernel launch", r);
    CKL("attention_kernel");
    return 0;
}

// one decode token: RoPE on q and k, the k/v cache store and attention in one launch; with xq
// (and dp4a decode on) the output is then quantized for wo by a quant_x launch of one-warp blocks
LB_API int lb_rope_attention(uint64_t q, uint64_t k, uint64_t v, uint64_t cosT, uint64_t sinT, uint64_t kc, uint64_t vc,
                             uint64_t out, uint64_t pos0, int H, int KVH, int D, uint64_t xq, int cap) {
    if (D > 256 || D % 2) { snprintf(g_err, sizeof g_err, "head_dim %d is not supported by the CUDA attention kernel", D); return -1; }
    if (xq && (H * D + 255) >> 8 > cap) { snprintf(g_err, sizeof g_err, "attention: quantized output needs <= %d blocks", cap); return -1; }
    if (!g_dp4a) xq = 0;
    cudaError_t r = launch(attn_decode_kernel, dim3(H), dim3(ATT_THREADS), (const float*)q, (__half*)kc, (__half*)vc, (float*)out,
                           (const int32_t*)pos0, H, KVH, D, (const float*)k, (const float*)v, (const float*)cosT, (const float*)sinT);
    if (r != cudaSuccess) return fail("attn_decode_kernel launch", r);
    CKL("attn_decode_kernel");
    if (xq) {
        const int nbx = (H * D + 255) >> 8;
        r = launch(quant_x_kernel, dim3(nbx), dim3(32), (const float*)out, H * D, (uint8_t*)xq, cap);
        if (r != cudaSuccess) return fail("quant_x_kernel launch", r);
        CKL("quant_x_kernel");
    }
    return 0;
}

// state: 2 zeroed 64-bit words (lb_malloc + lb_memset once); out: device view of mapped host memory or 0
LB_API int lb_argmax_next(uint64_t logits, int n, uint64_t state, uint64_t io, uint64_t out) {
    cudaError_t r = launch(argmax_kernel, dim3(ARGMAX_BLOCKS), dim3(ARGMAX_THREADS), (const float*)logits, n, (unsigned long long*)state,
                           (int32_t*)io, (int32_t*)out);
    if (r != cudaSuccess) return fail("argmax_kernel launch", r);
    CKL("argmax_kernel");
    return 0;
}
// pinned host memory the kernels can write (zero-copy): *host for the CPU, *dev for the kernels
LB_API int lb_host_alloc_mapped(uint64_t* host, uint64_t* dev, size_t n) {
    void* p;
    CK(cudaHostAlloc(&p, n, cudaHostAllocMapped));
    void* d = nullptr;
    cudaError_t r = cudaHostGetDevicePointer(&d, p, 0);
    if (r != cudaSuccess) { cudaFreeHost(p); return fail("cudaHostGetDevicePointer", r); }
    *host = (uint64_t)p; *dev = (uint64_t)d;
    return 0;
}
LB_API int lb_event_sync(uint64_t ev) { CK(cudaEventSynchronize((cudaEvent_t)ev)); return 0; }

// CUDA graphs: the decode step is captured once and replayed (positions come from device memory)
LB_API int lb_capture_begin(void) { CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal)); return 0; }
LB_API int lb_capture_end(uint64_t* exec) {
    cudaGraph_t g;
    CK(cudaStreamEndCapture(g_stream, &g));
    cudaGraphExec_t e;
    cudaError_t r = cudaGraphInstantiate(&e, g, 0);
    cudaGraphDestroy(g);
    if (r != cudaSuccess) return fail("cudaGraphInstantiate", r);
    CK(cudaGraphUpload(e, g_stream));   // the first launch then does not pay for the upload
    *exec = (uint64_t)e;
    return 0;
}
LB_API int lb_graph_launch(uint64_t exec) { CK(cudaGraphLaunch((cudaGraphExec_t)exec, g_stream)); return 0; }
LB_API int lb_graph_free(uint64_t exec) { CK(cudaGraphExecDestroy((cudaGraphExec_t)exec)); return 0; }

// timing with device events on the runtime's stream
LB_API int lb_event_new(uint64_t* ev) { cudaEvent_t e; CK(cudaEventCreate(&e)); *ev = (uint64_t)e; return 0; }
LB_API int lb_event_record(uint64_t ev) { CK(cudaEventRecord((cudaEvent_t)ev, g_stream)); return 0; }
LB_API int lb_event_ms(uint64_t a, uint64_t b, float* ms) { CK(cudaEventSynchronize((cudaEvent_t)b)); CK(cudaEventElapsedTime(ms, (cudaEvent_t)a, (cudaEvent_t)b)); return 0; }
LB_API int lb_event_free(uint64_t ev) { CK(cudaEventDestroy((cudaEvent_t)ev)); return 0; }
