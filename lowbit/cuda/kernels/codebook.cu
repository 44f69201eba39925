// Codebook types (cbk2, cbk4, d4l2; format_spec/types/codebook.md): one weight, the codebook GEMV
// (codebook in shared memory) and its launcher, and the index repack.

// w[b*B + v*D + j] = d_row * SCALE[s_b] * codebook[idx[b, v], j], SCALE[0] = 0, SCALE[s] =
// 2^((s - 255) / 16) (float32 of the double value, as the CPU's table). VQ_D/VQ_B: D and B of a type.
__host__ __device__ constexpr int VQ_D(int ty) { return ty == LB_CBK4 ? 2 : 4; }
__host__ __device__ constexpr int VQ_B(int ty) { return ty == LB_CBK2 ? 64 : 32; }
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

static int gemm_mma(const lb_job& job, uint64_t x, int ldx, int ntok);   // mma.cu (long prompt passes)
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
    constexpr int vq_types[] = {LB_CBK2, LB_CBK4, LB_D4L2};
    for (const int ty : vq_types) {
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
            cudaError_t r = ty == LB_CBK2 ? launch_vq_nt<LB_CBK2>(jt, xp, ldx, nt, blocks)
                          : ty == LB_CBK4 ? launch_vq_nt<LB_CBK4>(jt, xp, ldx, nt, blocks)
                                         : launch_vq_nt<LB_D4L2>(jt, xp, ldx, nt, blocks);
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
