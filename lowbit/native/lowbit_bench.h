/* lowbit native CPU kernels: benchmark entry points, declared only for the bench build (-DLB_BENCH,
   tools/ only); build.py appends this file, minus preprocessor lines, to the cdef of that build. */
#ifndef LOWBIT_BENCH_H
#define LOWBIT_BENCH_H
#include "lowbit_native.h"

/* Decode the index bytes of rows 0..rows-1 `reps` times (4 rows interleaved, as matmul does) into
   scratch; returns the symbols decoded (a decode-rate benchmark). */
int64_t lb_huff_bench(const lb_huff *h, int64_t reps);
#endif /* LOWBIT_BENCH_H */
