// q8_0 and plain floats (f32, f16, bf16): row dot products and the q8_0 repack.

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

// plain floats, rows a multiple of 16 bytes: 16-byte loads (4 f32 or 8 f16/bf16 per unit)
template <int NT, int TY>
__device__ __forceinline__ void row_dot_float(const lb_mat& m, int row, const float* __restrict__ x, int ldx, int lane, float* acc) {
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    constexpr int PER = TY == LB_F32 ? 4 : 8;
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
                if (TY == LB_F32) w[i] = __uint_as_float(qw[i]);
                else if (TY == LB_F16) { w[2 * i] = h2f(qw[i]); w[2 * i + 1] = h2f(qw[i] >> 16); }
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

// q8_0: scales to the tail, quants to the body with each full 512-weight chunk permuted (q8_pos)
__global__ void repack_q8_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ body, uint16_t* __restrict__ tail, int rows, int cols) {
    const size_t words = (size_t)rows * (cols / 4);
    for (size_t wi = blockIdx.x * (size_t)blockDim.x + threadIdx.x; wi < words; wi += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(wi / (cols / 4)), c = (int)(wi % (cols / 4)) * 4;
        const uint8_t* blk = src + ((size_t)row * (cols / 32) + c / 32) * LB_Q8_0_BLOCK_BYTES;
        uint8_t* o = body + (size_t)row * cols + q8_pos(c, cols);
        for (int k = 0; k < 4; k++) o[k] = blk[2 + (c & 31) + k];
        if ((c & 31) == 0) tail[(size_t)row * (cols / 32) + c / 32] = blk[0] | (blk[1] << 8);
    }
}

