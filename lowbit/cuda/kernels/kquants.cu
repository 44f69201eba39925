// k-quants (q2_k, q3_k, q4_k, q5_k, q6_k; format_spec/types/kquants.md): the float-activation row
// dot products, tail blocks, the q8_K activation quantizer (XQ) and the q4_k/q6_k dp4a decode
// GEMVs with their launchers, and the body/tail repack of q2_k, q3_k and q6_k blocks.

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
                const uint8_t* blk = base + (size_t)(b0 + k) * LB_Q4_K_BLOCK_BYTES;
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
                const uint8_t* blk = (mm ? base1 : base0) + (size_t)((B0) + k) * LB_Q4_K_BLOCK_BYTES;  \
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
    constexpr int BODY = TY == LB_Q2_K ? 64 : TY == LB_Q3_K ? 96 : LB_Q5_K_BLOCK_BYTES;
    constexpr int TAIL = TY == LB_Q2_K ? 20 : TY == LB_Q3_K ? 14 : 0;
    const uint8_t* base = (const uint8_t*)m.body + (size_t)row * m.body_row;
    const uint8_t* meta = (const uint8_t*)m.tail + (size_t)row * m.tail_row;
    const int nb = m.cols >> 8;
    const int l8 = 8 * (lane & 3);
    for (int b = 0; b < nb; b++) {
        const uint8_t* blk = base + (size_t)b * BODY;
        float A, B = 0.f;   // w = A * q - B for the lane's 8 weights
        uint32_t qlo, qhi;  // the 8 quants, one per byte (0..31)
        if (TY == LB_Q2_K) {
            const uint8_t* mt = meta + (size_t)b * TAIL;
            uint2 v = __ldcs(reinterpret_cast<const uint2*>(blk + 32 * (lane >> 4) + l8));
            int sh = 2 * ((lane >> 2) & 3);
            qlo = (v.x >> sh) & 0x03030303u; qhi = (v.y >> sh) & 0x03030303u;
            uint32_t sc = mt[lane >> 1];
            float d = h2f(mt[16] | (mt[17] << 8)), dmin = h2f(mt[18] | (mt[19] << 8));
            A = d * (float)(sc & 15); B = dmin * (float)(sc >> 4);
        } else if (TY == LB_Q3_K) {
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
    const bool k32 = type == LB_Q4_K || type == LB_Q5_K;
    const int S = k32 ? 32 : 16;
    const int bits = type == LB_Q2_K ? 2 : type == LB_Q3_K ? 3 : type == LB_Q4_K ? 4 : type == LB_Q5_K ? 5 : 6;
    const int nsub = (r + S - 1) / S, j = i / S;
    float d = h2f(tb[0] | (tb[1] << 8));
    const bool affine = type == LB_Q2_K || k32;
    float dmin = affine ? h2f(tb[2] | (tb[3] << 8)) : 0.f;
    const uint8_t* sc = tb + (affine ? 4 : 2);
    const uint8_t* qp = sc + (k32 ? 2 * nsub : nsub);
    int q = tail_bits(qp, i, bits);
    switch (type) {
    case LB_Q2_K: { int s = sc[j]; return __fsub_rn(__fmul_rn(__fmul_rn(d, (float)(s & 15)), (float)q), __fmul_rn(dmin, (float)(s >> 4))); }
    case LB_Q3_K: return __fmul_rn(__fmul_rn(d, (float)(sc[j] - 32)), (float)(q - 4));
    case LB_Q6_K: return __fmul_rn(__fmul_rn(d, (float)(int8_t)sc[j]), (float)(q - 32));
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
    const bool q4 = m.type == LB_Q4_K;
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
    const size_t off = (size_t)kb0 * LB_Q4_K_BLOCK_BYTES + 16 + 32 * ((lane & 7) >> 1) + 16 * (lane & 1);
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
                const uint8_t* qp = (P)[mm] + (size_t)((B0) + k) * LB_Q4_K_BLOCK_BYTES;            \
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
    cudaError_t r = type == LB_Q6_K ? launch(gemv_q6k_q8_kernel<2>, grid, block, j, (const float*)0)
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
        if (job.m[0].type != LB_Q4_K || job.m[1].type != LB_Q4_K || job.m[0].cols != job.m[1].cols) { *rest = job; return 0; }
        j4.nmat = 2;
    } else {
        for (int i = 0; i < job.nmat; i++) {
            const int t = job.m[i].type;
            lb_job& d = t == LB_Q4_K ? j4 : t == LB_Q6_K ? j6 : *rest;
            d.m[d.nmat] = job.m[i]; d.y[d.nmat] = job.y[i]; d.ldy[d.nmat] = job.ldy[i]; d.nmat++;
        }
    }
    if (j4.nmat || j6.nmat) { int rc = quant_x_once(job, x, &quantized); if (rc) return rc; }
    j4.ksplit = job.mode == 2 ? ROWS_GU : ROWS_Q4;   // rows per group (in the ksplit field)
    j6.ksplit = ROWS_Q6;
    if (j4.nmat && j6.nmat && j4.ksplit == 8 && j6.ksplit == 8) return launch_q46(j4, j6);   // (its bodies: 8 rows)
    if (j4.nmat) { int rc = launch_q8act(j4, LB_Q4_K); if (rc) return rc; }
    if (j6.nmat) { int rc = launch_q8act(j6, LB_Q6_K); if (rc) return rc; }
    return 0;
}
