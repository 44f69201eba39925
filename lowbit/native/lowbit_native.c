/* lowbit native CPU kernels. Compiled once per feature level (LB_AVX512: AVX-512 BW/VL + VNNI,
   LB_AVX2: AVX2 + FMA + F16C, neither: portable scalar); the loader picks the best level the CPU has.
   Weights are read straight from the memory map: every kernel fuses dequantization with the dot
   product, 4 weight rows at a time against one activation row (decoding), or against 4 activation
   rows at once for prompts (AVX-512: q8_0 and k-quant tiles, below). Activations for integer types are
   quantized once per matmul input to 8-bit blocks (like GGML's q8_0) and multiplied with integer
   dot products (vpdpbusd on VNNI). Work is split over a persistent pthread pool. */
#define _GNU_SOURCE
#include "lowbit_native.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(LB_AVX512) || defined(LB_AVX2)
#include <immintrin.h>
#endif

#ifndef LB_SOURCE_HASH
#define LB_SOURCE_HASH "dev"
#endif
#if defined(LB_AVX512)
#define LB_LEVEL "avx512vnni"
#elif defined(LB_AVX2)
#define LB_LEVEL "avx2"
#else
#define LB_LEVEL "scalar"
#endif

#define QK 32            /* q8 block: 32 int8 + one scale */
#define Q8_0_BYTES 34
#define MAX_THREADS 256

const char *lb_level_name(void) { return LB_LEVEL; }
const char *lb_source_hash(void) { return LB_SOURCE_HASH; }

int lb_cpu_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("bmi2"))
        return 1;
#endif
    return 0;
}

/* ---------------------------------------------------------------- fp16 / bf16 scalars */

static inline float fp16_to_f32(uint16_t h) {
#if defined(LB_AVX512) || defined(LB_AVX2)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        float f = (float)mant * 5.9604644775390625e-08f;   /* subnormal: mant * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

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

#define QKK 256
#define PF_BYTES 16384   /* decode kernels: software prefetch distance (see PF_BLOCK) */

static int kq_kind(int type) { return type >= LB_Q2_K && type <= LB_Q6_K ? type - LB_Q2_K + 2 : 0; }

/* kind -> sub-block size, bits, affine, super-block bytes, offset of symmetric quants */
static const int KQ_S[7] = {0, 0, 16, 16, 32, 32, 16};
static const int KQ_BITS[7] = {0, 0, 2, 3, 4, 5, 6};
static const int KQ_AFFINE[7] = {0, 0, 1, 0, 1, 1, 0};
static const int KQ_BYTES[7] = {0, 0, 84, 110, 144, 176, 210};
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

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#if defined(LB_AVX512)
/* lane i = the sum of v[i]'s 16 lanes: a transposing tree (45 shuffles/adds instead of 16 reductions) */
static inline __m512 hsum16x16(const __m512 v[16]) {
    __m512 s[8], m[4], z[2];
    for (int i = 0; i < 8; i++)
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        m[i] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; i++)
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
}
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
   hardware prefetchers alone leave decoding well short of the memory bandwidth (one thread: 22
   against 35 GB/s, q6_k 8 against 40, tools/bench_decode_kernels.py). */
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

/* ---------------------------------------------------------------- type table */

enum { ACT_F32 = 0, ACT_Q8 = 1, ACT_QK = 2 };   /* float, 8-bit blocks of 32, 8-bit blocks of 256 */

int lb_type_supported(int type) { return type >= LB_F32 && type <= LB_D4L2; }

static int cb_kind(int type);
static int64_t cb_row_bytes(int type, int64_t cols);

static int act_format(int type) {
    if (type == LB_Q8_0) return ACT_Q8;
    if (kq_kind(type)) return ACT_QK;
#if defined(LB_AVX512)
    if (type == LB_CBK4) return ACT_Q8;   /* the int8-codebook kernels (cb4_dot4_i8) */
#endif
    return ACT_F32;
}

int64_t lb_row_bytes(int type, int64_t cols) {
    if (cols <= 0) return -1;
    switch (type) {
    case LB_F32: return cols * 4;
    case LB_F16: case LB_BF16: return cols * 2;
    case LB_Q8_0: return cols % QK ? -1 : cols / QK * Q8_0_BYTES;
    case LB_Q2_K: case LB_Q3_K: case LB_Q4_K: case LB_Q5_K: case LB_Q6_K: return kq_row_bytes(kq_kind(type), cols);
    case LB_CBK2: case LB_CBK4: case LB_D4L2: return cb_row_bytes(type, cols);
    }
    return -1;
}

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
            const uint8_t *p = w[r] + b * Q8_0_BYTES;
            __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                                            _mm256_loadu_si256((const __m256i *)(p + 2 + Q8_0_BYTES)), 1);
            __mmask64 neg = _mm512_movepi8_mask(wv);
            __m512i dp = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), _mm512_mask_sub_epi8(xv, neg, zero, xv));
            __m128i hh = _mm_insert_epi16(_mm_cvtsi32_si128(rd16(p)), rd16(p + Q8_0_BYTES), 1);
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
            const uint8_t *p = w[r] + b * Q8_0_BYTES;
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
            const uint8_t *p = w[r] + b * Q8_0_BYTES;
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
            const uint8_t *blk = p + b * Q8_0_BYTES;
            float d = fp16_to_f32(rd16(blk));
            for (int i = 0; i < QK; i++) out[b * QK + i] = d * (float)(int8_t)blk[2 + i];
        }
        break;
    default: kq_dequant_row(kq_kind(type), p, cols, out); break;
    }
}

/* ---------------------------------------------------------------- codebook types (cbk2, cbk4, d4l2)

   format_spec/types/codebook.md: a row is blocks of B weights, each one scale byte s then B/D index
   bytes into a codebook of 256 points of D values: w = (d_r * SCALE[s]) * P[idx][j]. The tensor's
   side data reach the kernels through lb_weight's codebook / row_scale, widened to float once at
   load (4 KiB at most: stays in L1). Activations stay float: a block's dot product is the sum over
   its vectors of <P[idx], x>, times the block's scale; the row scale is applied once at the end. */

static const int CB_D[3] = {4, 2, 4}, CB_B[3] = {64, 32, 32};   /* cbk2, cbk4, d4l2 */

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
    case LB_CBK2: cb_dot4_impl(W, w, rs, x, out, 4, 64); break;
    case LB_CBK4: cb_dot4_impl(W, w, rs, x, out, 2, 32); break;
    default: cb_dot4_impl(W, w, rs, x, out, 4, 32); break;
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
            const uint8_t *p = rows[r] + 2 * bp * Q8_0_BYTES;
            const __m256i hi = two ? _mm256_loadu_si256((const __m256i *)(p + 2 + Q8_0_BYTES)) : _mm256_setzero_si256();
            const __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))), hi, 1);
            _mm512_store_si512(w + (bp * 4 + r) * 64, wv);
            cw[bp * 4 + r] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k80, wv));
            const float d1 = two ? fp16_to_f32(rd16(p + Q8_0_BYTES)) : 0.f;
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

/* ---------------------------------------------------------------- thread pool */

typedef void (*work_fn)(void *arg, int ith, int nth);

static int g_nth = 1;
static pthread_t g_threads[MAX_THREADS];
static atomic_int g_gen, g_done, g_quit, g_sleepers;
static atomic_int g_bar_count, g_bar_phase;
static work_fn g_fn;
static void *g_arg;
static pthread_mutex_t g_call_lock = PTHREAD_MUTEX_INITIALIZER;   /* one parallel call at a time */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void futex_wait(atomic_int *addr, int expected) {
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)addr; (void)expected; sched_yield();
#endif
}

static void futex_wake_all(atomic_int *addr) {
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

/* All threads of a parallel call meet here between dependent steps. Spin briefly, then yield:
   the machine may be shared, and a preempted partner must get the core back. */
static void barrier(int nth) {
    if (nth == 1) return;
    int phase = atomic_load_explicit(&g_bar_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&g_bar_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&g_bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_bar_phase, 1, memory_order_acq_rel);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&g_bar_phase, memory_order_acquire) == phase; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
}

/* Workers spin for a short while after a job (the next layer's call comes within microseconds
   during decoding), then sleep on a futex so an idle model costs no CPU. */
static int g_start_gen[MAX_THREADS];   /* the job generation when a worker was created */

static void *worker_main(void *p) {
    int ith = (int)(intptr_t)p;
    int seen = g_start_gen[ith];   /* not a fresh read: a job posted before we run must not be missed */
    for (;;) {
        double t0 = 0;
        for (int spins = 0;; spins++) {
            int gen = atomic_load_explicit(&g_gen, memory_order_acquire);
            if (gen != seen) { seen = gen; break; }
            if (spins < 2000) { cpu_relax(); continue; }
            if (t0 == 0) t0 = now_s();
            if (now_s() - t0 < 2e-3) { if (spins % 64 == 0) sched_yield(); else cpu_relax(); continue; }
            atomic_fetch_add(&g_sleepers, 1);
            if (atomic_load(&g_gen) == seen) futex_wait(&g_gen, seen);
            atomic_fetch_sub(&g_sleepers, 1);
            t0 = 0;
            spins = 0;
        }
        if (atomic_load(&g_quit)) return NULL;
        g_fn(g_arg, ith, g_nth);
        atomic_fetch_add_explicit(&g_done, 1, memory_order_acq_rel);
    }
}

static void pool_stop(void) {
    if (g_nth <= 1) return;
    atomic_store(&g_quit, 1);
    atomic_fetch_add(&g_gen, 1);
    futex_wake_all(&g_gen);
    for (int i = 1; i < g_nth; i++) pthread_join(g_threads[i], NULL);
    atomic_store(&g_quit, 0);
    g_nth = 1;
}

int lb_init(int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    pthread_mutex_lock(&g_call_lock);
    if (nthreads != g_nth) {
        pool_stop();
        g_nth = nthreads;
        for (int i = 1; i < nthreads; i++) {
            g_start_gen[i] = atomic_load(&g_gen);
            if (pthread_create(&g_threads[i], NULL, worker_main, (void *)(intptr_t)i) != 0) { g_nth = i; break; }
        }
    }
    int n = g_nth;
    pthread_mutex_unlock(&g_call_lock);
    return n;
}

int lb_threads(void) { return g_nth; }

static void pool_run(work_fn fn, void *arg) {
    int nth = g_nth;
    g_fn = fn;
    g_arg = arg;
    atomic_store(&g_done, 0);
    atomic_store(&g_bar_count, 0);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_acq_rel);
    if (atomic_load(&g_sleepers)) futex_wake_all(&g_gen);
    fn(arg, 0, nth);
    for (int spins = 0; atomic_load_explicit(&g_done, memory_order_acquire) != nth - 1; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
}

/* ---------------------------------------------------------------- scratch memory */

static void *g_scratch;
static size_t g_scratch_bytes;

static void *scratch(size_t bytes) {
    if (bytes > g_scratch_bytes) {
        free(g_scratch);
        g_scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
        g_scratch_bytes = g_scratch ? bytes : 0;
    }
    return g_scratch;
}

/* ================================================================ Huffman-coded types (`<base>.h`)

   A `<base>.h` tensor stores the base type's rows with their index bytes canonical-Huffman coded,
   one byte-aligned chunk per row (format_spec/types/huffman.md). A matmul decodes the 4 rows of a
   tile into a small per-thread scratch in the base layout (L1-resident) and runs the base type's
   own kernels on it, so any base type with a kernel works coded too: the weight bytes are read once
   from the map and no tensor is ever decoded whole. Decoding is one look-up per step in a table of
   2^LB_HUFF_BITS entries built once per tensor, each entry giving one or two symbols (two when
   both codes fit the window); the 4 rows' chunks are 4 independent bit streams decoded in
   lock-step, for instruction-level parallelism. The bit reader never reads outside the stream,
   and a chunk decodes exactly as the spec says: bits past its end read as zeros (huff_decode4
   says how), so a damaged chunk decodes to other bytes, every one of them valid for the base
   type, the same as in the Python reader. */

#ifndef LB_HUFF_BITS
#define LB_HUFF_BITS 13          /* window of one look-up: >= the longest code (12), <= 14 */
#endif
#define HUFF_MAXLEN 12
#define HUFF_STEPS (56 / LB_HUFF_BITS)   /* look-ups per refill, each with >= LB_HUFF_BITS valid bits */
#define HUFF_SLACK 16                    /* bytes past n_idx a decode may write */

struct lb_huff {
    uint8_t table[1 << LB_HUFF_BITS][4]; /* sym0, sym1, bits, count (1 or 2) */
    int64_t rows, n_idx, n_other, row_bytes, nruns;
    const uint8_t *other, *stream, *offsets;
    uint64_t stream_bytes;
    uint8_t lens[256];                   /* code lengths */
    uint32_t runs[];                     /* (is_index, length) pairs */
};

static inline uint32_t huff_off(const lb_huff *h, int64_t r) { return rd32(h->offsets + 4 * r); }

void lb_huff_free(lb_huff *h) { free(h); }

lb_huff *lb_huff_new(const uint8_t *lengths, int64_t rows, int64_t n_idx, int64_t n_other, const uint8_t *other,
                     const uint8_t *stream, uint64_t stream_bytes, const uint8_t *offsets,
                     const uint32_t *runs, int64_t nruns, int64_t row_bytes) {
    if (!lengths || !offsets || !runs || rows < 1 || rows > UINT32_MAX || n_idx < 0 || n_other < 0 ||
        n_idx > (1 << 30) || n_other > (1 << 30) || row_bytes != n_idx + n_other || nruns < 0 || nruns > row_bytes + 1 ||
        (n_other && !other) || (stream_bytes && !stream) || stream_bytes >= ((uint64_t)1 << 32))
        return NULL;
    uint32_t kraft = 0;
    int used = 0;
    for (int s = 0; s < 256; s++) {
        if (lengths[s] > HUFF_MAXLEN) return NULL;
        if (lengths[s]) { kraft += 1u << (HUFF_MAXLEN - lengths[s]); used++; }
    }
    if (used ? kraft != (1u << HUFF_MAXLEN) : n_idx > 0) return NULL;   /* complete, or unused */
    if (rd32(offsets) != 0 || rd32(offsets + 4 * rows) != stream_bytes) return NULL;
    for (int64_t r = 0; r < rows; r++)
        if (rd32(offsets + 4 * r + 4) < rd32(offsets + 4 * r)) return NULL;
    int64_t si = 0, so = 0;
    for (int64_t i = 0; i < nruns; i++) *(runs[2 * i] ? &si : &so) += runs[2 * i + 1];
    if (si != n_idx || so != n_other) return NULL;
    lb_huff *h = aligned_alloc(64, (sizeof(lb_huff) + 8 * nruns + 63) / 64 * 64);
    if (!h) return NULL;
    h->rows = rows; h->n_idx = n_idx; h->n_other = n_other; h->row_bytes = row_bytes; h->nruns = nruns;
    h->other = other; h->stream = stream; h->offsets = offsets; h->stream_bytes = stream_bytes;
    memcpy(h->runs, runs, 8 * nruns);
    memcpy(h->lens, lengths, 256);
    /* canonical codes (symbols by length, then value) -> one-symbol table over HUFF_MAXLEN bits */
    static const int M = 1 << HUFF_MAXLEN;
    uint16_t one[1 << HUFF_MAXLEN];
    memset(one, 0, sizeof one);
    uint32_t code = 0;
    int prev = 0;
    for (int l = 1; l <= HUFF_MAXLEN; l++)
        for (int s = 0; s < 256; s++) {
            if (lengths[s] != l) continue;
            code <<= l - prev; prev = l;
            const uint32_t lo = code << (HUFF_MAXLEN - l), span = 1u << (HUFF_MAXLEN - l);
            for (uint32_t w = lo; w < lo + span && w < (uint32_t)M; w++) one[w] = (uint16_t)(s | l << 8);
            code++;
        }
    /* the look-up window: the first symbol from its top bits, a second one when its code fits too */
    const uint32_t B = LB_HUFF_BITS, mask = (1u << B) - 1;
    for (uint32_t w = 0; w <= mask; w++) {
        const uint32_t e1 = one[w >> (B - HUFF_MAXLEN)], l1 = e1 >> 8;
        uint8_t *e = h->table[w];
        e[0] = (uint8_t)e1; e[1] = 0; e[2] = (uint8_t)l1; e[3] = 1;
        if (l1 && l1 < B) {
            const uint32_t e2 = one[((w << l1) & mask) >> (B - HUFF_MAXLEN)], l2 = e2 >> 8;
            if (l2 && l1 + l2 <= B) { e[1] = (uint8_t)e2; e[2] = (uint8_t)(l1 + l2); e[3] = 2; }
        }
        if (!used) memset(e, 0, 4);
    }
    return h;
}

/* 8 chunk bytes from pos, big-endian; bytes at or past the chunk's end (len) read as zero */
static inline uint64_t huff_load(const uint8_t *p, int64_t pos, int64_t len) {
    if (pos + 8 <= len) { uint64_t v; memcpy(&v, p + pos, 8); return __builtin_bswap64(v); }
    uint64_t v = 0;
    for (int i = 0; i < 8 && pos + i < len; i++) v |= (uint64_t)p[pos + i] << (56 - 8 * i);
    return v;
}

/* Refill to 56..63 valid bits, branch-free: the bits below them are the stream's next bits or
   zeros, either of which the next refill ORs in again. FAST: the 8 bytes lie inside the chunk. */
#define HUFF_REFILL_FAST(buf, nbits, q)                                              \
    do {                                                                             \
        uint64_t v_; memcpy(&v_, (q), 8);                                            \
        (buf) |= __builtin_bswap64(v_) >> (nbits);                                   \
        (q) += (63 - (nbits)) >> 3; (nbits) |= 56;                                   \
    } while (0)

/* One look-up: an entry is the bytes sym0, sym1, bits, count, read by separate loads (the load
   ports are idler than the ALUs here); both symbol bytes are stored, the second overwritten later
   when the entry had one. */
#define HUFF_STEP(buf, nbits, o)                                                     \
    do {                                                                             \
        const uint8_t *e_ = T[(buf) >> (64 - LB_HUFF_BITS)];                         \
        memcpy((o), e_, 2);                                                          \
        const unsigned b_ = e_[2];                                                   \
        (o) += e_[3];                                                                \
        (buf) <<= b_; (nbits) -= (int)b_;                                            \
    } while (0)

/* Continue one stream to its n-th symbol. `lim` bounds the reads (a refill of fewer than 8 bytes
   before it reads the rest as zeros): the chunk's end for the exact decode, the stream's end
   otherwise. Returns the bits the first n symbols took (a two-symbol entry may write one more
   symbol into the slack: its bits are not counted). */
static __attribute__((noinline)) int64_t huff_finish(const uint8_t (*T)[4], const uint8_t *lens, uint64_t buf,
                                                     int nbits, const uint8_t *p, const uint8_t *q,
                                                     const uint8_t *lim, uint8_t *o, int64_t i, int64_t n) {
    uint8_t *oo = o + i, *const end = o + n;
    while (oo < end) {
        if (nbits < LB_HUFF_BITS) {
            if (lim - q >= 8) HUFF_REFILL_FAST(buf, nbits, q);
            else {
                buf |= huff_load(q, 0, lim - q) >> nbits;
                q += (63 - nbits) >> 3;
                nbits |= 56;
            }
        }
        HUFF_STEP(buf, nbits, oo);
    }
    return 8 * (q - p) - nbits - (oo > end ? lens[end[0]] : 0);
}

/* The index bytes of rows ids[0..3] into out[k][0..n_idx) (each with HUFF_SLACK bytes of room).

   Reads may run past a chunk's end into the next chunks (never past the stream's end): a chunk
   whose n codes took no more bits than it has decoded exactly as the spec's decoder would (each
   symbol depends on its own code's bits only). One that took more (a damaged, short chunk, whose
   missing bits the spec reads as zeros) is decoded again with reads bounded by its end. */
static void huff_decode4(const lb_huff *h, const int64_t ids[4], uint8_t *const out[4]) {
    const int64_t n = h->n_idx;
    if (!n) return;
    const uint8_t (*T)[4] = h->table;
    const uint8_t *const send = h->stream + h->stream_bytes;
#define HUFF_OPEN(k)                                                                  \
    const uint32_t a##k = huff_off(h, ids[k]);                                       \
    const uint8_t *p##k = h->stream + a##k, *q##k = p##k;                            \
    const int64_t len##k = (int64_t)huff_off(h, ids[k] + 1) - a##k;                  \
    uint64_t buf##k = 0; int nb##k = 0;                                              \
    uint8_t *o##k = out[k];
    HUFF_OPEN(0) HUFF_OPEN(1) HUFF_OPEN(2) HUFF_OPEN(3)
#undef HUFF_OPEN
    /* Lock-step rounds, in runs of R rounds that need no checks: a round advances a stream by at
       most 7 bytes and 2 * HUFF_STEPS symbols, so R is what the stream nearest the stream's end
       (a refill reads 8 bytes) or its last symbol allows; recomputed until it is 0. */
    for (;;) {
        int64_t R = INT64_MAX;
#define HUFF_ROOM(k)                                                                  \
        {   const int64_t left = send - q##k, rb_ = left >= 8 ? (left - 8) / 7 + 1 : 0;   \
            const int64_t rs_ = (n - (o##k - out[k])) / (2 * HUFF_STEPS);                \
            R = rb_ < R ? rb_ : R; R = rs_ < R ? rs_ : R; }
        HUFF_ROOM(0) HUFF_ROOM(1) HUFF_ROOM(2) HUFF_ROOM(3)
#undef HUFF_ROOM
        if (R <= 0) break;
        for (int64_t r = 0; r < R; r++) {
            HUFF_REFILL_FAST(buf0, nb0, q0); HUFF_REFILL_FAST(buf1, nb1, q1);
            HUFF_REFILL_FAST(buf2, nb2, q2); HUFF_REFILL_FAST(buf3, nb3, q3);
#pragma GCC unroll 4
            for (int k = 0; k < HUFF_STEPS; k++) {
                HUFF_STEP(buf0, nb0, o0); HUFF_STEP(buf1, nb1, o1);
                HUFF_STEP(buf2, nb2, o2); HUFF_STEP(buf3, nb3, o3);
            }
        }
    }
#define HUFF_CLOSE(k)                                                                                   \
    if (huff_finish(T, h->lens, buf##k, nb##k, p##k, q##k, send, out[k], o##k - out[k], n) > 8 * len##k)   \
        huff_finish(T, h->lens, 0, 0, p##k, p##k, p##k + len##k, out[k], 0, n);
    HUFF_CLOSE(0) HUFF_CLOSE(1) HUFF_CLOSE(2) HUFF_CLOSE(3)
#undef HUFF_CLOSE
}

/* A short copy without a library call (runs are a few to a few hundred bytes): fixed-size moves,
   the last one overlapping, never touching bytes outside [s, s + n). */
static inline void huff_copy(uint8_t *d, const uint8_t *s, uint32_t n) {
    if (n >= 16) {
        uint32_t i = 0;
        for (; i + 16 <= n; i += 16) memcpy(d + i, s + i, 16);
        if (i < n) memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8); memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4); memcpy(d + n - 4, s + n - 4, 4);
    } else {
        for (uint32_t i = 0; i < n; i++) d[i] = s[i];
    }
}

/* Interleave decoded index bytes with the row's other bytes into the base layout. */
static void huff_scatter(const lb_huff *h, int64_t row, const uint8_t *idx, uint8_t *dst) {
    const uint8_t *oth = h->other + row * h->n_other;
    for (int64_t i = 0; i < h->nruns; i++) {
        const uint32_t len = h->runs[2 * i + 1];
        if (h->runs[2 * i]) { huff_copy(dst, idx, len); idx += len; }
        else { huff_copy(dst, oth, len); oth += len; }
        dst += len;
    }
}

static size_t huff_scratch(const lb_huff *h) { return h ? 4 * (size_t)(h->row_bytes + h->n_idx + HUFF_SLACK + 128) : 0; }

/* Rows ids[0..nr) (nr 1..4) in the base layout at buf + k * row_bytes; rows[k] point at them
   (the last one repeated up to 4). */
static void huff_rows4(const lb_huff *h, const int64_t *ids, int nr, uint8_t *buf, const uint8_t *rows[4]) {
    const int64_t rb = h->row_bytes, ib = (h->n_idx + HUFF_SLACK + 63) / 64 * 64;
    uint8_t *idx = buf + 4 * ((rb + 63) / 64 * 64);
    int64_t id4[4];
    uint8_t *out[4];
    for (int k = 0; k < 4; k++) { id4[k] = ids[k < nr ? k : nr - 1]; out[k] = idx + k * ib; }
    huff_decode4(h, id4, out);
    for (int k = 0; k < 4; k++) {
        uint8_t *dst = buf + k * ((rb + 63) / 64 * 64);
        if (k < nr) huff_scatter(h, id4[k], out[k], dst);
        rows[k] = buf + (k < nr ? k : nr - 1) * ((rb + 63) / 64 * 64);
    }
}

int lb_huff_rows(const lb_huff *h, const int64_t *ids, int64_t n, uint8_t *out) {
    if (!h || !ids || !out || n < 0) return -1;
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= h->rows) return -1;
    uint8_t *buf = aligned_alloc(64, (huff_scratch(h) + 63) / 64 * 64);
    if (!buf) return -1;
    for (int64_t t = 0; t < n; t += 4) {
        const int nr = n - t < 4 ? (int)(n - t) : 4;
        const uint8_t *rows[4];
        huff_rows4(h, ids + t, nr, buf, rows);
        for (int k = 0; k < nr; k++) memcpy(out + (t + k) * h->row_bytes, rows[k], h->row_bytes);
    }
    free(buf);
    return 0;
}

int64_t lb_huff_bench(const lb_huff *h, int64_t reps) {
    if (!h || reps < 0) return -1;
    const int64_t ib = (h->n_idx + HUFF_SLACK + 63) / 64 * 64;
    uint8_t *buf = aligned_alloc(64, 4 * ib);
    if (!buf) return -1;
    uint8_t *out[4] = {buf, buf + ib, buf + 2 * ib, buf + 3 * ib};
    for (int64_t k = 0; k < reps; k++)
        for (int64_t r0 = 0; r0 < h->rows; r0 += 4) {
            int64_t ids[4];
            for (int j = 0; j < 4; j++) ids[j] = r0 + j < h->rows ? r0 + j : h->rows - 1;
            huff_decode4(h, ids, out);
        }
    volatile uint8_t sink = buf[0];
    (void)sink;
    free(buf);
    return reps * ((h->rows + 3) / 4 * 4) * h->n_idx;
}

/* Per-thread room for a decoded tile (grown by the caller before a parallel call). */
static uint8_t *g_hbuf[MAX_THREADS];
static size_t g_hcap[MAX_THREADS];

static int hbufs_reserve(size_t need) {
    for (int i = 0; i < g_nth && need; i++) {
        if (g_hcap[i] >= need) continue;
        free(g_hbuf[i]);
        g_hbuf[i] = aligned_alloc(64, (need + 63) / 64 * 64);
        g_hcap[i] = g_hbuf[i] ? need : 0;
        if (!g_hbuf[i]) return -1;
    }
    return 0;
}

#ifndef LB_HUFF_PF_TILES
#define LB_HUFF_PF_TILES 2   /* prefetch the chunks and other bytes this many 4-row tiles ahead */
#endif

/* Software prefetch of rows r0..r0+3's chunks and other bytes: the decoder's stream loads hang
   off its dependency chain (the next load's address needs the bits consumed), so a cache miss
   there stalls decoding; the hardware prefetchers see 4 interleaved streams late. */
static inline void huff_prefetch(const lb_huff *h, int64_t r0) {
#if defined(LB_AVX512) || defined(LB_AVX2)
    if (r0 >= h->rows) return;
    const int64_t r1 = r0 + 4 < h->rows ? r0 + 4 : h->rows;
    const uint32_t a = huff_off(h, r0) & ~63u, b = huff_off(h, r1);
    for (uint32_t o = a; o < b; o += 64) _mm_prefetch((const char *)h->stream + o, _MM_HINT_T0);
    const uint8_t *oth = h->other + r0 * h->n_other;
    for (int64_t o = 0; o < (r1 - r0) * h->n_other; o += 64) _mm_prefetch((const char *)oth + o, _MM_HINT_T0);
#else
    (void)h; (void)r0;
#endif
}

/* The 4 rows of tile r0 (nr real): straight from the map, or decoded into this thread's scratch. */
static inline void tile_rows(const lb_weight *W, int64_t rb, int64_t r0, int64_t nr, int ith, const uint8_t *rows[4]) {
    if (W->huff) {
        if (LB_HUFF_PF_TILES) huff_prefetch(W->huff, r0 + 4 * LB_HUFF_PF_TILES);
        const int64_t ids[4] = {r0, r0 + 1, r0 + 2, r0 + 3};
        huff_rows4(W->huff, ids, (int)nr, g_hbuf[ith], rows);
        return;
    }
    for (int r = 0; r < 4; r++) rows[r] = W->data + (r0 + (r < nr ? r : nr - 1)) * rb;
}

/* ================================================================ end of the Huffman-coded types */

/* ---------------------------------------------------------------- parallel steps */

typedef struct {              /* one matmul inside a step: y[n, rows] (+)= x W^T (+ bias) */
    const lb_weight *w;
    const float *x;           /* float activations [n, cols] */
    const int8_t *xq;         /* 8-bit activations in blocks of 32 (q8_0) */
    const float *xd;
    const int8_t *kq;         /* 8-bit activations in blocks of 256 with sums per 16 (k-quants) */
    const float *kd;
    const int16_t *ks;
    const int8_t *kp, *kp2;   /* the same in q4_k's and q2_k's quant orders (AVX-512 only, else NULL) */
    float *y;
    int64_t ldy;              /* row stride of y */
    int accumulate;
} mm_job;

static int64_t split_lo(int64_t total, int ith, int nth) { return total * ith / nth; }

/* Per-thread room for a tile of 4 unpacked k-quant rows, grown by the caller before a parallel call. */
static uint8_t *g_kbuf[MAX_THREADS];
static size_t g_kcap[MAX_THREADS];

static int kbufs_reserve(int64_t cols) {
    size_t need = 4 * kq_row_scratch((cols + QKK - 1) / QKK);
    if (q8_tile_scratch(cols) > need) need = q8_tile_scratch(cols);
    if ((size_t)(16 * cols + 64) > need) need = (size_t)(16 * cols + 64);   /* 4 float rows (codebook prompt tiles) */
    for (int i = 0; i < g_nth; i++) {
        if (g_kcap[i] >= need) continue;
        free(g_kbuf[i]);
        g_kbuf[i] = aligned_alloc(64, (need + 63) / 64 * 64);
        g_kcap[i] = g_kbuf[i] ? need : 0;
        if (!g_kbuf[i]) return -1;
    }
    return 0;
}

/* Quantize n activation rows for the formats `fmt` (bit 1 << ACT_Q8, 1 << ACT_QK) needs. */
typedef struct { int8_t *xq; float *xd; int8_t *kq; float *kd; int16_t *ks; int8_t *kp, *kp2; } act_bufs;

/* Epilogue of every tile: add the bias, then store or accumulate the nr outputs of token t. */
static inline void store_rows(const mm_job *J, int64_t t, int64_t r0, int64_t nr, const float *o) {
    const lb_weight *W = J->w;
    float *y = J->y + t * J->ldy + r0;
    for (int r = 0; r < nr; r++) {
        float v = o[r] + (W->bias ? W->bias[r0 + r] : 0.f);
        y[r] = J->accumulate ? y[r] + v : v;
    }
}

/* Split the 4-row tiles of up to 3 matmuls (same input) over the threads; each tile meets every
   token while its weight rows are hot in L1. */
static void prefetch_bytes(const uint8_t *p, int64_t bytes) {
#if defined(LB_AVX512) || defined(LB_AVX2)
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
#else
    (void)p; (void)bytes;
#endif
}

/* Decoding: the first PF_BYTES of this thread's share of job `from` onwards (the decode kernels
   prefetch ahead inside a job, not into its first tiles). layer_work calls it before the serial
   steps (norm, quantization) that precede a matmul, so those bytes arrive meanwhile. */
static void matmuls_prefetch(const mm_job *jobs, int njobs, int from, int64_t n, int ith, int nth) {
    if (n > 2) return;
    int64_t tiles[3], total = 0;
    for (int j = 0; j < njobs; j++) { tiles[j] = (jobs[j].w->rows + 3) / 4; total += tiles[j]; }
    int64_t lo = split_lo(total, ith, nth), hi = split_lo(total, ith + 1, nth), base = 0;
    for (int j = 0; j < njobs; j++) {
        int64_t a = lo > base ? lo - base : 0, b = hi - base < tiles[j] ? hi - base : tiles[j];
        base += tiles[j];
        if (j < from || a >= b || !(kq_kind(jobs[j].w->type) || cb_kind(jobs[j].w->type)) || jobs[j].w->huff) continue;
        const int64_t rb = lb_row_bytes(jobs[j].w->type, jobs[j].w->cols);
        const int64_t bytes = 4 * rb * (b - a) < PF_BYTES ? 4 * rb * (b - a) : PF_BYTES;
        prefetch_bytes(jobs[j].w->data + 4 * a * rb, bytes);
        return;
    }
}

static void matmuls(const mm_job *jobs, int njobs, int64_t n, int ith, int nth) {
    int64_t tiles[3], total = 0;
    for (int j = 0; j < njobs; j++) { tiles[j] = (jobs[j].w->rows + 3) / 4; total += tiles[j]; }
    int64_t lo = split_lo(total, ith, nth), hi = split_lo(total, ith + 1, nth);
    int64_t base = 0;
    for (int j = 0; j < njobs; j++) {
        const mm_job *J = &jobs[j];
        const lb_weight *W = J->w;
        int64_t a = lo > base ? lo - base : 0, b = hi - base < tiles[j] ? hi - base : tiles[j];
        base += tiles[j];
        if (a >= b) continue;
        if (j + 1 < njobs) matmuls_prefetch(jobs, njobs, j + 1, n, ith, nth);   /* the next job's first tiles */
        const int64_t rb = lb_row_bytes(W->type, W->cols), k = W->cols;
        const int kind = kq_kind(W->type);
        if (kind) {   /* unpack the tile's 4 rows once, then run every token against them */
            const int64_t nb = (k + QKK - 1) / QKK;
            const int64_t nfull = k / QKK;
            const dot4k_fn direct = n <= 2 && nfull ? kq_direct(kind) : NULL;
            kq_row R[4];
            for (int r = 0; r < 4; r++) R[r] = kq_row_at(g_kbuf[ith] + r * kq_row_scratch(nb), nb);
            for (int64_t tile = a; tile < b; tile++) {
                int64_t r0 = tile * 4, nr = W->rows - r0 < 4 ? W->rows - r0 : 4;
                if (direct) {   /* whole blocks straight from the map, the tail block unpacked */
                    const uint8_t *rows[4];
                    tile_rows(W, rb, r0, nr, ith, rows);
                    kq_row T[4];
#if defined(LB_AVX512) || defined(LB_AVX2)
                    const int tail4 = kind == 4 && nb > nfull;   /* q4_k tails: their own direct kernel */
#else
                    const int tail4 = 0;
#endif
                    if (nb > nfull && !tail4)
                        for (int r = 0; r < 4; r++) {
                            T[r] = kq_row_at(g_kbuf[ith] + r * kq_row_scratch(1), 1);
                            if (r < nr) kq_unpack_row(kind, rows[r] + nfull * KQ_BYTES[kind], k - nfull * QKK, T[r]);
                            else T[r] = T[nr - 1];
                        }
                    /* prefetch the tile about PF_BYTES ahead (past the range: this one again, already cached);
                       8 to 64 KiB measured alike on a Zen 5, one tile (4.5 KiB at 2048 q4_k columns) less */
                    const int64_t pft = (PF_BYTES + 4 * rb - 1) / (4 * rb);
                    const uint8_t *pf = tile + pft < b && !W->huff ? W->data + (r0 + 4 * pft) * rb : rows[0];
                    const int64_t pfs = (4 * rb + 64 * nfull - 1) / (64 * nfull) * 64;
                    for (int64_t t = 0; t < n; t++) {
                        float o[4], ot[4];
                        const int8_t *xq = J->kq + t * nb * QKK;
                        const int8_t *kp = kind <= 3 ? J->kp2 : J->kp;
                        const int8_t *xp = kp ? kp + t * nb * QKK : NULL;
                        const float *xd = J->kd + t * nb;
                        const int16_t *xs = J->ks + t * nb * 16;
                        direct(rows, xq, xp, xd, xs, nfull, t ? rows[0] : pf, pfs, o);
                        if (tail4) {
#if defined(LB_AVX512) || defined(LB_AVX2)
                            const uint8_t *tails[4] = {rows[0] + nfull * 144, rows[1] + nfull * 144, rows[2] + nfull * 144, rows[3] + nfull * 144};
                            dot4_q4k_tail(tails, (int)(k - nfull * QKK), xq + nfull * QKK, xd[nfull], xs + nfull * 16, ot);
                            for (int r = 0; r < 4; r++) o[r] += ot[r];
#endif
                        } else if (nb > nfull) {
                            dot4_kq(T, xq + nfull * QKK, xd + nfull, xs + nfull * 16, 1, ot);
                            for (int r = 0; r < 4; r++) o[r] += ot[r];
                        }
                        store_rows(J, t, r0, nr, o);
                    }
                    continue;
                }
                {
                    const uint8_t *rows[4];
                    tile_rows(W, rb, r0, nr, ith, rows);
                    for (int r = 0; r < nr; r++) kq_unpack_row(kind, rows[r], k, R[r]);
                }
                kq_row Rt[4] = {R[0], R[nr > 1 ? 1 : 0], R[nr > 2 ? 2 : 0], R[nr > 3 ? 3 : 0]};
#if defined(LB_AVX512)
                for (int64_t t0 = 0; t0 < n; t0 += KQ_NT) {
                    const int nt = n - t0 < KQ_NT ? (int)(n - t0) : KQ_NT;
                    const int8_t *xq = J->kq + t0 * nb * QKK;
                    const float *xd = J->kd + t0 * nb;
                    const int16_t *xs = J->ks + t0 * nb * 16;
                    float o[KQ_NT][4];
                    switch (nt) {
                    case 4: dot_kq_tile(Rt, xq, xd, xs, nb, 4, o); break;
                    case 3: dot_kq_tile(Rt, xq, xd, xs, nb, 3, o); break;
                    case 2: dot_kq_tile(Rt, xq, xd, xs, nb, 2, o); break;
                    default: dot_kq_tile(Rt, xq, xd, xs, nb, 1, o); break;
                    }
                    for (int t = 0; t < nt; t++) {
                        store_rows(J, t0 + t, r0, nr, o[t]);
                    }
                }
                continue;
#endif
                for (int64_t t = 0; t < n; t++) {
                    float o[4];
                    dot4_kq(Rt, J->kq + t * nb * QKK, J->kd + t * nb, J->ks + t * nb * 16, nb, o);
                    store_rows(J, t, r0, nr, o);
                }
            }
            continue;
        }
#if defined(LB_AVX512)
        if (W->type == LB_Q8_0 && n >= 4) {   /* a prompt: repacked tiles against 4 tokens at a time */
            const int64_t nb = k / QK;
            for (int64_t tile = a; tile < b; tile++) {
                int64_t r0 = tile * 4, nr = W->rows - r0 < 4 ? W->rows - r0 : 4;
                const uint8_t *rows[4];
                tile_rows(W, rb, r0, nr, ith, rows);
                const q8_tile T = q8_tile_pack(g_kbuf[ith], rows, k);
                for (int64_t t0 = 0; t0 < n; t0 += 4) {
                    const int nt = n - t0 < 4 ? (int)(n - t0) : 4;
                    const int8_t *xq = J->xq + t0 * k;
                    const float *xd = J->xd + t0 * nb;
                    float o[4][4];
                    switch (nt) {
                    case 4: q8_tile_dot(T, xq, xd, k, 4, o); break;
                    case 3: q8_tile_dot(T, xq, xd, k, 3, o); break;
                    case 2: q8_tile_dot(T, xq, xd, k, 2, o); break;
                    default: q8_tile_dot(T, xq, xd, k, 1, o); break;
                    }
                    for (int t = 0; t < nt; t++) {
                        store_rows(J, t0 + t, r0, nr, o[t]);
                    }
                }
            }
            continue;
        }
#endif
        if (cb_kind(W->type)) {   /* decoding: fused from the map; prompts: a tile dequantized once, then dot4_f32 */
            float *tb = (float *)g_kbuf[ith];
#if defined(LB_AVX512)
            cb4_tab T4;
            T4.s = 0.f;
            const int i8 = W->type == LB_CBK4 && cb4_tab_build(W->codebook, &T4);
#endif
            for (int64_t tile = a; tile < b; tile++) {
                int64_t r0 = tile * 4, nr = W->rows - r0 < 4 ? W->rows - r0 : 4;
                const uint8_t *rows[4];
                float rs[4];
                tile_rows(W, rb, r0, nr, ith, rows);
                for (int r = 0; r < 4; r++) rs[r] = W->row_scale[r0 + (r < nr ? r : nr - 1)];
                if (n <= 2) {
                    for (int64_t t = 0; t < n; t++) {
                        float o[4];
#if defined(LB_AVX512)
                        if (i8) {
                            cb4_dot4_i8(&T4, rows, NULL, rs, J->xq + t * k, J->xd + t * (k / QK), k / QK, o);
                            store_rows(J, t, r0, nr, o);
                            continue;
                        }
#endif
                        cb_dot4(W, rows, rs, J->x + t * k, o);
                        store_rows(J, t, r0, nr, o);
                    }
                    continue;
                }
#if defined(LB_AVX512)
                if (i8) {   /* a prompt: the tile's int8 weights looked up once, then every token */
                    const uint8_t *ur[4];
                    for (int r = 0; r < 4; r++) {
                        ur[r] = (const uint8_t *)tb + (r < nr ? r : nr - 1) * k;
                        if (r < nr) cb4_unpack_row(&T4, rows[r], k / QK, (uint8_t *)tb + r * k);
                    }
                    for (int64_t t = 0; t < n; t++) {
                        float o[4];
                        cb4_dot4_i8(&T4, rows, ur, rs, J->xq + t * k, J->xd + t * (k / QK), k / QK, o);
                        store_rows(J, t, r0, nr, o);
                    }
                    continue;
                }
#endif
                const uint8_t *frows[4];
                for (int r = 0; r < 4; r++) {
                    frows[r] = (const uint8_t *)(tb + (r < nr ? r : nr - 1) * k);
                    if (r < nr) cb_dequant_row(W, rows[r], r0 + r, tb + r * k);
                }
                for (int64_t t = 0; t < n; t++) {
                    act_row ar = {J->x + t * k, NULL, NULL};
                    float o[4];
                    dot4_f32(frows, ar, k, o);
                    store_rows(J, t, r0, nr, o);
                }
            }
            continue;
        }
        const dot4_fn dot = dot4_for(W->type);
        const int q8 = act_format(W->type) == ACT_Q8;
        for (int64_t tile = a; tile < b; tile++) {
            int64_t r0 = tile * 4, nr = W->rows - r0 < 4 ? W->rows - r0 : 4;
            const uint8_t *rows[4];
            tile_rows(W, rb, r0, nr, ith, rows);
            for (int64_t t = 0; t < n; t++) {
                act_row ar = {J->x + t * k, q8 ? J->xq + t * k : NULL, q8 ? J->xd + t * (k / QK) : NULL};
                float o[4];
                dot(rows, ar, k, o);
                store_rows(J, t, r0, nr, o);
            }
        }
    }
}

static void quantize_act(const float *x, int64_t t, int64_t cols, int fmt, const act_bufs *B) {
    const int64_t nb = (cols + QKK - 1) / QKK;
    if (fmt & (1 << ACT_Q8)) quantize_row_q8(x + t * cols, cols, B->xq + t * cols, B->xd + t * (cols / QK));
    if (fmt & (1 << ACT_QK)) quantize_row_qk(x + t * cols, cols, B->kq + t * nb * QKK, B->kd + t * nb, B->ks + t * nb * 16,
                                               B->kp ? B->kp + t * nb * QKK : NULL, B->kp2 ? B->kp2 + t * nb * QKK : NULL);
}

static void quantize_rows(const float *x, int64_t n, int64_t cols, int fmt, const act_bufs *B, int ith, int nth) {
    if (!fmt) return;
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) quantize_act(x, t, cols, fmt, B);
}

static void rmsnorm_rows(const float *x, const float *w, float eps, int64_t n, int64_t dim, float *out, int ith, int nth) {
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) {
        const float *xr = x + t * dim;
        double ss = 0;
        for (int64_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int64_t i = 0; i < dim; i++) out[t * dim + i] = xr[i] * inv * w[i];
    }
}

/* ---------------------------------------------------------------- lb_matmul */

typedef struct { mm_job job; int64_t n; int fmt; act_bufs bufs; } matmul_args;

static void matmul_work(void *p, int ith, int nth) {
    matmul_args *A = p;
    if (A->fmt) {
        quantize_rows(A->job.x, A->n, A->job.w->cols, A->fmt, &A->bufs, ith, nth);
        barrier(nth);
    }
    matmuls(&A->job, 1, A->n, ith, nth);
}

/* Carve the quantized-activation buffers for n rows of up to `cols` from s (NULL: just count). */
static size_t act_bufs_carve(char *s, int64_t n, int64_t cols, act_bufs *B) {
    const int64_t nb = (cols + QKK - 1) / QKK;
#if defined(LB_AVX512)
    const size_t perm = (size_t)(n * nb * QKK);   /* each permuted copy (decode kernels) */
#else
    const size_t perm = 0;
#endif
    size_t sizes[7] = {(size_t)(n * cols), (size_t)(n * (cols / QK + 1) * 4), (size_t)(n * nb * QKK),
                       (size_t)(n * nb * 4), (size_t)(n * nb * 16 * 2), perm, perm};
    size_t total = 0;
    char *ptrs[7];
    for (int i = 0; i < 7; i++) { ptrs[i] = s ? s + total : NULL; total += (sizes[i] + 63) / 64 * 64; }
    if (B) {
        B->xq = (int8_t *)ptrs[0]; B->xd = (float *)ptrs[1];
        B->kq = (int8_t *)ptrs[2]; B->kd = (float *)ptrs[3]; B->ks = (int16_t *)ptrs[4];
        B->kp = perm ? (int8_t *)ptrs[5] : NULL;
        B->kp2 = perm ? (int8_t *)ptrs[6] : NULL;
    }
    return total;
}

static mm_job make_job(const lb_weight *w, const float *x, const act_bufs *B, float *y, int64_t ldy, int accumulate) {
    mm_job j = {w, x, B->xq, B->xd, B->kq, B->kd, B->ks, B->kp, B->kp2, y, ldy, accumulate};
    return j;
}

static int weight_ok(const lb_weight *w) {
    return w && w->data && lb_type_supported(w->type) && w->rows > 0 && lb_row_bytes(w->type, w->cols) > 0 &&
           (!cb_kind(w->type) || (w->codebook && w->row_scale)) &&
           (!w->huff || (w->huff->rows == w->rows && w->huff->row_bytes == lb_row_bytes(w->type, w->cols)));
}

int lb_matmul(const lb_weight *w, const float *x, float *y, int64_t n, int accumulate) {
    if (!weight_ok(w) || !x || !y || n < 1) return -1;
    pthread_mutex_lock(&g_call_lock);
    matmul_args A;
    A.n = n;
    A.fmt = act_format(w->type) == ACT_F32 ? 0 : 1 << act_format(w->type);
    char *s = A.fmt ? scratch(act_bufs_carve(NULL, n, w->cols, NULL)) : NULL;
    if ((A.fmt && !s) || ((kq_kind(w->type) || w->type == LB_Q8_0 || cb_kind(w->type)) && kbufs_reserve(w->cols)) ||
        hbufs_reserve(huff_scratch(w->huff))) { pthread_mutex_unlock(&g_call_lock); return -1; }
    act_bufs_carve(s, n, w->cols, &A.bufs);
    A.job = make_job(w, x, &A.bufs, y, w->rows, accumulate);
    pool_run(matmul_work, &A);
    pthread_mutex_unlock(&g_call_lock);
    return 0;
}

int lb_get_rows(const lb_weight *w, const int64_t *ids, int64_t n, float *out) {
    if (!weight_ok(w) || !ids || !out) return -1;
    int64_t rb = lb_row_bytes(w->type, w->cols);
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= w->rows) return -1;
    uint8_t *hb = w->huff ? aligned_alloc(64, (huff_scratch(w->huff) + 63) / 64 * 64) : NULL;
    if (w->huff && !hb) return -1;
    for (int64_t t = 0; t < n; t += 4) {   /* a coded weight: 4 rows decoded at once */
        const int nr = n - t < 4 ? (int)(n - t) : 4;
        const uint8_t *rows[4];
        if (hb) huff_rows4(w->huff, ids + t, nr, hb, rows);
        else for (int k = 0; k < nr; k++) rows[k] = w->data + ids[t + k] * rb;
        for (int k = 0; k < nr; k++)
            if (cb_kind(w->type)) cb_dequant_row(w, rows[k], ids[t + k], out + (t + k) * w->cols);
            else dequant_row(w->type, rows[k], w->cols, out + (t + k) * w->cols);
    }
    free(hb);
    return 0;
}

int lb_rmsnorm(const float *x, const float *w, float eps, int64_t n, int64_t dim, float *out) {
    if (!x || !w || !out || n < 1 || dim < 1) return -1;
    rmsnorm_rows(x, w, eps, n, dim, out, 0, 1);
    return 0;
}

/* ---------------------------------------------------------------- one transformer block */

typedef struct {
    const lb_layer *L;
    float *x;
    int64_t n, pos0, n_ctx;
    float *kc, *vc;
    const float *cos, *sin;
    /* scratch */
    float *h, *q, *k, *v, *att, *gate, *up, *scores;
    act_bufs bufs;
} layer_args;

/* The activation formats (bit set of 1 << ACT_*) that a group of matmuls on one input needs. */
static int act_formats(const lb_weight *a, const lb_weight *b, const lb_weight *c) {
    int f = 0;
    const lb_weight *ws[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (ws[i] && act_format(ws[i]->type) != ACT_F32) f |= 1 << act_format(ws[i]->type);
    return f;
}

static void rope_row(float *x, int64_t heads, int64_t d, const float *c, const float *s) {
    int64_t half = d / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *r = x + h * d;
        for (int64_t i = 0; i < half; i++) {
            float a = r[i], b = r[i + half];
            r[i] = a * c[i] - b * s[i];
            r[i + half] = b * c[i] + a * s[i];
        }
    }
}

#if defined(LB_AVX512)
/* expf for 16 lanes (Cephes' polynomial, about 1 ulp), 2^n applied by vscalefps */
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n);
}

#endif

static void attention_rows(layer_args *A, int ith, int nth) {
    const lb_layer *L = A->L;
    const int64_t H = L->n_heads, KVH = L->n_kv_heads, D = L->head_dim, group = H / KVH;
    const float scale = 1.0f / sqrtf((float)D);
    float *sc = A->scores + ith * (A->n_ctx + 16);
    for (int64_t job = split_lo(A->n * H, ith, nth); job < split_lo(A->n * H, ith + 1, nth); job++) {
        int64_t t = job / H, h = job % H, kvh = h / group, len = A->pos0 + t + 1;
        const float *q = A->q + (t * H + h) * D;
        float *o = A->att + (t * H + h) * D;
#if defined(LB_AVX512)
        /* scores 16 keys at a time (one reduction tree per 16), softmax and p.V in 16-lane vectors */
        const int64_t nc = (D + 15) / 16;
        const __mmask16 lastm = (__mmask16)((1u << (D - 16 * (nc - 1))) - 1);
        __m512 bestv = _mm512_set1_ps(-INFINITY);
        for (int64_t j0 = 0; j0 < len; j0 += 16) {
            __m512 v[16];
            for (int jj = 0; jj < 16; jj++) {
                v[jj] = _mm512_setzero_ps();
                if (j0 + jj >= len) continue;
                const float *kr = A->kc + ((j0 + jj) * KVH + kvh) * D;
                for (int64_t c = 0; c < nc; c++) {
                    const __mmask16 m = c == nc - 1 ? lastm : 0xffff;
                    v[jj] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 16 * c), _mm512_maskz_loadu_ps(m, kr + 16 * c), v[jj]);
                }
            }
            const __mmask16 jm = len - j0 >= 16 ? 0xffff : (__mmask16)((1u << (len - j0)) - 1);
            const __m512 s16 = _mm512_mul_ps(hsum16x16(v), _mm512_set1_ps(scale));
            _mm512_storeu_ps(sc + j0, s16);
            bestv = _mm512_mask_max_ps(bestv, jm, bestv, s16);
        }
        const __m512 best = _mm512_set1_ps(_mm512_reduce_max_ps(bestv));
        __m512 totv = _mm512_setzero_ps();
        for (int64_t j0 = 0; j0 < len; j0 += 16) {
            const __mmask16 jm = len - j0 >= 16 ? 0xffff : (__mmask16)((1u << (len - j0)) - 1);
            const __m512 e = _mm512_maskz_mov_ps(jm, exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + j0), best)));
            _mm512_storeu_ps(sc + j0, e);
            totv = _mm512_add_ps(totv, e);
        }
        const float inv = 1.f / _mm512_reduce_add_ps(totv);
        for (int64_t c = 0; c < nc; c++) {
            const __mmask16 m = c == nc - 1 ? lastm : 0xffff;
            const float *vr = A->vc + kvh * D + 16 * c;
            const int64_t vs = KVH * D;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;   /* 4 chains: fma latency */
            int64_t j = 0;
            for (; j + 4 <= len; j += 4) {
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(sc[j]), _mm512_maskz_loadu_ps(m, vr + j * vs), a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(sc[j + 1]), _mm512_maskz_loadu_ps(m, vr + (j + 1) * vs), a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(sc[j + 2]), _mm512_maskz_loadu_ps(m, vr + (j + 2) * vs), a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(sc[j + 3]), _mm512_maskz_loadu_ps(m, vr + (j + 3) * vs), a3);
            }
            for (; j < len; j++) a0 = _mm512_fmadd_ps(_mm512_set1_ps(sc[j]), _mm512_maskz_loadu_ps(m, vr + j * vs), a0);
            const __m512 acc = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
            _mm512_mask_storeu_ps(o + 16 * c, m, _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
        }
#else
        float best = -INFINITY;
        for (int64_t j = 0; j < len; j++) {
            const float *kr = A->kc + (j * KVH + kvh) * D;
            float s = 0;
            for (int64_t i = 0; i < D; i++) s += q[i] * kr[i];
            s *= scale;
            sc[j] = s;
            best = s > best ? s : best;
        }
        float total = 0;
        for (int64_t j = 0; j < len; j++) { sc[j] = expf(sc[j] - best); total += sc[j]; }
        float inv = 1.f / total;
        for (int64_t i = 0; i < D; i++) o[i] = 0;
        for (int64_t j = 0; j < len; j++) {
            const float *vr = A->vc + (j * KVH + kvh) * D;
            float p = sc[j] * inv;
            for (int64_t i = 0; i < D; i++) o[i] += p * vr[i];
        }
#endif
    }
}

/* SwiGLU in place: g = silu(g) * u */
static void swiglu_row(float *g, const float *u, int64_t ffn) {
    int64_t i = 0;
#if defined(LB_AVX512)
    for (; i < ffn; i += 16) {
        const __mmask16 m = ffn - i >= 16 ? 0xffff : (__mmask16)((1u << (ffn - i)) - 1);
        const __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.f), e)), uv));
    }
#endif
    for (; i < ffn; i++) g[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}

static void layer_work(void *p, int ith, int nth) {
    layer_args *A = p;
    const lb_layer *L = A->L;
    const int64_t n = A->n, dim = L->dim, H = L->n_heads, KVH = L->n_kv_heads, D = L->head_dim, ffn = L->ffn;
    const int64_t qd = H * D, kvd = KVH * D, half = D / 2;

    const act_bufs *B = &A->bufs;
    const mm_job qkv[3] = {make_job(&L->wq, A->h, B, A->q, qd, 0), make_job(&L->wk, A->h, B, A->k, kvd, 0),
                           make_job(&L->wv, A->h, B, A->v, kvd, 0)};
    const mm_job o = make_job(&L->wo, A->att, B, A->x, dim, 1);
    const mm_job gu[2] = {make_job(&L->w_gate, A->h, B, A->gate, ffn, 0), make_job(&L->w_up, A->h, B, A->up, ffn, 0)};
    const mm_job dn = make_job(&L->w_down, A->gate, B, A->x, dim, 1);

    /* attention block */
    matmuls_prefetch(qkv, 3, 0, n, ith, nth);
    rmsnorm_rows(A->x, L->attn_norm, L->eps, n, dim, A->h, ith, nth);
    quantize_rows(A->h, n, dim, act_formats(&L->wq, &L->wk, &L->wv), B, ith, nth);
    barrier(nth);
    matmuls(qkv, 3, n, ith, nth);
    barrier(nth);
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) {
        int64_t pos = A->pos0 + t;
        rope_row(A->q + t * qd, H, D, A->cos + pos * half, A->sin + pos * half);
        rope_row(A->k + t * kvd, KVH, D, A->cos + pos * half, A->sin + pos * half);
        memcpy(A->kc + pos * kvd, A->k + t * kvd, kvd * 4);
        memcpy(A->vc + pos * kvd, A->v + t * kvd, kvd * 4);
    }
    barrier(nth);
    matmuls_prefetch(&o, 1, 0, n, ith, nth);
    attention_rows(A, ith, nth);
    barrier(nth);
    if (act_formats(&L->wo, NULL, NULL)) {
        quantize_rows(A->att, n, qd, act_formats(&L->wo, NULL, NULL), B, ith, nth);
        barrier(nth);
    }
    matmuls(&o, 1, n, ith, nth);
    barrier(nth);

    /* feed-forward block (SwiGLU) */
    matmuls_prefetch(gu, 2, 0, n, ith, nth);
    rmsnorm_rows(A->x, L->ffn_norm, L->eps, n, dim, A->h, ith, nth);
    quantize_rows(A->h, n, dim, act_formats(&L->w_gate, &L->w_up, NULL), B, ith, nth);
    barrier(nth);
    matmuls(gu, 2, n, ith, nth);
    matmuls_prefetch(&dn, 1, 0, n, ith, nth);
    barrier(nth);
    int dq = act_formats(&L->w_down, NULL, NULL);
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) {
        float *g = A->gate + t * ffn, *u = A->up + t * ffn;
        swiglu_row(g, u, ffn);
        if (dq) quantize_act(A->gate, t, ffn, dq, B);
    }
    barrier(nth);
    matmuls(&dn, 1, n, ith, nth);
}

static int layer_ok(const lb_layer *L) {
    if (!L || L->dim < 1 || L->n_heads < 1 || L->n_kv_heads < 1 || L->head_dim < 2 || L->head_dim % 2 ||
        L->n_heads % L->n_kv_heads || L->ffn < 1 || !L->attn_norm || !L->ffn_norm)
        return 0;
    const int64_t qd = L->n_heads * L->head_dim, kvd = L->n_kv_heads * L->head_dim;
    const lb_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    const int64_t shapes[7][2] = {{qd, L->dim}, {kvd, L->dim}, {kvd, L->dim}, {L->dim, qd},
                                  {L->ffn, L->dim}, {L->ffn, L->dim}, {L->dim, L->ffn}};
    for (int i = 0; i < 7; i++)
        if (!weight_ok(ws[i]) || ws[i]->rows != shapes[i][0] || ws[i]->cols != shapes[i][1]) return 0;
    return 1;
}

int lb_layer_forward(const lb_layer *L, float *x, int64_t n, int64_t pos0, float *k_cache, float *v_cache,
                     int64_t n_ctx, const float *cos, const float *sin) {
    if (!layer_ok(L) || !x || n < 1 || pos0 < 0 || pos0 + n > n_ctx || !k_cache || !v_cache || !cos || !sin) return -1;
    pthread_mutex_lock(&g_call_lock);
    const int64_t qd = L->n_heads * L->head_dim, kvd = L->n_kv_heads * L->head_dim;
    int64_t widest = L->dim > qd ? L->dim : qd;
    widest = widest > L->ffn ? widest : L->ffn;
    size_t floats[8] = {n * L->dim, n * qd, n * kvd, n * kvd, n * qd, n * L->ffn, n * L->ffn, (size_t)g_nth * (n_ctx + 16)};
    size_t total = 0;
    for (int i = 0; i < 8; i++) total += (floats[i] * 4 + 63) / 64 * 64;
    total += act_bufs_carve(NULL, n, widest, NULL);
    char *s = scratch(total);
    size_t hneed = 0;
    const lb_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    for (int i = 0; i < 7; i++) hneed = huff_scratch(ws[i]->huff) > hneed ? huff_scratch(ws[i]->huff) : hneed;
    if (!s || kbufs_reserve(widest) || hbufs_reserve(hneed)) { pthread_mutex_unlock(&g_call_lock); return -1; }
    float *bufs[8];
    for (int i = 0; i < 8; i++) { bufs[i] = (float *)s; s += (floats[i] * 4 + 63) / 64 * 64; }
    layer_args A = {L, x, n, pos0, n_ctx, k_cache, v_cache, cos, sin,
                    bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7], {0}};
    act_bufs_carve(s, n, widest, &A.bufs);
    pool_run(layer_work, &A);
    pthread_mutex_unlock(&g_call_lock);
    return 0;
}
