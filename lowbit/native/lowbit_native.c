/* lowbit native CPU kernels. Compiled once per feature level (LB_AVX512: AVX-512 BW/VL + VNNI,
   LB_AVX2: AVX2 + FMA + F16C, neither: portable scalar); the loader picks the best level the CPU has.
   Weights are read straight from the memory map: every kernel fuses dequantization with the dot
   product, 4 weight rows at a time against one activation row. Activations for integer types are
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
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
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

/* ---------------------------------------------------------------- type table */

enum { ACT_F32 = 0, ACT_Q8 = 1 };

int lb_type_supported(int type) { return type >= LB_F32 && type <= LB_Q8_0; }

static int act_format(int type) { return type == LB_Q8_0 ? ACT_Q8 : ACT_F32; }

int64_t lb_row_bytes(int type, int64_t cols) {
    if (cols <= 0) return -1;
    switch (type) {
    case LB_F32: return cols * 4;
    case LB_F16: case LB_BF16: return cols * 2;
    case LB_Q8_0: return cols % QK ? -1 : cols / QK * Q8_0_BYTES;
    }
    return -1;
}

/* An activation row: float, or quantized to 8-bit blocks (qs int8 [cols], d float [cols/32]). */
typedef struct { const float *f; const int8_t *qs; const float *d; } act_row;

static void quantize_row_q8(const float *x, int64_t cols, int8_t *qs, float *d) {
    for (int64_t b = 0; b < cols / QK; b++) {
        const float *xb = x + b * QK;
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
    }
}

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

/* ---------------------------------------------------------------- parallel steps */

typedef struct {              /* one matmul inside a step: y[n, rows] (+)= x W^T (+ bias) */
    const lb_weight *w;
    const float *x;           /* float activations [n, cols] */
    const int8_t *xq;         /* 8-bit activations when the type needs them */
    const float *xd;
    float *y;
    int64_t ldy;              /* row stride of y */
    int accumulate;
} mm_job;

static int64_t split_lo(int64_t total, int ith, int nth) { return total * ith / nth; }

/* Split the 4-row tiles of up to 3 matmuls (same input) over the threads; each tile meets every
   token while its weight rows are hot in L1. */
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
        const int64_t rb = lb_row_bytes(W->type, W->cols), k = W->cols;
        const dot4_fn dot = dot4_for(W->type);
        const int q8 = act_format(W->type) == ACT_Q8;
        for (int64_t tile = a; tile < b; tile++) {
            int64_t r0 = tile * 4, nr = W->rows - r0 < 4 ? W->rows - r0 : 4;
            const uint8_t *rows[4];
            for (int r = 0; r < 4; r++) rows[r] = W->data + (r0 + (r < nr ? r : nr - 1)) * rb;
            for (int64_t t = 0; t < n; t++) {
                act_row ar = {J->x + t * k, q8 ? J->xq + t * k : NULL, q8 ? J->xd + t * (k / QK) : NULL};
                float o[4];
                dot(rows, ar, k, o);
                float *y = J->y + t * J->ldy + r0;
                for (int r = 0; r < nr; r++) {
                    float v = o[r] + (W->bias ? W->bias[r0 + r] : 0.f);
                    y[r] = J->accumulate ? y[r] + v : v;
                }
            }
        }
    }
}

static void quantize_rows(const float *x, int64_t n, int64_t cols, int8_t *qs, float *d, int ith, int nth) {
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++)
        quantize_row_q8(x + t * cols, cols, qs + t * cols, d + t * (cols / QK));
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

typedef struct { mm_job job; int64_t n; } matmul_args;

static void matmul_work(void *p, int ith, int nth) {
    matmul_args *A = p;
    if (A->job.xq) {
        quantize_rows(A->job.x, A->n, A->job.w->cols, (int8_t *)A->job.xq, (float *)A->job.xd, ith, nth);
        barrier(nth);
    }
    matmuls(&A->job, 1, A->n, ith, nth);
}

static int weight_ok(const lb_weight *w) {
    return w && w->data && lb_type_supported(w->type) && w->rows > 0 && lb_row_bytes(w->type, w->cols) > 0;
}

int lb_matmul(const lb_weight *w, const float *x, float *y, int64_t n, int accumulate) {
    if (!weight_ok(w) || !x || !y || n < 1) return -1;
    pthread_mutex_lock(&g_call_lock);
    matmul_args A = {{w, x, NULL, NULL, y, w->rows, accumulate}, n};
    if (act_format(w->type) == ACT_Q8) {
        char *s = scratch(n * w->cols + n * (w->cols / QK) * 4 + 64);
        if (!s) { pthread_mutex_unlock(&g_call_lock); return -1; }
        A.job.xd = (float *)s;
        A.job.xq = (int8_t *)(s + n * (w->cols / QK) * 4);
    }
    pool_run(matmul_work, &A);
    pthread_mutex_unlock(&g_call_lock);
    return 0;
}

int lb_get_rows(const lb_weight *w, const int64_t *ids, int64_t n, float *out) {
    if (!weight_ok(w) || !ids || !out) return -1;
    int64_t rb = lb_row_bytes(w->type, w->cols);
    for (int64_t t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= w->rows) return -1;
        dequant_row(w->type, w->data + ids[t] * rb, w->cols, out + t * w->cols);
    }
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
    float *h, *q, *k, *v, *att, *gate, *up, *scores, *xd;
    int8_t *xq;
} layer_args;

static int needs_q8(const lb_weight *a, const lb_weight *b, const lb_weight *c) {
    return act_format(a->type) == ACT_Q8 || (b && act_format(b->type) == ACT_Q8) || (c && act_format(c->type) == ACT_Q8);
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

static void attention_rows(layer_args *A, int ith, int nth) {
    const lb_layer *L = A->L;
    const int64_t H = L->n_heads, KVH = L->n_kv_heads, D = L->head_dim, group = H / KVH;
    const float scale = 1.0f / sqrtf((float)D);
    float *sc = A->scores + ith * A->n_ctx;
    for (int64_t job = split_lo(A->n * H, ith, nth); job < split_lo(A->n * H, ith + 1, nth); job++) {
        int64_t t = job / H, h = job % H, kvh = h / group, len = A->pos0 + t + 1;
        const float *q = A->q + (t * H + h) * D;
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
        float *o = A->att + (t * H + h) * D, inv = 1.f / total;
        for (int64_t i = 0; i < D; i++) o[i] = 0;
        for (int64_t j = 0; j < len; j++) {
            const float *vr = A->vc + (j * KVH + kvh) * D;
            float p = sc[j] * inv;
            for (int64_t i = 0; i < D; i++) o[i] += p * vr[i];
        }
    }
}

static void layer_work(void *p, int ith, int nth) {
    layer_args *A = p;
    const lb_layer *L = A->L;
    const int64_t n = A->n, dim = L->dim, H = L->n_heads, KVH = L->n_kv_heads, D = L->head_dim, ffn = L->ffn;
    const int64_t qd = H * D, kvd = KVH * D, half = D / 2;

    /* attention block */
    rmsnorm_rows(A->x, L->attn_norm, L->eps, n, dim, A->h, ith, nth);
    if (needs_q8(&L->wq, &L->wk, &L->wv)) quantize_rows(A->h, n, dim, A->xq, A->xd, ith, nth);
    barrier(nth);
    mm_job qkv[3] = {{&L->wq, A->h, A->xq, A->xd, A->q, qd, 0},
                     {&L->wk, A->h, A->xq, A->xd, A->k, kvd, 0},
                     {&L->wv, A->h, A->xq, A->xd, A->v, kvd, 0}};
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
    attention_rows(A, ith, nth);
    barrier(nth);
    if (needs_q8(&L->wo, NULL, NULL)) {
        quantize_rows(A->att, n, qd, A->xq, A->xd, ith, nth);
        barrier(nth);
    }
    mm_job o = {&L->wo, A->att, A->xq, A->xd, A->x, dim, 1};
    matmuls(&o, 1, n, ith, nth);
    barrier(nth);

    /* feed-forward block (SwiGLU) */
    rmsnorm_rows(A->x, L->ffn_norm, L->eps, n, dim, A->h, ith, nth);
    if (needs_q8(&L->w_gate, &L->w_up, NULL)) quantize_rows(A->h, n, dim, A->xq, A->xd, ith, nth);
    barrier(nth);
    mm_job gu[2] = {{&L->w_gate, A->h, A->xq, A->xd, A->gate, ffn, 0},
                    {&L->w_up, A->h, A->xq, A->xd, A->up, ffn, 0}};
    matmuls(gu, 2, n, ith, nth);
    barrier(nth);
    int dq = needs_q8(&L->w_down, NULL, NULL);
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) {
        float *g = A->gate + t * ffn, *u = A->up + t * ffn;
        for (int64_t i = 0; i < ffn; i++) g[i] = g[i] / (1.f + expf(-g[i])) * u[i];
        if (dq) quantize_row_q8(g, ffn, A->xq + t * ffn, A->xd + t * (ffn / QK));
    }
    barrier(nth);
    mm_job dn = {&L->w_down, A->gate, A->xq, A->xd, A->x, dim, 1};
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
    size_t floats[8] = {n * L->dim, n * qd, n * kvd, n * kvd, n * qd, n * L->ffn, n * L->ffn, (size_t)g_nth * n_ctx};
    size_t total = 0;
    for (int i = 0; i < 8; i++) total += (floats[i] * 4 + 63) / 64 * 64;
    total += (n * (widest / QK + 1) * 4 + 63) / 64 * 64 + n * widest + 64;
    char *s = scratch(total);
    if (!s) { pthread_mutex_unlock(&g_call_lock); return -1; }
    float *bufs[8];
    for (int i = 0; i < 8; i++) { bufs[i] = (float *)s; s += (floats[i] * 4 + 63) / 64 * 64; }
    layer_args A = {L, x, n, pos0, n_ctx, k_cache, v_cache, cos, sin,
                    bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7], NULL, NULL};
    A.xd = (float *)s;
    s += (n * (widest / QK + 1) * 4 + 63) / 64 * 64;
    A.xq = (int8_t *)s;
    pool_run(layer_work, &A);
    pthread_mutex_unlock(&g_call_lock);
    return 0;
}
