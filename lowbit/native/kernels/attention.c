/* ---------------------------------------------------------------- attention */

/* One transformer block's call (lb_layer_forward): its arguments and scratch, shared by
   attention_rows and layer_work. */
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
