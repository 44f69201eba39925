/* lowbit_dump: list a lowbit file, or dequantize one tensor to stdout as raw little-endian float32.
 *
 *   lowbit_dump FILE              validate; print metadata keys and the tensor table
 *   lowbit_dump FILE TENSOR       validate; write TENSOR's values as float32 to stdout
 *   lowbit_dump --verify FILE     validate and check every tensor's CRC-32
 *
 * On failure prints "error <code>: <message>" to stderr (code as lb_error_name gives it) and exits 1.
 * Build: cc -std=c99 -O2 -o lowbit_dump lowbit_dump.c lowbit_reader.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit_reader.h"

static int die(const lb_error *e) {
    fprintf(stderr, "error %s: %s\n", lb_error_name(e->code), e->message);
    return 1;
}

static void print_json(const char *s, size_t n, size_t max) {
    size_t i;
    for (i = 0; i < n && i < max; i++) putchar((s[i] == '\n' || s[i] == '\r' || s[i] == '\t') ? ' ' : s[i]);
    if (n > max) fputs("...", stdout);
}

static int list(lb_file *f) {
    size_t i, n = lb_metadata_count(f);
    printf("metadata: %lu keys\n", (unsigned long)n);
    for (i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        lb_metadata_entry(f, i, &k, &kl, &v, &vl);
        printf("  %.*s = ", (int)kl, k);
        print_json(v, vl, 100);
        putchar('\n');
    }
    printf("tensors: %lu\n", (unsigned long)lb_tensor_count(f));
    for (i = 0; i < lb_tensor_count(f); i++) {
        const lb_tensor *t = lb_tensor_at(f, i);
        unsigned d;
        printf("  %s %s [", t->name, t->type);
        for (d = 0; d < t->ndim; d++) printf(d ? ",%llu" : "%llu", (unsigned long long)t->shape[d]);
        printf("] offset %llu nbytes %llu crc32 %08x%s\n", (unsigned long long)t->offset,
               (unsigned long long)t->nbytes, t->crc32, t->known ? "" : " (unknown type)");
    }
    return 0;
}

static int dump(lb_file *f, const char *name) {
    const lb_tensor *t = lb_find_tensor(f, name);
    lb_error e;
    float *out;
    if (!t) {
        fprintf(stderr, "error arg: no tensor named '%s'\n", name);
        return 1;
    }
    out = (float *)malloc(t->elements ? (size_t)t->elements * sizeof(float) : 1);
    if (!out) {
        fprintf(stderr, "error nomem: cannot allocate %llu floats\n", (unsigned long long)t->elements);
        return 1;
    }
    if (lb_dequantize(f, t, out, t->elements, &e) != LB_OK) { free(out); return die(&e); }
    if (fwrite(out, sizeof(float), (size_t)t->elements, stdout) != (size_t)t->elements) {
        free(out);
        fprintf(stderr, "error io: write failed\n");
        return 1;
    }
    free(out);
    return 0;
}

int main(int argc, char **argv) {
    lb_file *f;
    lb_error e;
    int verify = argc > 1 && strcmp(argv[1], "--verify") == 0, rc = 0;
    const char *path = argv[1 + verify];
    if (argc < 2 + verify || argc > 3) {
        fprintf(stderr, "usage: lowbit_dump FILE [TENSOR] | lowbit_dump --verify FILE\n");
        return 2;
    }
    if (lb_open(path, &f, &e) != LB_OK) return die(&e);
    if (verify) {
        size_t i;
        for (i = 0; i < lb_tensor_count(f); i++)
            if (lb_check_crc(f, lb_tensor_at(f, i), &e) != LB_OK) rc = die(&e);
        if (!rc) printf("ok: %lu tensors\n", (unsigned long)lb_tensor_count(f));
    } else if (argc == 3) {
        rc = dump(f, argv[2]);
    } else {
        rc = list(f);
    }
    lb_close(f);
    return rc;
}
