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
   missing bits the spec reads as zeros) is decoded again with reads bounded by its end.
   noinline: kept a call from huff_rows4, as it was built when the decode benchmark (kernels/bench.c,
   tools only) was its second caller; inlining it there would be an unmeasured change. */
static __attribute__((noinline)) void huff_decode4(const lb_huff *h, const int64_t ids[4], uint8_t *const out[4]) {
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
