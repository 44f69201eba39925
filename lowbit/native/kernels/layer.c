/* ---------------------------------------------------------------- one transformer block */

/* The activation formats (bit set of 1 << ACT_*) that a group of matmuls on one input needs. */
static int act_formats(const lb_weight *a, const lb_weight *b, const lb_weight *c) {
    int f = 0;
    const lb_weight *ws[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (ws[i] && act_format(ws[i]->type) != ACT_F32) f |= 1 << act_format(ws[i]->type);
    return f;
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
