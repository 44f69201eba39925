/* libFuzzer harness for the C reference reader (AddressSanitizer + UndefinedBehaviorSanitizer):
 * any input must open or fail with a named error; opened files must list, dequantize every known
 * tensor and check CRCs inside the input's bytes.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *       -I format_spec/reference tools/fuzz/fuzz_reader.c format_spec/reference/lowbit_reader.c -o /tmp/fuzz_reader
 *   mkdir -p /tmp/fuzz-c && cp format_spec/vectors/[a-z]*.lowbit /tmp/fuzz-c/
 *   timeout 700 /tmp/fuzz_reader /tmp/fuzz-c -max_total_time=600 -max_len=8192 -artifact_prefix=/tmp/fuzz-c-crash-
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lb_file *f;
    lb_error e;
    size_t i, n, len;
    /* a copy of exactly `size` bytes, so ASan flags any read past the input */
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    if (lb_open_memory(copy, size, &f, &e) != LB_OK) {
        if (e.code == LB_OK || e.message[0] == 0 || strcmp(lb_error_name(e.code), "unknown") == 0) abort();
        free(copy);
        return 0;
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
        if (t->elements > (1u << 24)) continue;   /* cannot happen for a known type within max_len */
        out = (float *)malloc(t->elements * sizeof(float));
        if (!out) continue;
        if ((lb_dequantize(f, t, out, t->elements, &e) == LB_OK) != (t->known != 0)) abort();
        free(out);
    }
    lb_close(f);
    free(copy);
    return 0;
}
