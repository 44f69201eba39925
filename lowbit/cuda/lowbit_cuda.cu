// lowbit's CUDA runtime: fused dequantize-GEMV for every tensor type, RMSNorm, RoPE, attention
// over an fp16 KV cache, SwiGLU, and a small C API (loaded from Python with cffi, ABI mode).
//
// Weights stay in their quantized layout on the GPU. Two types are repacked at load so that
// every weight load is a 16-byte aligned vector load (same bytes, split in two arrays):
//   q8_0: body = the 32 int8 quants of each block, row after row; tail = the fp16 scales.
//   q6_k: body = the first 208 bytes of each block (ql, qh, scales); tail = the fp16 d.
// q4_k blocks (144 bytes) are 16-byte multiples already and stay as in the file.
// Adding a type (q2_k, q3_k, q5_k): a row_dot_<type> function, a case in row_dot() and
// dequant_one(), and its entry in lowbit/cuda/layouts.py.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>

#define LB_API extern "C" __attribute__((visibility("default")))

enum { T_F32 = 0, T_F16 = 1, T_BF16 = 2, T_Q8_0 = 3, T_Q4_K = 4, T_Q6_K = 5,
       T_F32S = 16, T_F16S = 17, T_BF16S = 18 };   // *S: rows not a multiple of 16 bytes (scalar loads)

typedef struct {
    uint64_t body, tail, bias;     // device pointers (tail, bias may be 0)
    int32_t type, rows, cols, pad;
    uint64_t body_row, tail_row;   // bytes per row in body / tail
} lb_mat;

typedef struct {
    lb_mat m[3];
    uint64_t y[3];                 // float32 outputs, one per matrix
    int32_t ldy[3];
    int32_t nmat;
    int32_t mode;                  // 0 store (+bias), 1 accumulate y += W x, 2 y0 = silu(W0 x) * (W1 x)
    int32_t pad;
} lb_job;

static char g_err[512];
static cudaStream_t g_stream = 0;

static int fail(const char* what, cudaError_t e) {
    snprintf(g_err, sizeof g_err, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return (int)e ? (int)e : -1;
}
#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return fail(#call, e_); } while (0)
#define CKL(what) do { cudaError_t e_ = cudaGetLastError(); if (e_ != cudaSuccess) return fail(what, e_); } while (0)

// ------------------------------------------------------------------------------------ helpers

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
    constexpr int U = 4;
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
}

// q8_0 (repacked: int8 body + fp16 scales in the tail): lane reads 4 quants, the warp 128
template <int NT>
__device__ __forceinline__ void row_dot_q8_0(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint16_t* dt = (const uint16_t*)((const uint8_t*)m.tail + (size_t)row * m.tail_row);
    const int cols = m.cols;
    constexpr int U = 8;
    for (int c0 = 4 * lane; c0 < cols; c0 += 128 * U) {
        uint32_t q[U], db[U];
#pragma unroll
        for (int k = 0; k < U; k++) {
            int c = c0 + 128 * k;
            if (c < cols) { q[k] = __ldcs(reinterpret_cast<const unsigned int*>(base + c)); db[k] = __ldg(dt + (c >> 5)); }
        }
#pragma unroll
        for (int k = 0; k < U; k++) {
            int c = c0 + 128 * k;
            if (c >= cols) continue;
            float d = h2f(db[k]);
            float w0 = sext8(q[k], 0), w1 = sext8(q[k], 1), w2 = sext8(q[k], 2), w3 = sext8(q[k], 3);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float4 a = ldx4(x + (size_t)t * ldx + c);
                acc[t] += d * (w0 * a.x + w1 * a.y + w2 * a.z + w3 * a.w);
            }
        }
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

// one weight, any type (embedding rows, tests, and the scalar float path)
__device__ float dequant_one(const lb_mat& m, int row, int c) {
    const uint8_t* r = (const uint8_t*)m.body + (size_t)row * m.body_row;
    switch (m.type) {
    case T_F32: case T_F32S: return reinterpret_cast<const float*>(r)[c];
    case T_F16: case T_F16S: return h2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case T_BF16: case T_BF16S: return bf2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case T_Q8_0: {
        const uint16_t* dt = (const uint16_t*)((const uint8_t*)m.tail + (size_t)row * m.tail_row);
        return h2f(dt[c >> 5]) * (float)(int8_t)r[c];
    }
    case T_Q4_K: {
        const uint8_t* blk = r + (size_t)(c >> 8) * 144;
        int i = c & 255, j = i >> 6, hi = (i >> 5) & 1, l = i & 31, sc, mn;
        q4k_scale_min(2 * j + hi, blk + 4, sc, mn);
        uint8_t q = blk[16 + 32 * j + l];
        int v = hi ? (q >> 4) : (q & 15);
        uint32_t dd = blk[0] | (blk[1] << 8), dm = blk[2] | (blk[3] << 8);
        return h2f(dd) * sc * v - h2f(dm) * mn;
    }
    case T_Q6_K: {
        const uint16_t* dt = (const uint16_t*)((const uint8_t*)m.tail + (size_t)row * m.tail_row);
        const uint8_t* blk = r + (size_t)(c >> 8) * 208;
        int i = c & 255, n = i >> 7, quarter = (i >> 5) & 3, l = i & 31;
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
        return h2f(dt[c >> 8]) * s * (q - 32);
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
    case T_Q8_0: row_dot_q8_0<NT>(m, row, x, ldx, lane, acc); break;
    case T_F32: row_dot_float<NT, T_F32>(m, row, x, ldx, lane, acc); break;
    case T_F16: row_dot_float<NT, T_F16>(m, row, x, ldx, lane, acc); break;
    case T_BF16: row_dot_float<NT, T_BF16>(m, row, x, ldx, lane, acc); break;
    default: row_dot_scalar<NT>(m, row, x, ldx, lane, acc); break;
    }
}

// ------------------------------------------------------------------------------------- kernels

constexpr int GEMV_WARPS = 4;

// one warp per output row; the rows of up to 3 matrices (q, k, v) are laid end to end
template <int NT>
__global__ void __launch_bounds__(32 * GEMV_WARPS, NT == 1 ? 5 : 1) gemv_kernel(const lb_job job, const float* __restrict__ x, int ldx) {
    int warp = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    int mi = 0, row = warp;
    if (job.mode != 2)
        while (mi < job.nmat - 1 && row >= job.m[mi].rows) { row -= job.m[mi].rows; mi++; }
    const lb_mat m = mi == 0 ? job.m[0] : mi == 1 ? job.m[1] : job.m[2];   // no dynamic param indexing
    if (row >= m.rows) return;
    float a[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) a[t] = 0.f;
    row_dot<NT>(m, row, x, ldx, lane, a);
    if (job.mode == 2) {
        float b[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) b[t] = 0.f;
        row_dot<NT>(job.m[1], row, x, ldx, lane, b);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float g = warp_sum(a[t]), u = warp_sum(b[t]);
            if (job.m[0].bias) g += ((const float*)job.m[0].bias)[row];
            if (job.m[1].bias) u += ((const float*)job.m[1].bias)[row];
            if (lane == 0) ((float*)job.y[0])[(size_t)t * job.ldy[0] + row] = g / (1.f + __expf(-g)) * u;
        }
        return;
    }
    float* y = (float*)(mi == 0 ? job.y[0] : mi == 1 ? job.y[1] : job.y[2]);
    int ldy = mi == 0 ? job.ldy[0] : mi == 1 ? job.ldy[1] : job.ldy[2];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = warp_sum(a[t]);
        if (lane == 0) {
            if (m.bias) v += ((const float*)m.bias)[row];
            size_t o = (size_t)t * ldy + row;
            if (job.mode == 1) y[o] += v; else y[o] = v;
        }
    }
}

__global__ void embed_kernel(const lb_mat m, const int32_t* __restrict__ ids, float* __restrict__ out) {
    int t = blockIdx.x, row = ids[t];
    for (int c = threadIdx.x; c < m.cols; c += blockDim.x) out[(size_t)t * m.cols + c] = dequant_one(m, row, c);
}

__global__ void dequant_kernel(const lb_mat m, float* __restrict__ out) {
    int row = blockIdx.x;
    for (int c = threadIdx.x; c < m.cols; c += blockDim.x) out[(size_t)row * m.cols + c] = dequant_one(m, row, c);
}

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out, int dim, float eps) {
    __shared__ float part[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i] * xr[i];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
        v = warp_sum(v);
        if (threadIdx.x == 0) part[0] = rsqrtf(v / dim + eps);
    }
    __syncthreads();
    float inv = part[0];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)blockIdx.x * dim + i] = xr[i] * inv * w[i];
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

// causal grouped-query attention, one block (4 warps) per (head, token); online softmax per
// warp over a strided subset of positions, merged at the end. D <= 256.
constexpr int ATT_WARPS = 8;
__global__ void __launch_bounds__(32 * ATT_WARPS) attention_kernel(const float* __restrict__ q, const __half* __restrict__ kc, const __half* __restrict__ vc,
                                                                   float* __restrict__ out, const int32_t* __restrict__ pos0p, int H, int KVH, int D) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS], sm_acc[ATT_WARPS][256];
    int h = blockIdx.x, t = blockIdx.y, kvh = h / (H / KVH);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = *pos0p + t + 1;
    float scale = rsqrtf((float)D);
    float qv[8], acc[8];
#pragma unroll
    for (int e = 0; e < 8; e++) {
        int i = lane + 32 * e;
        qv[e] = i < D ? q[((size_t)t * H + h) * D + i] * scale : 0.f;
        acc[e] = 0.f;
    }
    float mx = -INFINITY, l = 0.f;
    __half kn[8], vn[8];   // the next position's k and v, loaded one step ahead
#pragma unroll
    for (int e = 0; e < 8; e++) { kn[e] = vn[e] = __float2half(0.f); }
    if (warp < len) {
#pragma unroll
        for (int e = 0; e < 8; e++) { int i = lane + 32 * e; if (i < D) { kn[e] = kc[((size_t)warp * KVH + kvh) * D + i]; vn[e] = vc[((size_t)warp * KVH + kvh) * D + i]; } }
    }
    for (int j = warp; j < len; j += ATT_WARPS) {
        float kf[8], vf[8];
#pragma unroll
        for (int e = 0; e < 8; e++) { kf[e] = __half2float(kn[e]); vf[e] = __half2float(vn[e]); }
        int jn = j + ATT_WARPS;
        if (jn < len) {
#pragma unroll
            for (int e = 0; e < 8; e++) { int i = lane + 32 * e; if (i < D) { kn[e] = kc[((size_t)jn * KVH + kvh) * D + i]; vn[e] = vc[((size_t)jn * KVH + kvh) * D + i]; } }
        }
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) s += qv[e] * kf[e];
        s = warp_sum(s);
        float mn = fmaxf(mx, s), corr = __expf(mx - mn), p = __expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] = acc[e] * corr + p * vf[e];
        mx = mn;
    }
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

// split each block into a 16-byte aligned body and a tail (q8_0, q6_k repacking at load)
__global__ void repack_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ body, uint8_t* __restrict__ tail, size_t nblocks,
                              int block_bytes, int body_off, int body_len, int tail_off, int tail_len) {
    for (size_t b = blockIdx.x * (size_t)blockDim.x + threadIdx.x; b < nblocks; b += (size_t)gridDim.x * blockDim.x) {
        const uint8_t* s = src + b * block_bytes;
        for (int i = 0; i < body_len; i++) body[b * body_len + i] = s[body_off + i];
        for (int i = 0; i < tail_len; i++) tail[b * tail_len + i] = s[tail_off + i];
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
    if (!g_stream) CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
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

LB_API int lb_repack(uint64_t src, uint64_t body, uint64_t tail, size_t nblocks, int block_bytes, int body_off, int body_len, int tail_off, int tail_len) {
    repack_kernel<<<1024, 256, 0, g_stream>>>((const uint8_t*)src, (uint8_t*)body, (uint8_t*)tail, nblocks, block_bytes, body_off, body_len, tail_off, tail_len);
    CKL("repack_kernel");
    return 0;
}

template <int NT>
static void launch_gemv(const lb_job& job, const float* x, int ldx, int warps) {
    int blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    gemv_kernel<NT><<<blocks, 32 * GEMV_WARPS, 0, g_stream>>>(job, x, ldx);
}

// y = W x for ntok tokens (x rows ldx floats apart), in chunks of at most 8 tokens per pass
LB_API int lb_gemv(const lb_job* job_in, uint64_t x, int ldx, int ntok) {
    lb_job job = *job_in;
    int warps = 0;
    if (job.mode == 2) warps = job.m[0].rows;
    else for (int i = 0; i < job.nmat; i++) warps += job.m[i].rows;
    for (int t0 = 0; t0 < ntok;) {
        int nt = ntok - t0 >= 8 ? 8 : ntok - t0 >= 4 ? 4 : ntok - t0 >= 2 ? 2 : 1;
        lb_job j = job;
        for (int i = 0; i < 3; i++) if (j.y[i]) j.y[i] += (uint64_t)t0 * j.ldy[i] * sizeof(float);
        const float* xp = (const float*)x + (size_t)t0 * ldx;
        switch (nt) {
        case 8: launch_gemv<8>(j, xp, ldx, warps); break;
        case 4: launch_gemv<4>(j, xp, ldx, warps); break;
        case 2: launch_gemv<2>(j, xp, ldx, warps); break;
        default: launch_gemv<1>(j, xp, ldx, warps); break;
        }
        CKL("gemv_kernel");
        t0 += nt;
    }
    return 0;
}

LB_API int lb_embed(const lb_mat* m, uint64_t ids, int n, uint64_t out) {
    embed_kernel<<<n, 256, 0, g_stream>>>(*m, (const int32_t*)ids, (float*)out);
    CKL("embed_kernel");
    return 0;
}

LB_API int lb_dequant(const lb_mat* m, uint64_t out) {
    dequant_kernel<<<m->rows, 256, 0, g_stream>>>(*m, (float*)out);
    CKL("dequant_kernel");
    return 0;
}

LB_API int lb_rmsnorm(uint64_t x, uint64_t w, uint64_t out, int n, int dim, float eps) {
    rmsnorm_kernel<<<n, 256, 0, g_stream>>>((const float*)x, (const float*)w, (float*)out, dim, eps);
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
    attention_kernel<<<dim3(H, n), 32 * ATT_WARPS, 0, g_stream>>>((const float*)q, (const __half*)kc, (const __half*)vc, (float*)out,
                                                                  (const int32_t*)pos0, H, KVH, D);
    CKL("attention_kernel");
    return 0;
}

// CUDA graphs: the decode step is captured once and replayed (positions come from device memory)
LB_API int lb_capture_begin(void) { CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal)); return 0; }
LB_API int lb_capture_end(uint64_t* exec) {
    cudaGraph_t g;
    CK(cudaStreamEndCapture(g_stream, &g));
    cudaGraphExec_t e;
    cudaError_t r = cudaGraphInstantiate(&e, g, 0);
    cudaGraphDestroy(g);
    if (r != cudaSuccess) return fail("cudaGraphInstantiate", r);
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

// the card's copy bandwidth: median-free mean over `iters` cudaMemcpy D2D of `bytes` bytes (after a warm-up)
LB_API int lb_bench_d2d(size_t bytes, int iters, float* ms_per_copy) {
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    cudaError_t r = cudaMalloc(&b, bytes);
    if (r != cudaSuccess) { cudaFree(a); return fail("cudaMalloc", r); }
    cudaMemsetAsync(a, 1, bytes, g_stream);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++) cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_stream);
    cudaEventRecord(e0, g_stream);
    for (int i = 0; i < iters; i++) cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, g_stream);
    cudaEventRecord(e1, g_stream);
    r = cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    cudaFree(a); cudaFree(b);
    if (r != cudaSuccess) return fail("bench_d2d", r);
    *ms_per_copy = ms / iters;
    return 0;
}
