/* ---------------------------------------------------------------- k-quants (q2_k .. q6_k)

   format_spec/types/kquants.md: super-blocks of 256 weights (GGML's layouts) and a lowbit-only tail
   block for the last cols % 256 weights of a row. Every k-quant weight is written here as
       w = dd * sc * u - dm * mn        (u: unsigned quant, sc/mn: small integers per 16 weights)
   affine types (q2_k, q4_k, q5_k): dd = d, dm = dmin, mn = the sub-block min; symmetric types
   (q3_k, q6_k): u = q + off (off 4 or 32), dd = dm = d, mn = off * sc. A tile of 4 weight rows is
   unpacked once into that form (u bytes, scales widened to one int16 per pair of weights) and then
   meets every token of the input: activations are quantized once per matmul input to 8-bit blocks
   of 256 (GGML's q8_K: int8, a float scale, int16 sums per 16 for the min term), so a block's dot
   product is maddubs(u, x) -> int16 pairs times the scale (vpdpwssd / pmaddwd) in integers, and
   the min term is sum(mn * bsum) per 16. Tail blocks unpack to the same form, zero-padded to 256. */

#define QKK LB_Q4_K_BLOCK_SIZE   /* every k-quant's super-block, and the activations' 8-bit blocks */
#define PF_BYTES 16384   /* decode kernels: software prefetch distance (see PF_BLOCK) */

/* The kernels spell out GGML's super-block layouts (field offsets, 256 weights, kind = id - LB_Q2_K + 2):
   the generated type header must agree with them. */
_Static_assert(LB_Q3_K == LB_Q2_K + 1 && LB_Q4_K == LB_Q2_K + 2 && LB_Q5_K == LB_Q2_K + 3 && LB_Q6_K == LB_Q2_K + 4,
               "k-quant ids are consecutive, q2_k to q6_k");
_Static_assert(LB_Q2_K_BLOCK_SIZE == 256 && LB_Q3_K_BLOCK_SIZE == 256 && LB_Q4_K_BLOCK_SIZE == 256 &&
               LB_Q5_K_BLOCK_SIZE == 256 && LB_Q6_K_BLOCK_SIZE == 256, "k-quant super-blocks of 256 weights");
_Static_assert(LB_Q2_K_BLOCK_BYTES == 84, "q2_k: scales[16], qs[64], d, dmin");
_Static_assert(LB_Q3_K_BLOCK_BYTES == 110, "q3_k: hmask[32], qs[64], scales[12], d");
_Static_assert(LB_Q4_K_BLOCK_BYTES == 144, "q4_k: d, dmin, scales[12], qs[128]");
_Static_assert(LB_Q5_K_BLOCK_BYTES == 176, "q5_k: d, dmin, scales[12], qh[32], qs[128]");
_Static_assert(LB_Q6_K_BLOCK_BYTES == 210, "q6_k: ql[128], qh[64], scales[16], d");

static int kq_kind(int type) { return type >= LB_Q2_K && type <= LB_Q6_K ? type - LB_Q2_K + 2 : 0; }

/* kind -> sub-block size, bits, affine, super-block bytes, offset of symmetric quants */
static const int KQ_S[7] = {0, 0, 16, 16, 32, 32, 16};
static const int KQ_BITS[7] = {0, 0, 2, 3, 4, 5, 6};
static const int KQ_AFFINE[7] = {0, 0, 1, 0, 1, 1, 0};
static const int KQ_BYTES[7] = {0, 0, LB_Q2_K_BLOCK_BYTES, LB_Q3_K_BLOCK_BYTES, LB_Q4_K_BLOCK_BYTES,
                                LB_Q5_K_BLOCK_BYTES, LB_Q6_K_BLOCK_BYTES};
static const int KQ_OFF[7] = {0, 0, 0, 4, 0, 0, 32};

static int64_t kq_tail_bytes(int kind, int64_t r) {
    int64_t S = KQ_S[kind], nsub = (r + S - 1) / S;
    int64_t scale_bytes = (kind == 4 || kind == 5) ? 2 * nsub : nsub;
    return (KQ_AFFINE[kind] ? 4 : 2) + scale_bytes + nsub * S * KQ_BITS[kind] / 8;
}

static int64_t kq_row_bytes(int kind, int64_t cols) {
    int64_t rem = cols % QKK;
    return cols / QKK * KQ_BYTES[kind] + (rem ? kq_tail_bytes(kind, rem) : 0);
}

static inline void k4_scale_min(const uint8_t *K, int j, int *sc, int *m) {
    if (j < 4) { *sc = K[j] & 63; *m = K[j + 4] & 63; }
    else { *sc = (K[j + 4] & 15) | ((K[j - 4] >> 6) << 4); *m = (K[j + 4] >> 4) | ((K[j] >> 6) << 4); }
}

/* One whole super-block -> u[256], per-16 scale sc[16] and min mn[16], dd, dm. */
static void kq_unpack_full(int kind, const uint8_t *p, uint8_t *u, int16_t *sc, int16_t *mn, float *dd, float *dm) {
    switch (kind) {
    case 2: {
        const uint8_t *qs = p + 16;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) u[128 * h + 32 * j + l] = (qs[32 * h + l] >> (2 * j)) & 3;
        for (int j = 0; j < 16; j++) { sc[j] = p[j] & 15; mn[j] = p[j] >> 4; }
        *dd = fp16_to_f32(rd16(p + 80)); *dm = fp16_to_f32(rd16(p + 82));
        break;
    }
    case 3: {
        const uint8_t *hm = p, *qs = p + 32, *s = p + 96;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++)
                    u[128 * h + 32 * j + l] = ((qs[32 * h + l] >> (2 * j)) & 3) | (((hm[l] >> (4 * h + j)) & 1) << 2);
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4, hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            sc[j] = (int16_t)((lo | (hi << 4)) - 32);
            mn[j] = (int16_t)(4 * sc[j]);
        }
        *dd = *dm = fp16_to_f32(rd16(p + 108));
        break;
    }
    case 4: case 5: {
        const uint8_t *qs = p + (kind == 4 ? 16 : 48), *qh = p + 16;
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                u[64 * c + l] = qs[32 * c + l] & 15;
                u[64 * c + 32 + l] = qs[32 * c + l] >> 4;
            }
        if (kind == 5)
            for (int j = 0; j < 8; j++)
                for (int l = 0; l < 32; l++) u[32 * j + l] |= ((qh[l] >> j) & 1) << 4;
        for (int j = 0; j < 8; j++) {
            int s, m;
            k4_scale_min(p + 4, j, &s, &m);
            sc[2 * j] = sc[2 * j + 1] = (int16_t)s;
            mn[2 * j] = mn[2 * j + 1] = (int16_t)m;
        }
        *dd = fp16_to_f32(rd16(p)); *dm = fp16_to_f32(rd16(p + 2));
        break;
    }
    case 6: {
        const uint8_t *ql = p, *qh = p + 128;
        for (int h = 0; h < 2; h++)   /* written per l with fixed shifts so that it vectorizes */
            for (int l = 0; l < 32; l++) {
                const uint8_t a = ql[64 * h + l], b = ql[64 * h + 32 + l], c = qh[32 * h + l];
                u[128 * h + l] = (a & 15) | ((c & 3) << 4);
                u[128 * h + 32 + l] = (b & 15) | (((c >> 2) & 3) << 4);
                u[128 * h + 64 + l] = (a >> 4) | (((c >> 4) & 3) << 4);
                u[128 * h + 96 + l] = (b >> 4) | ((c >> 6) << 4);
            }
        for (int j = 0; j < 16; j++) { sc[j] = (int8_t)p[192 + j]; mn[j] = (int16_t)(32 * sc[j]); }
        *dd = *dm = fp16_to_f32(rd16(p + 208));
        break;
    }
    }
}

/* The tail block of r (< 256) weights, zero-padded to 256: plainly bit-packed quants. */
static void kq_unpack_tail(int kind, const uint8_t *p, int r, uint8_t *u, int16_t *sc, int16_t *mn, float *dd, float *dm) {
    const int S = KQ_S[kind], bits = KQ_BITS[kind], nsub = (r + S - 1) / S, mask = (1 << bits) - 1;
    const uint8_t *q = p + 2;
    float d = fp16_to_f32(rd16(p)), dmin = 0.f;
    if (KQ_AFFINE[kind]) { dmin = fp16_to_f32(rd16(q)); q += 2; }
    const uint8_t *qs = q + ((kind == 4 || kind == 5) ? 2 * nsub : nsub);
#if defined(LB_AVX512) || defined(LB_AVX2)
    /* 8 quants fill `bits` whole bytes: one pdep spreads them to 8 bytes (read from a copy, so
       that the 8-byte loads stay inside our memory) */
    uint8_t buf[QKK * 6 / 8 + 8];
    memcpy(buf, qs, nsub * S * bits / 8);
    const uint64_t spread = 0x0101010101010101ULL * (uint64_t)mask;
    for (int g = 0; g < nsub * S / 8; g++) {
        uint64_t v;
        memcpy(&v, buf + g * bits, 8);
        v = _pdep_u64(v, spread);
        memcpy(u + 8 * g, &v, 8);
    }
#else
    for (int g = 0; g < nsub * S / 8; g++) {   /* 8 quants fill `bits` whole bytes */
        uint64_t v = 0;
        for (int i = 0; i < bits; i++) v |= (uint64_t)qs[g * bits + i] << (8 * i);
        for (int k = 0; k < 8; k++) u[8 * g + k] = (uint8_t)((v >> (bits * k)) & mask);
    }
#endif
    for (int i = r; i < QKK; i++) u[i] = 0;
    for (int j16 = 0; j16 < 16; j16++) {
        int j = j16 * 16 / S, s = 0, m = 0;
        if (j < nsub) {
            switch (kind) {
            case 2: s = q[j] & 15; m = q[j] >> 4; break;
            case 3: s = q[j] - 32; m = 4 * s; break;
            case 4: case 5: s = q[j]; m = q[nsub + j]; break;
            case 6: s = (int8_t)q[j]; m = 32 * s; break;
            }
        }
        sc[j16] = (int16_t)s;
        mn[j16] = (int16_t)m;
    }
    *dd = d;
    *dm = KQ_AFFINE[kind] ? dmin : d;
}

/* A weight row unpacked for the dot kernels: per 256-block u[256], scx[128] (the scale of each
   pair of weights), mn[16], dd, dm. */
typedef struct { uint8_t *u; int16_t *scx, *mn; float *dd, *dm; } kq_row;

static size_t kq_row_scratch(int64_t nb) { return (size_t)nb * (QKK + 2 * 128 + 2 * 16 + 8) + 64; }

static kq_row kq_row_at(uint8_t *buf, int64_t nb) {
    kq_row R;
    R.u = buf;
    R.scx = (int16_t *)(buf + nb * QKK);
    R.mn = R.scx + nb * 128;
    R.dd = (float *)(R.mn + nb * 16);
    R.dm = R.dd + nb;
    return R;
}

static void kq_widen_scales(const int16_t *sc, int16_t *scx) {
#if defined(LB_AVX512)
    static const int16_t iota[32] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                     16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    const __m512i s = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)sc));
    const __m512i base = _mm512_srli_epi16(_mm512_loadu_si512(iota), 3);
    for (int c = 0; c < 4; c++)
        _mm512_storeu_si512(scx + 32 * c, _mm512_permutexvar_epi16(_mm512_add_epi16(base, _mm512_set1_epi16(4 * c)), s));
#elif defined(LB_AVX2)
    for (int h = 0; h < 2; h++) {
        const __m256i s = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(sc + 8 * h)));
        for (int c = 0; c < 4; c++) {
            const __m256i m = _mm256_set_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * (2 * c + 1))),
                                               _mm_set1_epi16((short)(0x0100 + 0x0202 * (2 * c))));
            _mm256_storeu_si256((__m256i *)(scx + 64 * h + 16 * c), _mm256_shuffle_epi8(s, m));
        }
    }
#else
    for (int i = 0; i < 128; i++) scx[i] = sc[i >> 3];
#endif
}

static void kq_unpack_row(int kind, const uint8_t *p, int64_t cols, kq_row R) {
    const int64_t nfull = cols / QKK, rem = cols % QKK;
    int16_t sc[16];
    for (int64_t b = 0; b < nfull; b++) {
        kq_unpack_full(kind, p + b * KQ_BYTES[kind], R.u + b * QKK, sc, R.mn + b * 16, R.dd + b, R.dm + b);
        kq_widen_scales(sc, R.scx + b * 128);
    }
    if (rem) {
        kq_unpack_tail(kind, p + nfull * KQ_BYTES[kind], (int)rem, R.u + nfull * QKK, sc, R.mn + nfull * 16,
                       R.dd + nfull, R.dm + nfull);
        kq_widen_scales(sc, R.scx + nfull * 128);
    }
}

/* Dequantize one row (embedding lookup): the spec's formulas, in its float32 order. */
static void kq_dequant_row(int kind, const uint8_t *p, int64_t cols, float *out) {
    uint8_t u[QKK];
    int16_t sc[16], mn[16];
    float dd, dm;
    const int off = KQ_OFF[kind];
    for (int64_t b = 0; b * QKK < cols; b++) {
        int64_t n = cols - b * QKK < QKK ? cols - b * QKK : QKK;
        if (n == QKK) kq_unpack_full(kind, p + b * KQ_BYTES[kind], u, sc, mn, &dd, &dm);
        else kq_unpack_tail(kind, p + b * KQ_BYTES[kind], (int)n, u, sc, mn, &dd, &dm);
        float *o = out + b * QKK;
        for (int i = 0; i < n; i++) {
            volatile float ds = dd * (float)sc[i >> 4];   /* volatile: no fused multiply-add, as the spec says */
            if (KQ_AFFINE[kind]) { volatile float a = ds * (float)u[i], m = dm * (float)mn[i >> 4]; o[i] = a - m; }
            else o[i] = ds * (float)(u[i] - off);
        }
    }
}

/* Activations for k-quants: blocks of 256 (the last one zero-padded), scale amax/127, and the sum
   of each 16 quants (the min term). */
static void quantize_row_qk(const float *x, int64_t cols, int8_t *qs, float *d, int16_t *bs, int8_t *qp, int8_t *qp2) {
    for (int64_t b = 0; b * QKK < cols; b++) {
        const int64_t n = cols - b * QKK < QKK ? cols - b * QKK : QKK;
        const float *xb = x + b * QKK;
        int8_t *q = qs + b * QKK;
#if defined(LB_AVX512)
        {   /* the same arithmetic 16 lanes at a time (vcvtps2dq rounds to nearest even, like lrintf) */
            __m512 v[16], mx = _mm512_setzero_ps();
            for (int j = 0; j < 16; j++) {
                const int64_t left = n - 16 * j;
                const __mmask16 m = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
                v[j] = _mm512_maskz_loadu_ps(m, xb + 16 * j);
                mx = _mm512_max_ps(mx, _mm512_abs_ps(v[j]));
            }
            const float s = _mm512_reduce_max_ps(mx) / 127.f, inv = s ? 1.f / s : 0.f;
            d[b] = s;
            for (int j = 0; j < 16; j++) {
                const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(v[j], _mm512_set1_ps(inv)));
                _mm_storeu_si128((__m128i *)(q + 16 * j), _mm512_cvtsepi32_epi8(qi));
                bs[b * 16 + j] = (int16_t)_mm512_reduce_add_epi32(qi);
            }
            /* the decode kernels' orders of the 32-weight units: q4_k/q5_k 0 2 1 3 4 6 5 7 (see
               dot4_q45k_512), q2_k/q3_k 0 4 1 5 2 6 3 7 (see dot4_q2k_512) */
            if (qp)
                for (int j = 0; j < 8; j++)
                    memcpy(qp + b * QKK + 32 * j, q + 32 * ((j & 4) | ((j & 1) << 1) | ((j >> 1) & 1)), 32);
            if (qp2)
                for (int j = 0; j < 8; j++) memcpy(qp2 + b * QKK + 32 * j, q + 32 * ((j >> 1) + 4 * (j & 1)), 32);
            continue;
        }
#endif
        float amax = 0.f;
        for (int64_t i = 0; i < n; i++) { float a = fabsf(xb[i]); amax = a > amax ? a : amax; }
        float s = amax / 127.f, inv = s ? 1.f / s : 0.f;
        d[b] = s;
        for (int64_t i = 0; i < n; i++) q[i] = (int8_t)lrintf(xb[i] * inv);
        for (int64_t i = n; i < QKK; i++) q[i] = 0;
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += q[16 * j + i];
            bs[b * 16 + j] = (int16_t)sum;
        }
    }
}

static void dot4_kq(const kq_row R[4], const int8_t *xq, const float *xd, const int16_t *bs, int64_t nb, float out[4]) {
    float s[4] = {0, 0, 0, 0};
#if defined(LB_AVX512)
    __m512 accf[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    __m256 accm[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
        for (int c = 0; c < 4; c++) {
            const __m512i xv = _mm512_loadu_si512(xq + b * QKK + 64 * c);
            for (int r = 0; r < 4; r++) {
                __m512i p = _mm512_maddubs_epi16(_mm512_loadu_si512(R[r].u + b * QKK + 64 * c), xv);
                acc[r] = _mm512_dpwssd_epi32(acc[r], p, _mm512_loadu_si512(R[r].scx + b * 128 + 32 * c));
            }
        }
        const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
        for (int r = 0; r < 4; r++) {
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_set1_ps(R[r].dd[b] * xd[b]), accf[r]);
            __m256i mv = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(R[r].mn + b * 16)), bsv);
            accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mv), _mm256_set1_ps(R[r].dm[b] * xd[b]), accm[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float t[8];
        _mm256_storeu_ps(t, accm[r]);
        s[r] = _mm512_reduce_add_ps(accf[r]);
        for (int j = 0; j < 8; j++) s[r] -= t[j];
    }
#elif defined(LB_AVX2)
    __m256 accf[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 accm[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int c = 0; c < 8; c++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + b * QKK + 32 * c));
            for (int r = 0; r < 4; r++) {
                __m256i p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(R[r].u + b * QKK + 32 * c)), xv);
                acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, _mm256_loadu_si256((const __m256i *)(R[r].scx + b * 128 + 16 * c))));
            }
        }
        const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
        for (int r = 0; r < 4; r++) {
            accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_set1_ps(R[r].dd[b] * xd[b]), accf[r]);
            __m256i mv = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(R[r].mn + b * 16)), bsv);
            accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mv), _mm256_set1_ps(R[r].dm[b] * xd[b]), accm[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float t[8], m[8];
        _mm256_storeu_ps(t, accf[r]);
        _mm256_storeu_ps(m, accm[r]);
        for (int j = 0; j < 8; j++) s[r] += t[j] - m[j];
    }
#else
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *x = xq + b * QKK;
        for (int r = 0; r < 4; r++) {
            const uint8_t *u = R[r].u + b * QKK;
            const int16_t *scx = R[r].scx + b * 128, *mn = R[r].mn + b * 16;
            int32_t acc = 0, macc = 0;
            for (int i = 0; i < 128; i++) acc += (u[2 * i] * x[2 * i] + u[2 * i + 1] * x[2 * i + 1]) * scx[i];
            for (int j = 0; j < 16; j++) macc += mn[j] * bs[b * 16 + j];
            s[r] += R[r].dd[b] * xd[b] * (float)acc - R[r].dm[b] * xd[b] * (float)macc;
        }
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = s[r];
}


/* Decoding (one or two tokens): whole super-blocks go straight from the map into the integer dot,
   without the unpacked copy: q4_k and q6_k in GGML's AVX2 scheme (256-bit) here, every k-quant in
   the AVX-512 kernels below (dot4_*_512), which kq_direct() prefers. */
#if defined(LB_AVX512) || defined(LB_AVX2)
#if defined(LB_AVX512)
#define MADD_ACC(acc, p, s) _mm256_dpwssd_epi32(acc, p, s)
#else
#define MADD_ACC(acc, p, s) _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
#endif
#if defined(LB_AVX512)
/* Prompts: an unpacked 4-row tile against nt (1..KQ_NT) tokens at once, so each loaded weight and
   scale vector serves every token and each activation vector every row. xq/xd/bs: the first
   token's blocks; tokens are xs apart (xs bytes of quants, xs / QKK scales, xs / 16 sums). */
#define KQ_NT 4
static inline __attribute__((always_inline)) void dot_kq_tile(const kq_row R[4], const int8_t *xq, const float *xd,
                                                              const int16_t *bs, int64_t nb, const int nt,
                                                              float out[KQ_NT][4]) {
    const int64_t xs = nb * QKK;
    __m256 accm[KQ_NT][4];
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < 4; r++) accm[t][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++)   /* the min terms: sum(mn * bsum) per 16, a 16th of the work */
        for (int r = 0; r < 4; r++) {
            const __m256i mn = _mm256_loadu_si256((const __m256i *)(R[r].mn + b * 16));
            for (int t = 0; t < nt; t++) {
                const __m256i mv = _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)(bs + t * (xs / 16) + b * 16)));
                accm[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mv), _mm256_set1_ps(R[r].dm[b] * xd[t * nb + b]), accm[t][r]);
            }
        }
    __m512 accf[KQ_NT][4];
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < 4; r++) accf[t][r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i acc[KQ_NT][4];
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < 4; r++) acc[t][r] = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            __m512i xv[KQ_NT];
            for (int t = 0; t < nt; t++) xv[t] = _mm512_loadu_si512(xq + t * xs + b * QKK + 64 * c);
            for (int r = 0; r < 4; r++) {
                const __m512i u = _mm512_loadu_si512(R[r].u + b * QKK + 64 * c);
                const __m512i sc = _mm512_loadu_si512(R[r].scx + b * 128 + 32 * c);
                for (int t = 0; t < nt; t++)
                    acc[t][r] = _mm512_dpwssd_epi32(acc[t][r], _mm512_maddubs_epi16(u, xv[t]), sc);
            }
        }
        __m512 ddv[4];
        for (int r = 0; r < 4; r++) ddv[r] = _mm512_set1_ps(R[r].dd[b]);
        for (int t = 0; t < nt; t++) {
            const __m512 xdv = _mm512_set1_ps(xd[t * nb + b]);
            for (int r = 0; r < 4; r++)
                accf[t][r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[t][r]), ddv[r]), xdv, accf[t][r]);
        }
    }
    __m512 v[16];
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++)
            v[4 * t + r] = t < nt ? _mm512_sub_ps(accf[t][r], _mm512_zextps256_ps512(accm[t][r])) : _mm512_setzero_ps();
    _mm512_storeu_ps(&out[0][0], hsum16x16(v));
}
#endif

/* Software prefetch of a tile ahead (pf: its first byte), pfs bytes per block of this one: the
   hardware prefetchers alone leave decoding well short of the memory bandwidth (measured per
   type with tools/bench/bench_decode_kernels.py). */
#define PF_BLOCK(pf, b, pfs)                                                                   \
    for (int64_t o_ = 0; o_ < (pfs); o_ += 64) _mm_prefetch((const char *)(pf) + (b) * (pfs) + o_, _MM_HINT_T0)

static void dot4_q4k(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                     const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xp;
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    __m256 accf[4], accm[4];
    for (int r = 0; r < 4; r++) accf[r] = accm[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xq + b * QKK;
        const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
        __m256i sc[4], acc[4];
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * 144;
            uint32_t ut[4];
            memcpy(ut, p + 4, 12);   /* GGML's unpacking of the 12 scale bytes: 8 scales, then 8 mins */
            ut[3] = ((ut[2] >> 4) & 0x0f0f0f0f) | (((ut[1] >> 6) & 0x03030303) << 4);
            const uint32_t aux = ut[1] & 0x3f3f3f3f;
            ut[1] = (ut[2] & 0x0f0f0f0f) | (((ut[0] >> 6) & 0x03030303) << 4);
            ut[2] = aux;
            ut[0] &= 0x3f3f3f3f;
            const __m128i sm = _mm_set_epi32((int)ut[3], (int)ut[2], (int)ut[1], (int)ut[0]);
            sc[r] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
            const __m256i mn = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_srli_si128(sm, 8), dup));
            accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mn, bsv)),
                                      _mm256_set1_ps(fp16_to_f32(rd16(p + 2)) * xd[b]), accm[r]);
            acc[r] = _mm256_setzero_si256();
        }
        for (int c = 0; c < 4; c++) {
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x + 64 * c));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x + 64 * c + 32));
            const __m256i s0 = _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * c)));
            const __m256i s1 = _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * c + 1)));
            for (int r = 0; r < 4; r++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(w[r] + b * 144 + 16 + 32 * c));
                const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                acc[r] = MADD_ACC(acc[r], _mm256_maddubs_epi16(lo, x0), _mm256_shuffle_epi8(sc[r], s0));
                acc[r] = MADD_ACC(acc[r], _mm256_maddubs_epi16(hi, x1), _mm256_shuffle_epi8(sc[r], s1));
            }
        }
        for (int r = 0; r < 4; r++)
            accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_set1_ps(fp16_to_f32(rd16(w[r] + b * 144)) * xd[b]), accf[r]);
    }
    for (int r = 0; r < 4; r++) out[r] = hsum256(accf[r]) - hsum256(accm[r]);
}

static void dot4_q6k(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                     const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xp;
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 accf[4];
    for (int r = 0; r < 4; r++) accf[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xq + b * QKK;
        const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
        __m128i sc[4];
        __m256i acc[4];
        for (int r = 0; r < 4; r++) {
            sc[r] = _mm_loadu_si128((const __m128i *)(w[r] + b * 210 + 192));
            /* q = u - 32: subtract 32 * sum(scale * bsum) up front */
            acc[r] = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc[r]), bsv)), 5);
        }
        for (int h = 0; h < 2; h++) {
            __m256i xv[4];
            for (int k = 0; k < 4; k++) xv[k] = _mm256_loadu_si256((const __m256i *)(x + 128 * h + 32 * k));
            for (int r = 0; r < 4; r++) {
                const uint8_t *p = w[r] + b * 210;
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
                const __m256i b2 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
                const __m256i bh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_slli_epi16(_mm256_and_si256(bh, m3), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(b2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m3), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m3), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m3), 4));
                for (int k = 0; k < 4; k++) {
                    const int j = 2 * (4 * h + k);   /* sub-blocks j, j+1 of 16 */
                    const __m128i pick = _mm_set_epi64x((long long)(0x0101010101010101ULL * (j + 1)), (long long)(0x0101010101010101ULL * j));
                    acc[r] = MADD_ACC(acc[r], _mm256_maddubs_epi16(q[k], xv[k]), _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc[r], pick)));
                }
            }
        }
        for (int r = 0; r < 4; r++)
            accf[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_set1_ps(fp16_to_f32(rd16(w[r] + b * 210 + 208)) * xd[b]), accf[r]);
    }
    for (int r = 0; r < 4; r++) out[r] = hsum256(accf[r]);
}

static inline int32_t hsum256_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The q4_k tail block (plain nibbles, low nibble first) straight from the map: 16 bytes widen to
   32 quants in order. x, xd, bs: the activation block the tail meets. */
static void dot4_q4k_tail(const uint8_t *const w[4], int rem, const int8_t *x, float xd, const int16_t *bs, float out[4]) {
    const int nsub = (rem + 31) / 32;
    const __m256i m4 = _mm256_set1_epi16(0x000f);
    for (int r = 0; r < 4; r++) {
        const uint8_t *p = w[r], *sc = p + 4, *mn = p + 4 + nsub, *qs = p + 4 + 2 * nsub;
        __m256i acc = _mm256_setzero_si256();
        int32_t macc = 0;
        for (int j = 0; j < nsub; j++) {
            const __m256i wv = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16 * j)));
            const __m256i u = _mm256_or_si256(_mm256_and_si256(wv, m4), _mm256_slli_epi16(_mm256_srli_epi16(wv, 4), 8));
            acc = MADD_ACC(acc, _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(x + 32 * j))), _mm256_set1_epi16(sc[j]));
            macc += mn[j] * (bs[2 * j] + bs[2 * j + 1]);
        }
        out[r] = fp16_to_f32(rd16(p)) * xd * (float)hsum256_epi32(acc) - fp16_to_f32(rd16(p + 2)) * xd * (float)macc;
    }
}
#endif

#if defined(LB_AVX512)
/* Decoding on AVX-512 VNNI: whole super-blocks straight from the map, 64 bytes of quants per load.
   vpdpbusd multiplies the unsigned quants with the signed 8-bit activations, 4 products per int32
   lane, so every lane belongs to one sub-block; that lane sum fits in 16 bits (q4_k: 4 * 15 * 127,
   q6_k: 4 * 63 * 127 < 32767), so vpdpwssd against a vector holding the sub-block's scale in each
   lane's low half (high half 0) applies the scale and accumulates in one instruction. The next
   tile's bytes are prefetched (PF_BLOCK) while this one is computed. */

/* q4_k: qs bytes 0..63 hold weights 0..31 | 64..95 as low nibbles and 32..63 | 96..127 as high
   nibbles (bytes 64..127 likewise for 128..255), so xp is the activation block with its 32-weight
   sub-blocks in the order 0 2 1 3 4 6 5 7 (quantize_row_qk writes it): no shuffles in the loop. */
static inline __attribute__((always_inline)) void dot4_q45k_512(const uint8_t *const w[4], const int8_t *xp, const float *xd,
                                                                const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs,
                                                                float out[4], const int five) {
    const int BB = five ? 176 : 144, QS = five ? 48 : 16;   /* block bytes, offset of qs */
    const __m512i m4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
    /* The 4 rows' 16-byte block heads (d, dmin, 12 scale bytes K0..K11 at bytes 4..15), one per
       128-bit lane, unpacked together into bytes 0-7: the 8 6-bit scales, bytes 8-15: the 8 mins:
         sc0-3 = K0-3 & 63, sc4-7 = (K8-11 & 15) | (K0-3 >> 6) << 4,
         m0-3 = K4-7 & 63,  m4-7 = (K8-11 >> 4) | (K4-7 >> 6) << 4. */
    const __m512i ctl_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i ctl_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m512i keep_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15));
    const __m512i keep_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
    const __m512i dsel = _mm512_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12);
    /* scale vector v of a row (its unpacked lane broadcast to all 4): int32 lanes 0-7 take sub-block
       S[v][0], 8-15 S[v][1] as a 16-bit value (bytes 1-3 zero): (0, 2), (1, 3), (4, 6), (5, 7) */
#define SC_CTL(a, b) _mm512_set_epi32(0xffffff##b, 0xffffff##b, 0xffffff##b, 0xffffff##b, 0xffffff##b, 0xffffff##b, \
        0xffffff##b, 0xffffff##b, 0xffffff##a, 0xffffff##a, 0xffffff##a, 0xffffff##a, 0xffffff##a, 0xffffff##a, \
        0xffffff##a, 0xffffff##a)
    const __m512i sctl[4] = {SC_CTL(00, 02), SC_CTL(01, 03), SC_CTL(04, 06), SC_CTL(05, 07)};
#undef SC_CTL
    const __m512i hbit[4] = {_mm512_inserti64x4(_mm512_set1_epi8(1), _mm256_set1_epi8(4), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(2), _mm256_set1_epi8(8), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(16), _mm256_set1_epi8(64), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(32), _mm256_set1_epi8((char)128), 1)};
    /* mins: the unpacked heads widened to 16 bits (2 rows per vector), times the activation's sums
       per 32 in words 8-15 of each row (words 0-7, the scales, meet zeros) */
    const __m512i dmin01 = _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);   /* in dd below */
    const __m512i dmin23 = _mm512_add_epi32(dmin01, _mm512_set1_epi32(4));
    __m512 accf[4], accm01 = _mm512_setzero_ps(), accm23 = _mm512_setzero_ps();
    for (int r = 0; r < 4; r++) accf[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xp + b * QKK;
        const __m512i xv[4] = {_mm512_loadu_si512(x), _mm512_loadu_si512(x + 64), _mm512_loadu_si512(x + 128),
                               _mm512_loadu_si512(x + 192)};
        __m512i H = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w[0] + b * BB)));
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[1] + b * BB)), 1);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[2] + b * BB)), 2);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[3] + b * BB)), 3);
        __m512i X = _mm512_shuffle_epi8(H, ctl_lo);
        X = _mm512_mask_blend_epi8(0xf000f000f000f000ULL, X, _mm512_srli_epi16(X, 4));
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(_mm512_shuffle_epi8(H, ctl_hi), 2), keep_hi);
        const __m512i SM = _mm512_ternarylogic_epi32(X, keep_lo, hi, 0xea);   /* (X & keep_lo) | hi */
        /* d, dmin of the 4 rows (times the activation scale): [d0 dm0 d1 dm1 d2 dm2 d3 dm3] */
        const __m256 dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(dsel, H))),
                                        _mm256_set1_ps(xd[b]));
        const __m512 ddz = _mm512_castps256_ps512(dd);
        /* min terms, 2 rows per vector */
        const __m128i b16 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(bs + b * 16)),
                                           _mm_loadu_si128((const __m128i *)(bs + b * 16 + 8)));   /* sums per 32 */
        const __m512i B = _mm512_maskz_mov_epi16(0xff00ff00u, _mm512_broadcast_i32x4(b16));
        const __m512i mv01 = _mm512_madd_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(SM)), B);
        const __m512i mv23 = _mm512_madd_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(SM, 1)), B);
        accm01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv01), _mm512_permutexvar_ps(dmin01, ddz), accm01);
        accm23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv23), _mm512_permutexvar_ps(dmin23, ddz), accm23);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * BB;
            const __m512i sr = _mm512_shuffle_i32x4(SM, SM, 0x55 * r);
            const __m512i q0 = _mm512_loadu_si512(p + QS), q1 = _mm512_loadu_si512(p + QS + 64);
            __m512i u[4] = {_mm512_and_si512(q0, m4), _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
                            _mm512_and_si512(q1, m4), _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4)};
            if (five) {   /* q5_k: bit 4 of sub-block j's quants is bit j of qh[l] (same pairs as the scales) */
                const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 16)));
                for (int v = 0; v < 4; v++)
                    u[v] = _mm512_mask_add_epi8(u[v], _mm512_test_epi8_mask(qh, hbit[v]), u[v], _mm512_set1_epi8(16));
            }
            __m512i acc = zero;
            for (int v = 0; v < 4; v++)
                acc = _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(zero, u[v], xv[v]), _mm512_shuffle_epi8(sr, sctl[v]));
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(_mm512_set1_epi32(2 * r), ddz), accf[r]);
        }
    }
    /* accm01: row 0's min terms in lanes 4-7, row 1's in 12-15 (lanes 0-3, 8-11: zero) */
    float m[32];
    _mm512_storeu_ps(m, accm01);
    _mm512_storeu_ps(m + 16, accm23);
    for (int r = 0; r < 4; r++) {
        float s = 0;
        for (int j = 0; j < 8; j++) s += m[8 * r + j];
        out[r] = _mm512_reduce_add_ps(accf[r]) - s;
    }
}

static void dot4_q4k_512(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xq;
    dot4_q45k_512(w, xp, xd, bs, nb, pf, pfs, out, 0);
}

/* q5_k: q4_k's layout (qs at 48) plus a fifth bit per weight in qh[32] */
static void dot4_q5k_512(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xq;
    dot4_q45k_512(w, xp, xd, bs, nb, pf, pfs, out, 1);
}

/* q2_k and q3_k: qs bytes 0..31 hold weights 32j + l at bit pair j (j = 0..3), bytes 32..63 weights
   128 + 32j + l, so one 64-byte load gives 4 vectors of 64 weights, vector j meeting the activation
   block with its 32-weight units in the order 0 4 1 5 2 6 3 7 (xp; quantize_row_qk writes it).
   Sub-blocks are 16 weights: vector j's 128-bit lanes hold sub-blocks 2j, 2j + 1, 8 + 2j, 9 + 2j. */
static void dot4_q2k_512(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xq;
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
    /* scale vector j of a row (its scale lane broadcast to all 4): dword = (scale byte of the lane's
       sub-block, 0, 0, 0) */
#define SC_CTL2(j) _mm512_set_epi32(0xffffff00 + 9 + 2 * j, 0xffffff00 + 9 + 2 * j, 0xffffff00 + 9 + 2 * j, 0xffffff00 + 9 + 2 * j, \
        0xffffff00 + 8 + 2 * j, 0xffffff00 + 8 + 2 * j, 0xffffff00 + 8 + 2 * j, 0xffffff00 + 8 + 2 * j, \
        0xffffff00 + 1 + 2 * j, 0xffffff00 + 1 + 2 * j, 0xffffff00 + 1 + 2 * j, 0xffffff00 + 1 + 2 * j, \
        0xffffff00 + 2 * j, 0xffffff00 + 2 * j, 0xffffff00 + 2 * j, 0xffffff00 + 2 * j)
    const __m512i sctl[4] = {SC_CTL2(0), SC_CTL2(1), SC_CTL2(2), SC_CTL2(3)};
#undef SC_CTL2
    const __m512i dsel = _mm512_setr_epi32(3, 7, 11, 15, 3, 7, 11, 15, 3, 7, 11, 15, 3, 7, 11, 15);
    const __m512i dmin01 = _mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m512i dmin23 = _mm512_add_epi32(dmin01, _mm512_set1_epi32(4));
    __m512 accf[4], accm01 = _mm512_setzero_ps(), accm23 = _mm512_setzero_ps();
    for (int r = 0; r < 4; r++) accf[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xp + b * QKK;
        const __m512i xv[4] = {_mm512_loadu_si512(x), _mm512_loadu_si512(x + 64), _mm512_loadu_si512(x + 128),
                               _mm512_loadu_si512(x + 192)};
        __m512i H = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w[0] + b * 84)));   /* scales */
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[1] + b * 84)), 1);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[2] + b * 84)), 2);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[3] + b * 84)), 3);
        __m512i T = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w[0] + b * 84 + 68)));   /* d, dmin at 12 */
        T = _mm512_inserti32x4(T, _mm_loadu_si128((const __m128i *)(w[1] + b * 84 + 68)), 1);
        T = _mm512_inserti32x4(T, _mm_loadu_si128((const __m128i *)(w[2] + b * 84 + 68)), 2);
        T = _mm512_inserti32x4(T, _mm_loadu_si128((const __m128i *)(w[3] + b * 84 + 68)), 3);
        const __m512i SC = _mm512_and_si512(H, m4), MN = _mm512_and_si512(_mm512_srli_epi16(H, 4), m4);
        const __m256 dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(dsel, T))),
                                        _mm256_set1_ps(xd[b]));   /* [d0 dm0 d1 dm1 ...] */
        const __m512 ddz = _mm512_castps256_ps512(dd);
        const __m512i BS = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(bs + b * 16)));
        const __m512i mv01 = _mm512_madd_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(MN)), BS);
        const __m512i mv23 = _mm512_madd_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(MN, 1)), BS);
        accm01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv01), _mm512_permutexvar_ps(dmin01, ddz), accm01);
        accm23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv23), _mm512_permutexvar_ps(dmin23, ddz), accm23);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const __m512i q = _mm512_loadu_si512(w[r] + b * 84 + 16);
            const __m512i sr = _mm512_shuffle_i32x4(SC, SC, 0x55 * r);
            __m512i acc = zero;
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const __m512i u = _mm512_and_si512(j ? _mm512_srli_epi16(q, 2 * j) : q, m3);
                acc = _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(zero, u, xv[j]), _mm512_shuffle_epi8(sr, sctl[j]));
            }
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(_mm512_set1_epi32(2 * r), ddz), accf[r]);
        }
    }
    float m[32];
    _mm512_storeu_ps(m, accm01);
    _mm512_storeu_ps(m + 16, accm23);
    for (int r = 0; r < 4; r++) {
        float s = 0;
        for (int j = 0; j < 8; j++) s += m[8 * r + j];
        out[r] = _mm512_reduce_add_ps(accf[r]) - s;
    }
}

/* q3_k: q2_k's quants plus a third bit (hmask[l], bit j for bytes 0..31, bit 4 + j for 32..63),
   q = u - 4; 16 signed 6-bit scales (stored + 32) in 12 bytes. Each row's 16 bytes from offset 94
   (two quant bytes, the 12 scale bytes, d) sit in one 128-bit lane and are unpacked together:
     lo4(j) = j < 8 ? s[j] & 15 : s[j - 8] >> 4,  hi2(j) = (s[8 + j % 4] >> 2 * (j / 4)) & 3. */
static void dot4_q3k_512(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xq;
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
    const __m512i ctl_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9));
    const __m512i ctl_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13));
    const __m512i hshift = _mm512_broadcast_i32x4(_mm_setr_epi16(0, 0, 2, 2, 4, 4, 6, 6));
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i dsel = _mm512_set1_epi64(0x001f0017000f0007LL);   /* words 7, 15, 23, 31: the 4 rows' d */
    const __m512i d01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i d23 = _mm512_add_epi32(d01, _mm512_set1_epi32(2));
    /* scale vector j (from a row's 16 sign-extended words): lane i takes sub-block
       (i < 8 ? 2j : 8 + 2j) + (i / 4) % 2, in word 2i (odd words 0) */
#define SIDX3(j) {2*j, 0, 2*j, 0, 2*j, 0, 2*j, 0, 2*j+1, 0, 2*j+1, 0, 2*j+1, 0, 2*j+1, 0, \
                  8+2*j, 0, 8+2*j, 0, 8+2*j, 0, 8+2*j, 0, 9+2*j, 0, 9+2*j, 0, 9+2*j, 0, 9+2*j, 0}
    static const int16_t S[4][32] __attribute__((aligned(64))) = {SIDX3(0), SIDX3(1), SIDX3(2), SIDX3(3)};
#undef SIDX3
    const __m512i sidx[4] = {_mm512_load_si512(S[0]), _mm512_load_si512(S[1]), _mm512_load_si512(S[2]), _mm512_load_si512(S[3])};
    const __m512i sixteen = _mm512_set1_epi16(16);
    const __mmask32 even = 0x55555555u;
    /* the third bit of vector j: hmask bit j (lanes 0-31), bit 4 + j (lanes 32-63) */
    const __m512i hbit[4] = {_mm512_inserti64x4(_mm512_set1_epi8(1), _mm256_set1_epi8(16), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(2), _mm256_set1_epi8(32), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(4), _mm256_set1_epi8(64), 1),
                             _mm512_inserti64x4(_mm512_set1_epi8(8), _mm256_set1_epi8((char)128), 1)};
    __m512 accf[4], acco01 = _mm512_setzero_ps(), acco23 = _mm512_setzero_ps();
    for (int r = 0; r < 4; r++) accf[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xp + b * QKK;
        const __m512i xv[4] = {_mm512_loadu_si512(x), _mm512_loadu_si512(x + 64), _mm512_loadu_si512(x + 128),
                               _mm512_loadu_si512(x + 192)};
        __m512i H = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w[0] + b * 110 + 94)));
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[1] + b * 110 + 94)), 1);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[2] + b * 110 + 94)), 2);
        H = _mm512_inserti32x4(H, _mm_loadu_si128((const __m128i *)(w[3] + b * 110 + 94)), 3);
        __m512i L = _mm512_shuffle_epi8(H, ctl_lo);
        L = _mm512_mask_blend_epi8(0xff00ff00ff00ff00ULL, L, _mm512_srli_epi16(L, 4));
        const __m512i hi = _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(_mm512_shuffle_epi8(H, ctl_hi), hshift), 4), m30);
        const __m512i SCU = _mm512_ternarylogic_epi32(L, m4, hi, 0xea);   /* (L & 15) | hi: scale + 32 */
        /* signed scales as words, 2 rows per vector */
        const __m512i W01 = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(SCU)), _mm512_set1_epi16(32));
        const __m512i W23 = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(SCU, 1)), _mm512_set1_epi16(32));
        const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(dsel, H))), _mm_set1_ps(xd[b]));
        const __m512 ddz = _mm512_castps128_ps512(dd);   /* [d0 d1 d2 d3] */
        /* the offset: q = u - 4, so 4 * sum(scale * bsum) per row, 2 rows per vector */
        const __m512i BS = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(bs + b * 16)));
        acco01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(W01, BS)), _mm512_permutexvar_ps(d01, ddz), acco01);
        acco23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(W23, BS)), _mm512_permutexvar_ps(d23, ddz), acco23);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * 110;
            const __m512i q = _mm512_loadu_si512(p + 32);
            const __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
            const __m512i Wr = r < 2 ? W01 : W23;
            const __m512i off = (r & 1) ? sixteen : zero;
            __m512i acc = zero;
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m512i u = _mm512_and_si512(j ? _mm512_srli_epi16(q, 2 * j) : q, m3);
                u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(hm, hbit[j]), u, _mm512_set1_epi8(4));
                acc = _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(zero, u, xv[j]),
                                          _mm512_maskz_permutexvar_epi16(even, _mm512_add_epi16(sidx[j], off), Wr));
            }
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(_mm512_set1_epi32(r), ddz), accf[r]);
        }
    }
    float m[32];
    _mm512_storeu_ps(m, acco01);
    _mm512_storeu_ps(m + 16, acco23);
    for (int r = 0; r < 4; r++) {
        float s = 0;
        for (int j = 0; j < 8; j++) s += m[8 * r + j];
        out[r] = _mm512_reduce_add_ps(accf[r]) - 4.f * s;
    }
}

/* q6_k: ql bytes 64h..64h+63 hold weights 128h + 0..63 as low nibbles and 128h + 64..127 as high
   nibbles (the activation's own order); their 2 high bits come from qh byte l (of 32h..32h+31) at
   bit pairs 0, 1 (low, bytes < 32 / >= 32) and 2, 3 (high), i.e. bits 0-1, 2-3, 4-5, 6-7. */
static void dot4_q6k_512(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]) {
    (void)xp;
    const __m512i m4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
    /* qh bits for lanes 0-31 (0x33) and 32-63 (0xcc); 16-bit shifts moving them to bits 4-5 */
    const __m512i hmask = _mm512_inserti64x4(_mm512_set1_epi8(0x33), _mm256_set1_epi8((char)0xcc), 1);
    const __m512i sh_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);   /* left */
    const __m512i sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);   /* right */
    /* scale vector v (0..3): lane i takes the 16-weight sub-block 4v + i/4 (word 2i; odd words 0) */
#define I16X4(a) a, a, a, a, a, a, a, a, a + 1, a + 1, a + 1, a + 1, a + 1, a + 1, a + 1, a + 1, \
                 a + 2, a + 2, a + 2, a + 2, a + 2, a + 2, a + 2, a + 2, a + 3, a + 3, a + 3, a + 3, a + 3, a + 3, a + 3, a + 3
    static const int16_t S[4][32] __attribute__((aligned(64))) = {{I16X4(0)}, {I16X4(4)}, {I16X4(8)}, {I16X4(12)}};
#undef I16X4
    const __m512i sidx[4] = {_mm512_load_si512(S[0]), _mm512_load_si512(S[1]), _mm512_load_si512(S[2]), _mm512_load_si512(S[3])};
    const __mmask32 even = 0x55555555u;
    __m512 accf[4];
    for (int r = 0; r < 4; r++) accf[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        PF_BLOCK(pf, b, pfs);
        const int8_t *x = xq + b * QKK;
        __m512i xv[4];
        for (int k = 0; k < 4; k++) xv[k] = _mm512_loadu_si512(x + 64 * k);
        const __m256i bsv = _mm256_loadu_si256((const __m256i *)(bs + b * 16));
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * 210;
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 192)));
            const __m512i scz = _mm512_castsi256_si512(sc16);
            /* q = u - 32: start from -32 * sum(scale * bsum) */
            __m512i acc = _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(sc16, bsv)), 5));
            for (int h = 0; h < 2; h++) {
                const __m512i q = _mm512_loadu_si512(p + 64 * h);
                const __m512i hb = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h))), hmask);
                /* (a & c) | (b & ~c), c = 0x0f: imm 0xe4 */
                const __m512i lo = _mm512_ternarylogic_epi32(q, _mm512_sllv_epi16(hb, sh_lo), m4, 0xe4);
                const __m512i hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(q, 4), _mm512_srlv_epi16(hb, sh_hi), m4, 0xe4);
                acc = _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(zero, lo, xv[2 * h]),
                                          _mm512_maskz_permutexvar_epi16(even, sidx[2 * h], scz));
                acc = _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(zero, hi, xv[2 * h + 1]),
                                          _mm512_maskz_permutexvar_epi16(even, sidx[2 * h + 1], scz));
            }
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(fp16_to_f32(rd16(p + 208)) * xd[b]), accf[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = _mm512_reduce_add_ps(accf[r]);
}
#endif

typedef void (*dot4k_fn)(const uint8_t *const w[4], const int8_t *xq, const int8_t *xp, const float *xd,
                         const int16_t *bs, int64_t nb, const uint8_t *pf, int64_t pfs, float out[4]);

static dot4k_fn kq_direct(int kind) {
#if defined(LB_AVX512) || defined(LB_AVX2)
#if defined(LB_AVX512)
    if (kind == 2) return dot4_q2k_512;
    if (kind == 3) return dot4_q3k_512;
    if (kind == 4) return dot4_q4k_512;
    if (kind == 5) return dot4_q5k_512;
    if (kind == 6) return dot4_q6k_512;
#endif
    if (kind == 4) return dot4_q4k;
    if (kind == 6) return dot4_q6k;
#endif
    (void)kind;
    return NULL;
}
