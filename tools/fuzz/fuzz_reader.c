/* libFuzzer harness for the C reference reader (AddressSanitizer + UndefinedBehaviorSanitizer):
 * any input must open or fail with a named error; opened files must list, dequantize every known
 * tensor and check CRCs inside the input's bytes.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -I format_spec/reference tools/fuzz/fuzz_reader.c format_spec/reference/lowbit_reader.c -o /tmp/fuzz_reader
 *   mkdir -p /tmp/fuzz-c && python -m tools.fuzz.seeds /tmp/fuzz-c
 *   timeout 700 /tmp/fuzz_reader /tmp/fuzz-c -max_total_time=600 -max_len=8192 -artifact_prefix=/tmp/fuzz-c-crash-
 *   python -m tools.fuzz.replay_both /tmp/fuzz-c    # then: both readers agree on the corpus
 *
 * Input forms: a file as is; '{' a JSON header, NUL, the data region; 'H' one entropy-coded tensor
 * (tools/fuzz/h_mode.py describes it; check_h below is the same mapping).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit_reader.h"

static void check(const uint8_t *data, size_t size);

static void put64(uint8_t *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Entropy-coded mode (the same mapping as tools/fuzz/h_mode.py, which documents it): 'H', type,
 * rows, cols (2 bytes), flags, then one .h tensor's bytes; the harness writes its table and, unless
 * the flags say otherwise, the header fields the shape fixes, so mutations reach the code lengths,
 * offsets, prefix and stream. */
static void check_h(const uint8_t *data, size_t size) {
    static const char *types[5] = {"cbk2.h", "cbk4.h", "d4l2.h", "q4_k.h", "q4_ke.h"};
    static const uint32_t B[5] = {64, 32, 32, 256, 256}, BB[5] = {17, 17, 9, 144, 144}, NIDX[5] = {16, 16, 8, 128, 128},
                          CB[5] = {2048, 1024, 0, 0, 0};
    uint32_t t = data[1] % 5, rows = 1 + data[2] % 4, cols, flags = data[5];
    uint64_t n = size - 6, rb, n_idx, n_other, P, fixedsz, off, total, crc;
    char header[256];
    int hl;
    uint8_t *file;
    cols = t >= 3 ? 1 + (uint32_t)(data[3] | (data[4] << 8)) % 600 : (1 + data[3] % 4) * B[t];
    rb = cols / B[t] * BB[t] + (t >= 3 && cols % 256 ? 4 + (cols % 256 + 31) / 32 * 18 : 0);
    n_idx = cols / B[t] * NIDX[t] + (t == 4 ? (cols % 256 + 31) / 32 * 16 : 0);   /* q4_ke: the tail's quants too */
    n_other = rb - n_idx;
    P = t >= 3 ? 0 : CB[t] + 2 * rows;
    hl = snprintf(header, sizeof header, "{\"tensors\":[{\"name\":\"t\",\"type\":\"%s\",\"shape\":[%u,%u],\"offset\":0,"
                  "\"nbytes\":%lu,\"crc32\":\"00000000\"}]}", types[t], rows, cols, (unsigned long)n);
    off = (48 + (uint64_t)hl + 63) / 64 * 64;
    total = off + n;
    file = (uint8_t *)calloc(total, 1);
    if (!file) return;
    memcpy(file + off, data + 6, n);
    if (n >= 280) {
        uint8_t *raw = file + off;
        if (!(flags & 1)) { put32(raw, rows); put32(raw + 4, (uint32_t)n_idx); put32(raw + 8, (uint32_t)n_other); put32(raw + 12, (uint32_t)P); }
        fixedsz = 284 + 4 * rows + P + rows * n_other;
        if (!(flags & 2) && n >= fixedsz) {
            put64(raw + 16, n - fixedsz);
            put32(raw + 280, 0);
            put32(raw + 280 + 4 * rows, (uint32_t)(n - fixedsz));
        }
    }
    memcpy(file, "\x89LOWBIT\n", 8);
    file[8] = 1;
    put64(file + 16, (uint64_t)hl);
    put64(file + 24, off);
    put64(file + 32, n);
    crc = lb_crc32((const uint8_t *)header, (size_t)hl);
    put32(file + 40, (uint32_t)crc);
    memcpy(file + 48, header, (size_t)hl);
    check(file, (size_t)total);
    free(file);
}

/* Each input is tried as is, then with its header CRC, data_offset and data_len made consistent,
 * so that mutations of the JSON reach the parser and the table checks. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t hl, off;
    uint8_t *fixed;
    uint32_t crc;
    if (size >= 6 && data[0] == 'H') {
        check_h(data, size);
        return 0;
    }
    if (size > 0 && data[0] == '{') {   /* structure-aware mode: JSON header, NUL, data region */
        const uint8_t *nul = (const uint8_t *)memchr(data, 0, size);
        size_t h = nul ? (size_t)(nul - data) : size, region = nul ? size - h - 1 : 0, total;
        off = (48 + h + 63) / 64 * 64;
        total = off + region;
        fixed = (uint8_t *)calloc(total, 1);
        if (!fixed) return 0;
        memcpy(fixed, "\x89LOWBIT\n", 8);
        fixed[8] = 1;
        put64(fixed + 16, h);
        put64(fixed + 24, off);
        put64(fixed + 32, region);
        crc = lb_crc32(data, h);
        fixed[40] = (uint8_t)crc; fixed[41] = (uint8_t)(crc >> 8); fixed[42] = (uint8_t)(crc >> 16); fixed[43] = (uint8_t)(crc >> 24);
        memcpy(fixed + 48, data, h);
        if (region) memcpy(fixed + off, nul + 1, region);
        check(fixed, total);
        free(fixed);
        return 0;
    }
    check(data, size);
    if (size < 48) return 0;
    hl = 0;
    for (off = 0; off < 8; off++) hl |= (uint64_t)data[16 + off] << (8 * off);
    if (hl == 0 || hl > size - 48) return 0;
    off = (48 + hl + 63) / 64 * 64;
    fixed = (uint8_t *)calloc(off > size ? off : size, 1);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    if (off > size) size = off;
    put64(fixed + 24, off);
    put64(fixed + 32, size - off);
    crc = lb_crc32(fixed + 48, hl);
    fixed[40] = (uint8_t)crc; fixed[41] = (uint8_t)(crc >> 8); fixed[42] = (uint8_t)(crc >> 16); fixed[43] = (uint8_t)(crc >> 24);
    check(fixed, size);
    free(fixed);
    return 0;
}

static void check(const uint8_t *data, size_t size) {
    lb_file *f;
    lb_error e;
    size_t i, n, len;
    /* a copy of exactly `size` bytes, so ASan flags any read past the input */
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    if (!copy) return;
    if (size) memcpy(copy, data, size);
    if (lb_open_memory(copy, size, &f, &e) != LB_OK) {
        if (e.code == LB_OK || e.message[0] == 0 || strcmp(lb_error_name(e.code), "unknown") == 0) abort();
        free(copy);
        return;
    }
    lb_metadata_json(f, &len);
    n = lb_metadata_count(f);
    for (i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (lb_metadata_entry(f, i, &k, &kl, &v, &vl) != LB_OK) abort();
    }
    for (i = 0; i < lb_tensor_count(f); i++) {
        const lb_tensor *t = lb_tensor_at(f, i);
        float *out;
        if (lb_find_tensor(f, t->name) == NULL && strlen(t->name) == t->name_len) abort();
        lb_check_crc(f, t, &e);
        /* cannot happen for a known type within max_len: even an entropy-coded (.h) tensor, whose
         * stream may be empty, stores at least one byte per 64 weights of each row (its other bytes) */
        if (t->elements > (1u << 24)) continue;
        out = (float *)malloc(t->elements * sizeof(float));
        if (!out) continue;
        if ((lb_dequantize(f, t, out, t->elements, &e) == LB_OK) != (t->known != 0)) abort();
        free(out);
    }
    lb_close(f);
    free(copy);
}
