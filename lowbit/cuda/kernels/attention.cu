// Attention over the fp16 KV cache: prompt passes (attention_kernel) and the fused decode step
// (RoPE, cache store and attention in one launch: attn_decode_kernel).

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
