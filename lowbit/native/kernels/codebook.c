/* ---------------------------------------------------------------- codebook types (cbk2, cbk4, d4l2)

   format_spec/types/codebook.md: a row is blocks of B weights, each one scale byte s then B/D index
   bytes into a codebook of 256 points of D values: w = (d_r * SCALE[s]) * P[idx][j]. The tensor's
   side data reach the kernels through lb_weight's codebook / row_scale, widened to float once at
   load (4 KiB at most: stays in L1). Activations stay float: a block's dot product is the sum over
   its vectors of <P[idx], x>, times the block's scale; the row scale is applied once at the end. */

static const int CB_D[3] = {4, 2, 4};   /* cbk2, cbk4, d4l2: values per codebook point */
static const int CB_B[3] = {LB_CBK2_BLOCK_SIZE, LB_CBK4_BLOCK_SIZE, LB_D4L2_BLOCK_SIZE};
/* a block: its scale byte, then one index byte per point (cb_row_bytes, cb_dot4); kind = id - LB_CBK2 + 1 */
_Static_assert(LB_CBK4 == LB_CBK2 + 1 && LB_D4L2 == LB_CBK2 + 2, "codebook ids are consecutive, cbk2 to d4l2");
_Static_assert(LB_CBK2_BLOCK_BYTES == 1 + LB_CBK2_BLOCK_SIZE / 4, "cbk2: a scale byte, then 4-value indices");
_Static_assert(LB_CBK4_BLOCK_BYTES == 1 + LB_CBK4_BLOCK_SIZE / 2, "cbk4: a scale byte, then 2-value indices");
_Static_assert(LB_D4L2_BLOCK_BYTES == 1 + LB_D4L2_BLOCK_SIZE / 4, "d4l2: a scale byte, then 4-value indices");

static int cb_kind(int type) { return type >= LB_CBK2 && type <= LB_D4L2 ? type - LB_CBK2 + 1 : 0; }

static int64_t cb_row_bytes(int type, int64_t cols) {
    const int c = cb_kind(type) - 1;
    return cols % CB_B[c] ? -1 : cols / CB_B[c] * (1 + CB_B[c] / CB_D[c]);
}

/* SCALE[s] = F[r] * 2^q with s - 255 = 16q + r: the spec's table, the power of two added to the
   exponent field (exact) */
static float g_cb_scale[256];
__attribute__((constructor)) static void cb_init_scales(void) {
    static const uint32_t F[16] = {0x3f800000, 0x3f85aac3, 0x3f8b95c2, 0x3f91c3d3, 0x3f9837f0, 0x3f9ef532,
                                   0x3fa5fed7, 0x3fad583f, 0x3fb504f3, 0x3fbd08a4, 0x3fc5672a, 0x3fce248c,
                                   0x3fd744fd, 0x3fe0ccdf, 0x3feac0c7, 0x3ff5257d};
    g_cb_scale[0] = 0.f;
    for (int s = 1; s < 256; s++) {
        const int e = s - 255, q = (e - 15) / 16, r = e - 16 * q;   /* q = floor(e / 16) for e <= 0 */
        const uint32_t bits = (uint32_t)((int32_t)F[r] + q * (1 << 23));
        memcpy(&g_cb_scale[s], &bits, 4);
    }
}

/* Row `row` dequantized in the spec's float32 order: t = d_r * SCALE[s], then t * P[idx][j]. */
static void cb_dequant_row(const lb_weight *W, const uint8_t *p, int64_t row, float *out) {
    const int c = cb_kind(W->type) - 1, D = CB_D[c], B = CB_B[c], nv = B / D;
    const float d = W->row_scale[row];
    for (int64_t b = 0; b < W->cols / B; b++, p += 1 + nv) {
        volatile float tv = d * g_cb_scale[p[0]];   /* volatile: two roundings, as the spec says */
        const float t = tv;
        float *o = out + b * B;
        for (int v = 0; v < nv; v++) {
            const float *e = W->codebook + D * p[1 + v];
            for (int j = 0; j < D; j++) o[v * D + j] = t * e[j];
        }
    }
}

/* Decoding: out[r] = <row r, x> straight from the map, 4 rows against one float activation row.
   D and B are compile-time constants in every instantiation (cb_dot4 dispatches on the type). */
static inline __attribute__((always_inline)) void cb_dot4_impl(const lb_weight *W, const uint8_t *const w[4],
                                                               const float rs[4], const float *x, float out[4],
                                                               const int D, const int B) {
    const int nv = B / D, bb = 1 + nv;
    const int64_t nb = W->cols / B;
    const float *cb = W->codebook;
#if defined(LB_AVX512)
    /* 16 weights per vector: D = 4, four 16-byte points (one load, three inserts); D = 2, eight
       8-byte points by one qword gather from the (L1-resident) codebook */
    __m512 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512 s[4];
        for (int r = 0; r < 4; r++) s[r] = _mm512_setzero_ps();
        for (int g = 0; g < B / 16; g++) {
            const __m512 xv = _mm512_loadu_ps(x + b * B + 16 * g);
            for (int r = 0; r < 4; r++) {
                const uint8_t *ix = w[r] + b * bb + 1 + g * (16 / D);
                __m512 e;
                if (D == 4) {   /* indices from one 32-bit load */
                    const uint32_t i4 = rd32(ix);
                    e = _mm512_castps128_ps512(_mm_loadu_ps(cb + 4 * (i4 & 255)));
                    e = _mm512_insertf32x4(e, _mm_loadu_ps(cb + 4 * ((i4 >> 8) & 255)), 1);
                    e = _mm512_insertf32x4(e, _mm_loadu_ps(cb + 4 * ((i4 >> 16) & 255)), 2);
                    e = _mm512_insertf32x4(e, _mm_loadu_ps(cb + 4 * (i4 >> 24)), 3);
                } else {   /* eight 8-byte points: pairs by movsd + movhpd, then inserts (no gather: slower on Zen 5) */
                    const double *c8 = (const double *)cb;
                    uint64_t i8;
                    memcpy(&i8, ix, 8);
                    const __m128d p0 = _mm_loadh_pd(_mm_load_sd(c8 + (i8 & 255)), c8 + ((i8 >> 8) & 255));
                    const __m128d p1 = _mm_loadh_pd(_mm_load_sd(c8 + ((i8 >> 16) & 255)), c8 + ((i8 >> 24) & 255));
                    const __m128d p2 = _mm_loadh_pd(_mm_load_sd(c8 + ((i8 >> 32) & 255)), c8 + ((i8 >> 40) & 255));
                    const __m128d p3 = _mm_loadh_pd(_mm_load_sd(c8 + ((i8 >> 48) & 255)), c8 + (i8 >> 56));
                    const __m256d lo = _mm256_insertf128_pd(_mm256_castpd128_pd256(p0), p1, 1);
                    const __m256d hi = _mm256_insertf128_pd(_mm256_castpd128_pd256(p2), p3, 1);
                    e = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
                }
                s[r] = _mm512_fmadd_ps(e, xv, s[r]);
            }
        }
        for (int r = 0; r < 4; r++) acc[r] = _mm512_fmadd_ps(s[r], _mm512_set1_ps(g_cb_scale[w[r][b * bb]]), acc[r]);
    }
    for (int r = 0; r < 4; r++) out[r] = rs[r] * _mm512_reduce_add_ps(acc[r]);
#elif defined(LB_AVX2)
    /* 8 weights per vector: D = 4, two 16-byte points; D = 2, four 8-byte points by a qword gather */
    __m256 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256 s[4];
        for (int r = 0; r < 4; r++) s[r] = _mm256_setzero_ps();
        for (int g = 0; g < B / 8; g++) {
            const __m256 xv = _mm256_loadu_ps(x + b * B + 8 * g);
            for (int r = 0; r < 4; r++) {
                const uint8_t *ix = w[r] + b * bb + 1 + g * (8 / D);
                __m256 e;
                if (D == 4) {
                    e = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(cb + 4 * ix[0])), _mm_loadu_ps(cb + 4 * ix[1]), 1);
                } else {
                    const __m128i vi = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)rd32(ix)));
                    e = _mm256_castsi256_ps(_mm256_i32gather_epi64((const long long *)cb, vi, 8));
                }
                s[r] = _mm256_fmadd_ps(e, xv, s[r]);
            }
        }
        for (int r = 0; r < 4; r++) acc[r] = _mm256_fmadd_ps(s[r], _mm256_set1_ps(g_cb_scale[w[r][b * bb]]), acc[r]);
    }
    for (int r = 0; r < 4; r++) out[r] = rs[r] * hsum256(acc[r]);
#else
    for (int r = 0; r < 4; r++) {
        float acc = 0.f;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *p = w[r] + b * bb;
            float s = 0.f;
            for (int v = 0; v < nv; v++) {
                const float *e = cb + D * p[1 + v], *xv = x + b * B + v * D;
                for (int j = 0; j < D; j++) s += e[j] * xv[j];
            }
            acc += g_cb_scale[p[0]] * s;
        }
        out[r] = rs[r] * acc;
    }
#endif
}

#if defined(LB_AVX512)
/* cbk4 in integers (decoding, and prompts from a tile looked up once: pp128 1.47x on pycode-30m): the 256 two-value points rounded to int8 with one scale (the largest
   |value| / 127, built per matmul job: 512 values) and offset by 128, held as 256 16-bit words in 8
   registers. A point is one word, so 32 indices widened to 16 bits select 64 weights with 4 vpermi2w
   (64 words each) and 3 blends on the index's bits 6 and 7; vpdpbusd multiplies them with the 8-bit
   activations (q8 blocks of 32 = one cbk4 block) and 128 * sum(x) removes the offset. 3.2x the float
   kernel on a Zen 5 (512 x 1280: 17 against 56 us, one thread); the rounding moves a product by at
   most half a step of the codebook's int8 grid (checked in test_native_kernels). Gathers measured
   slower than the float kernel; D = 4 types by vpermi2d (8 pairs) gained only 1.3x, so they stay float. */
typedef struct { __m512i t[8]; float s; } cb4_tab;

static int cb4_tab_build(const float *cb, cb4_tab *T) {
    float amax = 0.f;
    for (int i = 0; i < 512; i++) { const float a = fabsf(cb[i]); amax = a > amax ? a : amax; }
    if (!(amax < INFINITY)) return 0;   /* non-finite points (NaN included): the float kernel */
    const float s = amax > 0.f ? amax / 127.f : 1.f, inv = 1.f / s;
    uint8_t u[512];
    for (int i = 0; i < 512; i++) u[i] = (uint8_t)(lrintf(cb[i] * inv) + 128);
    for (int j = 0; j < 8; j++) T->t[j] = _mm512_loadu_si512(u + 64 * j);
    T->s = s;
    return 1;
}

static inline __m512i cb4_lookup(const cb4_tab *T, const uint8_t *p, int two) {
    const __m512i b6 = _mm512_set1_epi16(64), b7 = _mm512_set1_epi16(128);
    const __m128i i0 = _mm_loadu_si128((const __m128i *)(p + 1));
    const __m128i i1 = two ? _mm_loadu_si128((const __m128i *)(p + 18)) : _mm_setzero_si128();
    const __m512i k = _mm512_cvtepu8_epi16(_mm256_set_m128i(i1, i0));
    const __mmask32 m6 = _mm512_test_epi16_mask(k, b6), m7 = _mm512_test_epi16_mask(k, b7);
    const __m512i lo = _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(T->t[0], k, T->t[1]),
                                               _mm512_permutex2var_epi16(T->t[2], k, T->t[3]));
    const __m512i hi = _mm512_mask_blend_epi16(m6, _mm512_permutex2var_epi16(T->t[4], k, T->t[5]),
                                               _mm512_permutex2var_epi16(T->t[6], k, T->t[7]));
    return _mm512_mask_blend_epi16(m7, lo, hi);
}

/* A row's offset int8 weights in order (prompts: looked up once per 4-row tile, then every token). */
static void cb4_unpack_row(const cb4_tab *T, const uint8_t *w, int64_t nb, uint8_t *u) {
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        _mm512_mask_storeu_epi8(u + 32 * b, two ? ~0ULL : 0xffffffffULL, cb4_lookup(T, w + 17 * b, two));
    }
}

/* u: the 4 rows unpacked by cb4_unpack_row, or NULL (decoding: looked up here). */
static void cb4_dot4_i8(const cb4_tab *T, const uint8_t *const w[4], const uint8_t *const *u, const float rs[4],
                        const int8_t *xq, const float *xd, int64_t nb, float out[4]) {
    const __m512i ones = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
    __m512 acc[4];
    for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;   /* an odd last block: the upper half's activations and scale are 0 */
        const __m512i xv = _mm512_maskz_loadu_epi8(two ? ~0ULL : 0xffffffffULL, xq + 32 * b);
        const __m512i xs = _mm512_slli_epi32(_mm512_dpbusd_epi32(zero, ones, xv), 7);
        const __m256 xd0 = _mm256_set1_ps(xd[b]), xd1 = _mm256_set1_ps(two ? xd[b + 1] : 0.f);
        for (int r = 0; r < 4; r++) {
            const uint8_t *p = w[r] + 17 * b;
            const __m512i g = u ? _mm512_maskz_loadu_epi8(two ? ~0ULL : 0xffffffffULL, u[r] + 32 * b) : cb4_lookup(T, p, two);
            const __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, g, xv), xs);
            const __m256 f0 = _mm256_mul_ps(xd0, _mm256_set1_ps(g_cb_scale[p[0]]));
            const __m256 f1 = _mm256_mul_ps(xd1, _mm256_set1_ps(two ? g_cb_scale[p[17]] : 0.f));
            const __m512 f = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(f0)), _mm256_castps_pd(f1), 1));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), f, acc[r]);
        }
    }
    for (int r = 0; r < 4; r++) out[r] = rs[r] * T->s * _mm512_reduce_add_ps(acc[r]);
}
#endif

static void cb_dot4(const lb_weight *W, const uint8_t *const w[4], const float rs[4], const float *x, float out[4]) {
    switch (W->type) {
    case LB_CBK2: cb_dot4_impl(W, w, rs, x, out, 4, LB_CBK2_BLOCK_SIZE); break;
    case LB_CBK4: cb_dot4_impl(W, w, rs, x, out, 2, LB_CBK4_BLOCK_SIZE); break;
    default: cb_dot4_impl(W, w, rs, x, out, 4, LB_D4L2_BLOCK_SIZE); break;
    }
}
