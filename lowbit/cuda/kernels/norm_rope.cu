// RMSNorm (prompt rows and the decode row, which also quantizes its output for the dp4a GEMVs)
// and RoPE with the KV-cache store for prompt passes.

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
