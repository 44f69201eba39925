/* ---------------------------------------------------------------- activation formats */

enum { ACT_F32 = 0, ACT_Q8 = 1, ACT_QK = 2 };   /* float, 8-bit blocks of 32, 8-bit blocks of 256 */

static int act_format(int type) {
    if (type == LB_Q8_0) return ACT_Q8;
    if (kq_kind(type)) return ACT_QK;
#if defined(LB_AVX512)
    if (type == LB_CBK4) return ACT_Q8;   /* the int8-codebook kernels (cb4_dot4_i8) */
#endif
    return ACT_F32;
}

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
                            const uint8_t *tails[4] = {rows[0] + nfull * LB_Q4_K_BLOCK_BYTES, rows[1] + nfull * LB_Q4_K_BLOCK_BYTES, rows[2] + nfull * LB_Q4_K_BLOCK_BYTES, rows[3] + nfull * LB_Q4_K_BLOCK_BYTES};
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
