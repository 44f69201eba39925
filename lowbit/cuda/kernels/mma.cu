// Prompt passes on tensor cores (WMMA): a GEMM over any type's weights, dequantized per tile.

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
