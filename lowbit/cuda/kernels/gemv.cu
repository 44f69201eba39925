// Every type: one weight exactly (dequant_one: embedding rows, lb_dequant, the tensor-core tiles),
// the per-type row dot dispatch and the generic batched GEMV (float activations), the prompt
// activation rounding, embedding and dequantization kernels.

// one weight, any type (embedding rows, tests, and the scalar float path); exact: the spec's
// products in its order, no fused multiply-add (__fmul_rn/__fsub_rn are never contracted)
__device__ __forceinline__ float affine_w(float d, int sc, int q, float dmin, int mn) {
    return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)sc), (float)q), __fmul_rn(dmin, (float)mn));
}
__device__ float dequant_one(const lb_mat& m, int row, int c) {
    const uint8_t* r = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* mt = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    if (is_kquant(m.type) && c >= (m.cols & ~255))
        return tail_weight(m.type, (const uint8_t*)m.xtra + (size_t)row * m.xtra_row, m.cols & 255, c & 255);
    const int i = c & 255, b = c >> 8;
    switch (m.type) {
    case LB_F32: case T_F32S: return reinterpret_cast<const float*>(r)[c];
    case LB_F16: case T_F16S: return h2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case LB_BF16: case T_BF16S: return bf2f(reinterpret_cast<const uint16_t*>(r)[c]);
    case LB_Q8_0: {
        const uint16_t* dt = (const uint16_t*)mt;
        return __fmul_rn(h2f(dt[c >> 5]), (float)(int8_t)r[q8_pos(c, m.cols)]);
    }
    case LB_CBK2: case LB_CBK4: case LB_D4L2: return vq_weight(m, row, c);
    case LB_Q4_K: {
        const uint8_t* blk = r + (size_t)b * LB_Q4_K_BLOCK_BYTES;
        int j = i >> 6, hi = (i >> 5) & 1, l = i & 31, sc, mn;
        q4k_scale_min(2 * j + hi, blk + 4, sc, mn);
        uint8_t q = blk[16 + 32 * j + l];
        return affine_w(h2f(blk[0] | (blk[1] << 8)), sc, hi ? (q >> 4) : (q & 15), h2f(blk[2] | (blk[3] << 8)), mn);
    }
    case LB_Q5_K: {
        const uint8_t* blk = r + (size_t)b * LB_Q5_K_BLOCK_BYTES;
        int j = i >> 5, cc = i >> 6, hi = (i >> 5) & 1, l = i & 31, sc, mn;
        q4k_scale_min(j, blk + 4, sc, mn);
        int q = ((blk[48 + 32 * cc + l] >> (4 * hi)) & 15) | (((blk[16 + l] >> j) & 1) << 4);
        return affine_w(h2f(blk[0] | (blk[1] << 8)), sc, q, h2f(blk[2] | (blk[3] << 8)), mn);
    }
    case LB_Q2_K: {
        const uint8_t* blk = r + (size_t)b * 64;
        const uint8_t* t = mt + (size_t)b * 20;
        int h = i >> 7, j = (i >> 5) & 3, l = i & 31, s = t[i >> 4];
        int q = (blk[32 * h + l] >> (2 * j)) & 3;
        return affine_w(h2f(t[16] | (t[17] << 8)), s & 15, q, h2f(t[18] | (t[19] << 8)), s >> 4);
    }
    case LB_Q3_K: {
        const uint8_t* blk = r + (size_t)b * 96;
        const uint8_t* t = mt + (size_t)b * 14;
        int h = i >> 7, j = (i >> 5) & 3, l = i & 31, js = i >> 4;
        int low = (blk[32 + 32 * h + l] >> (2 * j)) & 3, high = (blk[l] >> (i >> 5)) & 1;
        int lo = js < 8 ? (t[js] & 15) : (t[js - 8] >> 4);
        int hs = (t[8 + (js & 3)] >> (2 * (js >> 2))) & 3;
        float d = h2f(t[12] | (t[13] << 8));
        return __fmul_rn(__fmul_rn(d, (float)((lo | (hs << 4)) - 32)), (float)(low - (high ? 0 : 4)));
    }
    case LB_Q6_K: {
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
    case LB_Q4_K: row_dot_q4k<NT>(m, row, x, ldx, lane, acc); break;
    case LB_Q6_K: row_dot_q6k<NT>(m, row, x, ldx, lane, acc); break;
    case LB_Q2_K: row_dot_k8<LB_Q2_K, NT>(m, row, x, ldx, lane, acc); break;
    case LB_Q3_K: row_dot_k8<LB_Q3_K, NT>(m, row, x, ldx, lane, acc); break;
    case LB_Q5_K: row_dot_k8<LB_Q5_K, NT>(m, row, x, ldx, lane, acc); break;
    case LB_Q8_0: row_dot_q8_0<NT>(m, row, x, ldx, lane, acc); break;
    case LB_F32: row_dot_float<NT, LB_F32>(m, row, x, ldx, lane, acc); break;
    case LB_F16: row_dot_float<NT, LB_F16>(m, row, x, ldx, lane, acc); break;
    case LB_BF16: row_dot_float<NT, LB_BF16>(m, row, x, ldx, lane, acc); break;
    default: row_dot_scalar<NT>(m, row, x, ldx, lane, acc); break;
    }
    if (m.xtra) row_dot_tail<NT>(m, row, x, ldx, lane, 32, acc);
}

// q4_k decode, four rows per 8-lane group (see gemv_kernel); the matrix is re-read from the job
// parameters after the dot product instead of being kept in registers across it
__device__ __forceinline__ void gemv_q4k_rows(const lb_job& job, int mi, int warp, int lane, const float* __restrict__ x) {
    __shared__ float red[2][GEMV_WARPS][4];
    const int S = job.ksplit, grp = warp / S, ks = warp - grp * S;   // S == GEMV_WARPS: the block's warps, in order
    float ab[2] = {0.f, 0.f};
    {
        const lb_mat& m = job_mat(job, mi);
        const int rr = min(4 * grp + (lane >> 3), m.rows - 1);
        const int nb = m.cols >> 8, kb0 = nb * ks / S, kb1 = nb * (ks + 1) / S;
        const uint8_t* b0 = (const uint8_t*)m.body + (size_t)rr * m.body_row + (size_t)kb0 * LB_Q4_K_BLOCK_BYTES;
        const float* xs = x + (size_t)kb0 * 256;
        if (job.mode == 2) dot_q4k_g8<2>(b0, (const uint8_t*)job.m[1].body + (size_t)rr * job.m[1].body_row + (size_t)kb0 * LB_Q4_K_BLOCK_BYTES, kb1 - kb0, xs, lane, ab);
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
    if (!(NT == 1 && (m.type == LB_Q8_0 || m.type == LB_Q6_K))) pdl_wait();
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

template <int NT>
static cudaError_t launch_gemv(const lb_job& job, const float* x, int ldx, int warps) {
    int blocks = (warps + GEMV_WARPS - 1) / GEMV_WARPS;
    return launch(gemv_kernel<NT>, dim3(blocks), dim3(32 * GEMV_WARPS), job, x, ldx);
}

static int rows_per_warp(int type, int nt) { return nt == 1 && type == LB_Q4_K ? 4 : 1; }

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
