/* ---------------------------------------------------------------- q8_0 and the float types (f32, f16, bf16) */

/* The kernels below read f32/f16/bf16 rows as arrays of 4- and 2-byte values and q8_0 blocks as an
   fp16 scale followed by 32 int8 (the AVX loads take a block's quants whole). */
_Static_assert(LB_F32_BLOCK_SIZE == 1 && LB_F32_BLOCK_BYTES == 4, "f32: one float per weight");
_Static_assert(LB_F16_BLOCK_SIZE == 1 && LB_F16_BLOCK_BYTES == 2, "f16: one half per weight");
_Static_assert(LB_BF16_BLOCK_SIZE == 1 && LB_BF16_BLOCK_BYTES == LB_F16_BLOCK_BYTES, "bf16: one bfloat16 per weight");
_Static_assert(LB_Q8_0_BLOCK_SIZE == 32 && LB_Q8_0_BLOCK_BYTES == 2 + LB_Q8_0_BLOCK_SIZE, "q8_0: fp16 d, then 32 int8");

/* An activation row: float, or quantized to 8-bit blocks (qs int8 [cols], d float [cols/32]). */
typedef struct { const float *f; const int8_t *qs; const float *d; } act_row;

static void quantize_row_q8(const float *x, int64_t cols, int8_t *qs, float *d) {
    for (int64_t b = 0; b < cols / QK; b++) {
        const float *xb = x + b * QK;
#if defined(LB_AVX512)
        {   /* the same arithmetic 16 lanes at a time (vcvtps2dq rounds to nearest even, like lrintf) */
            const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
            const float s = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.f;
            const __m512 inv = _mm512_set1_ps(s ? 1.f / s : 0.f);
            d[b] = s;
            _mm_storeu_si128((__m128i *)(qs + b * QK), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, inv))));
            _mm_storeu_si128((__m128i *)(qs + b * QK + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, inv))));
            continue;
        }
#endif
        float amax = 0.f;
        for (int i = 0; i < QK; i++) { float a = fabsf(xb[i]); amax = a > amax ? a : amax; }
        float s = amax / 127.f, inv = s ? 1.f / s : 0.f;
        d[b] = s;
        for (int i = 0; i < QK; i++) qs[b * QK + i] = (int8_t)lrintf(xb[i] * inv);
    }
}

/* ---------------------------------------------------------------- dot4 kernels: out[r] = <W row r, x> */

static void dot4_f32(const uint8_t *const w[4], act_row a, int64_t k, float out[4]) {
    const float *x = a.f;
    const float *w0 = (const float *)w[0], *w1 = (const float *)w[1], *w2 = (const float *)w[2], *w3 = (const float *)w[3];
    int64_t i = 0;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#if defined(LB_AVX512)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i < k; i += 16) {
        __mmask16 m = k - i >= 16 ? 0xffff : (__mmask16)((1u << (k - i)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + i), xv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + i), xv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + i), xv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + i), xv, a3);
    }
    s0 = _mm512_reduce_add_ps(a0); s1 = _mm512_reduce_add_ps(a1); s2 = _mm512_reduce_add_ps(a2); s3 = _mm512_reduce_add_ps(a3);
#elif defined(LB_AVX2)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
    }
    float t[8];
    _mm256_storeu_ps(t, a0); for (int j = 0; j < 8; j++) s0 += t[j];
    _mm256_storeu_ps(t, a1); for (int j = 0; j < 8; j++) s1 += t[j];
    _mm256_storeu_ps(t, a2); for (int j = 0; j < 8; j++) s2 += t[j];
    _mm256_storeu_ps(t, a3); for (int j = 0; j < 8; j++) s3 += t[j];
#endif
    for (; i < k; i++) { s0 += w0[i] * x[i]; s1 += w1[i] * x[i]; s2 += w2[i] * x[i]; s3 += w3[i] * x[i]; }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

/* f16 and bf16 share one body: LOAD16(ptr, i, mask) widens 16 halves to floats. */
#if defined(LB_AVX512)
#define F16_LOAD(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p))
#define BF16_LOAD(p, m) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16))
#define DOT4_HALF(NAME, LOAD, SCALAR)                                                                   \
static void NAME(const uint8_t *const w[4], act_row a, int64_t k, float out[4]) {                     \
    const float *x = a.f;                                                                              \
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                        \
    for (int64_t i = 0; i < k; i += 16) {                                                              \
        __mmask16 m = k - i >= 16 ? 0xffff : (__mmask16)((1u << (k - i)) - 1);                         \
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);                                                   \
        a0 = _mm512_fmadd_ps(LOAD(w[0] + 2 * i, m), xv, a0);                                          \
        a1 = _mm512_fmadd_ps(LOAD(w[1] + 2 * i, m), xv, a1);                                          \
        a2 = _mm512_fmadd_ps(LOAD(w[2] + 2 * i, m), xv, a2);                                          \
        a3 = _mm512_fmadd_ps(LOAD(w[3] + 2 * i, m), xv, a3);                                          \
    }                                                                                                  \
    out[0] = _mm512_reduce_add_ps(a0); out[1] = _mm512_reduce_add_ps(a1);                              \
    out[2] = _mm512_reduce_add_ps(a2); out[3] = _mm512_reduce_add_ps(a3);                              \
}
#elif defined(LB_AVX2)
#define F16_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define BF16_LOAD(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define DOT4_HALF(NAME, LOAD, SCALAR)                                                                   \
static void NAME(const uint8_t *const w[4], act_row a, int64_t k, float out[4]) {                     \
    const float *x = a.f;                                                                              \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                        \
    int64_t i = 0;                                                                                     \
    for (; i + 8 <= k; i += 8) {                                                                       \
        __m256 xv = _mm256_loadu_ps(x + i);                                                            \
        a0 = _mm256_fmadd_ps(LOAD(w[0] + 2 * i), xv, a0);                                             \
        a1 = _mm256_fmadd_ps(LOAD(w[1] + 2 * i), xv, a1);                                             \
        a2 = _mm256_fmadd_ps(LOAD(w[2] + 2 * i), xv, a2);                                             \
        a3 = _mm256_fmadd_ps(LOAD(w[3] + 2 * i), xv, a3);                                             \
    }                                                                                                  \
    float t[8], s[4] = {0, 0, 0, 0};                                                                   \
    _mm256_storeu_ps(t, a0); for (int j = 0; j < 8; j++) s[0] += t[j];                                 \
    _mm256_storeu_ps(t, a1); for (int j = 0; j < 8; j++) s[1] += t[j];                                 \
    _mm256_storeu_ps(t, a2); for (int j = 0; j < 8; j++) s[2] += t[j];                                 \
    _mm256_storeu_ps(t, a3); for (int j = 0; j < 8; j++) s[3] += t[j];                                 \
    for (; i < k; i++)                                                                                 \
        for (int r = 0; r < 4; r++) s[r] += SCALAR(rd16(w[r] + 2 * i)) * x[i];                         \
    for (int r = 0; r < 4; r++) out[r] = s[r];                                                         \
}
#else
#define DOT4_HALF(NAME, LOAD, SCALAR)                                                                   \
static void NAME(const uint8_t *const w[4], act_row a, int64_t k, float out[4]) {                     \
    const float *x = a.f;                                                                              \
    float s[4] = {0, 0, 0, 0};                                                                         \
    for (int64_t i = 0; i < k; i++)                                                                    \
        for (int r = 0; r < 4; r++) s[r] += SCALAR(rd16(w[r] + 2 * i)) * x[i];                         \
    for (int r = 0; r < 4; r++) out[r] = s[r];                                                         \
}
#define F16_LOAD 0
#define BF16_LOAD 0
#endif
DOT4_HALF(dot4_f16, F16_LOAD, fp16_to_f32)
DOT4_HALF(dot4_bf16, BF16_LOAD, bf16_to_f32)

static void dot4_q8_0(const uint8_t *const w[4], act_row a, int64_t k, float out[4]) {
    const int64_t nb = k / QK;
    const int8_t *xq = a.qs;
    const float *xd = a.d;
    int64_t b = 0;
    float s[4] = {0, 0, 0, 0};
#if defined(LB_AVX512)
    /* two blocks per 512-bit register: |w| (unsigned) times x with w's sign (signed), vpdpbusd */
    const __m512i zero = _mm512_setzero_si512();
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (; b + 2 <= nb; b += 2) {
        const __m512i xv = _mm512_loadu_si512(xq + b * QK);
        const __m512 xs = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)(xd + b)))));
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * LB_Q8_0_BLOCK_BYTES;
            __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                                            _mm256_loadu_si256((const __m256i *)(p + 2 + LB_Q8_0_BLOCK_BYTES)), 1);
            __mmask64 neg = _mm512_movepi8_mask(wv);
            __m512i dp = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), _mm512_mask_sub_epi8(xv, neg, zero, xv));
            __m128i hh = _mm_insert_epi16(_mm_cvtsi32_si128(rd16(p)), rd16(p + LB_Q8_0_BLOCK_BYTES), 1);
            __m512 ws = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_cvtph_ps(hh)));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(ws, xs), acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = _mm512_reduce_add_ps(acc[r]);
#endif
#if defined(LB_AVX2) || defined(LB_AVX512)
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc2[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (; b < nb; b++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * LB_Q8_0_BLOCK_BYTES;
            __m256i wv = _mm256_loadu_si256((const __m256i *)(p + 2));
            /* |w| <= 128 and |x| <= 127: maddubs cannot saturate (2 * 128 * 127 < 32767) */
            __m256i s16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
            acc2[r] = _mm256_fmadd_ps(f, _mm256_set1_ps(fp16_to_f32(rd16(p)) * xd[b]), acc2[r]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float t[8];
        _mm256_storeu_ps(t, acc2[r]);
        for (int j = 0; j < 8; j++) s[r] += t[j];
    }
#else
    for (; b < nb; b++) {
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + b * LB_Q8_0_BLOCK_BYTES;
            const int8_t *q = (const int8_t *)(p + 2);
            int32_t sum = 0;
            for (int i = 0; i < QK; i++) sum += (int32_t)q[i] * xq[b * QK + i];
            s[r] += (float)sum * fp16_to_f32(rd16(p)) * xd[b];
        }
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = s[r];
}

typedef void (*dot4_fn)(const uint8_t *const w[4], act_row a, int64_t k, float out[4]);

static dot4_fn dot4_for(int type) {
    switch (type) {
    case LB_F32: return dot4_f32;
    case LB_F16: return dot4_f16;
    case LB_BF16: return dot4_bf16;
    case LB_Q8_0: return dot4_q8_0;
    }
    return NULL;
}

static void dequant_row(int type, const uint8_t *p, int64_t cols, float *out) {
    switch (type) {
    case LB_F32: memcpy(out, p, cols * 4); break;
    case LB_F16: for (int64_t i = 0; i < cols; i++) out[i] = fp16_to_f32(rd16(p + 2 * i)); break;
    case LB_BF16: for (int64_t i = 0; i < cols; i++) out[i] = bf16_to_f32(rd16(p + 2 * i)); break;
    case LB_Q8_0:
        for (int64_t b = 0; b < cols / QK; b++) {
            const uint8_t *blk = p + b * LB_Q8_0_BLOCK_BYTES;
            float d = fp16_to_f32(rd16(blk));
            for (int i = 0; i < QK; i++) out[b * QK + i] = d * (float)(int8_t)blk[2 + i];
        }
        break;
    default: kq_dequant_row(kq_kind(type), p, cols, out); break;
    }
}


/* ---------------------------------------------------------------- q8_0 prompt tiles (AVX-512 VNNI)

   A prompt's matmul meets each 4-row weight tile with many tokens, so the tile is repacked once
   (two blocks per 64 bytes, the scales widened to a vector, and -128 * the sum of every 4 weights)
   and then runs against 4 tokens at a time: each weight vector is loaded once for 4 tokens, each
   activation vector once for 4 rows. vpdpbusd wants unsigned x signed: the activations enter as
   x + 128 (one xor per activation vector) and the repacked -128 * sum(w) term, the accumulator's
   starting value, takes the offset back out, so no per-row sign fix-up remains. */
static size_t q8_tile_scratch(int64_t k) { return (size_t)12 * ((k / QK + 1) / 2) * 64 + 64; }

#if defined(LB_AVX512)
typedef struct { const int8_t *w; const __m512i *cw; const __m512 *ws; int64_t nb, nbp; } q8_tile;

static q8_tile q8_tile_pack(uint8_t *buf, const uint8_t *const rows[4], int64_t k) {
    q8_tile T;
    T.nb = k / QK;
    T.nbp = (T.nb + 1) / 2;
    __m512i *cw = (__m512i *)buf;
    __m512 *ws = (__m512 *)(buf + 4 * T.nbp * 64);
    int8_t *w = (int8_t *)(buf + 8 * T.nbp * 64);
    const __m512i zero = _mm512_setzero_si512(), k80 = _mm512_set1_epi8((char)0x80);
    for (int64_t bp = 0; bp < T.nbp; bp++) {
        const int two = 2 * bp + 1 < T.nb;
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = rows[r] + 2 * bp * LB_Q8_0_BLOCK_BYTES;
            const __m256i hi = two ? _mm256_loadu_si256((const __m256i *)(p + 2 + LB_Q8_0_BLOCK_BYTES)) : _mm256_setzero_si256();
            const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))), hi, 1);
            _mm512_store_si512(w + (bp * 4 + r) * 64, wv);
            cw[bp * 4 + r] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k80, wv));
            const float d1 = two ? fp16_to_f32(rd16(p + LB_Q8_0_BLOCK_BYTES)) : 0.f;
            ws[bp * 4 + r] = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(fp16_to_f32(rd16(p))), _mm512_set1_ps(d1));
        }
    }
    T.w = w; T.cw = cw; T.ws = ws;
    return T;
}

/* out[t][r] = <tile row r, token t> for nt (1..4) tokens; xq/xd: the first token's blocks. */
static inline __attribute__((always_inline)) void q8_tile_dot(q8_tile T, const int8_t *xq, const float *xd, int64_t k,
                                                              const int nt, float out[4][4]) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc[4][4];
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++) acc[t][r] = _mm512_setzero_ps();
    for (int64_t bp = 0; bp < T.nbp; bp++) {
        const int two = 2 * bp + 1 < T.nb;
        const __mmask64 mx = two ? ~0ULL : 0xffffffffULL;
        __m512i w[4];
        for (int r = 0; r < 4; r++) w[r] = _mm512_load_si512(T.w + (bp * 4 + r) * 64);
        for (int t = 0; t < nt; t++) {
            const __m512i xu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mx, xq + t * k + bp * 64), k80);
            const __m512 xs = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_maskz_loadu_ps(two ? 3 : 1, xd + t * T.nb + 2 * bp)));
            for (int r = 0; r < 4; r++) {
                const __m512i dp = _mm512_dpbusd_epi32(T.cw[bp * 4 + r], xu, w[r]);
                acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), _mm512_mul_ps(T.ws[bp * 4 + r], xs), acc[t][r]);
            }
        }
    }
    /* the decode kernel's reduction: a prompt gives bit for bit the logits of token-by-token decoding */
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < 4; r++) out[t][r] = _mm512_reduce_add_ps(acc[t][r]);
}
#endif
