/* ---------------------------------------------------------------- benchmark entry points (tools/ only)

   Compiled only into the bench build (-DLB_BENCH, lowbit_bench.h), which tools build on demand next
   to the cached library (native.loader.bench_library); the shipped library does not have them. */

/* The Huffman decoder alone (tools/bench/bench_huff.py): see lowbit_bench.h. */
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
