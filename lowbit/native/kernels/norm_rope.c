/* ---------------------------------------------------------------- rows of a block: RMSNorm, RoPE, SwiGLU */

static void rmsnorm_rows(const float *x, const float *w, float eps, int64_t n, int64_t dim, float *out, int ith, int nth) {
    for (int64_t t = split_lo(n, ith, nth); t < split_lo(n, ith + 1, nth); t++) {
        const float *xr = x + t * dim;
        double ss = 0;
        for (int64_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int64_t i = 0; i < dim; i++) out[t * dim + i] = xr[i] * inv * w[i];
    }
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
