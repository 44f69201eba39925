/* ---------------------------------------------------------------- the C API (lowbit_native.h) */

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

/* the ids with kernels are LB_F32..LB_D4L2, each run by the family that owns it */
_Static_assert(LB_F32 == 0 && LB_F16 == 1 && LB_BF16 == 2 && LB_Q8_0 == 3 && LB_Q2_K == 4 && LB_CBK2 == LB_Q6_K + 1,
               "kernel type ids are 0..LB_D4L2 without gaps");
int lb_type_supported(int type) { return type >= LB_F32 && type <= LB_D4L2; }

int64_t lb_row_bytes(int type, int64_t cols) {
    if (cols <= 0) return -1;
    switch (type) {
    case LB_F32: return cols * LB_F32_BLOCK_BYTES;
    case LB_F16: case LB_BF16: return cols * LB_F16_BLOCK_BYTES;   /* asserted equal in q8_floats.c */
    case LB_Q8_0: return cols % QK ? -1 : cols / QK * LB_Q8_0_BLOCK_BYTES;
    case LB_Q2_K: case LB_Q3_K: case LB_Q4_K: case LB_Q5_K: case LB_Q6_K: return kq_row_bytes(kq_kind(type), cols);
    case LB_CBK2: case LB_CBK4: case LB_D4L2: return cb_row_bytes(type, cols);
    }
    return -1;
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
