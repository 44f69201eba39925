/* lowbit_reader.h: a dependency-free C99 reader for lowbit files, version 1.
 *
 * Written from format_spec/SPEC.md and format_spec/types/ alone. It validates a whole file
 * (prefix, header CRC, strict JSON with depth and size limits, tensor table and tiling) with
 * overflow-checked arithmetic before handing anything out, and dequantizes any tensor of a known
 * type to float32. Every failure is an error code with a message; nothing reads outside the file,
 * allocates more than the header size justifies, or loops without bound.
 *
 * Usage:
 *     lb_file *f; lb_error e;
 *     if (lb_open("model.lowbit", &f, &e) != LB_OK) { fprintf(stderr, "%s\n", e.message); ... }
 *     for (size_t i = 0; i < lb_tensor_count(f); i++) { const lb_tensor *t = lb_tensor_at(f, i); ... }
 *     float *out = malloc(t->elements * sizeof(float));
 *     lb_dequantize(f, t, out, t->elements, &e);
 *     lb_close(f);
 */
#ifndef LOWBIT_READER_H
#define LOWBIT_READER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes; lb_error_name() gives the names format_spec/vectors/manifest.json uses. */
typedef enum {
    LB_OK = 0,
    LB_E_IO,            /* cannot open/read/map the file */
    LB_E_TRUNCATED,     /* shorter than the prefix, or than data_offset */
    LB_E_MAGIC,         /* not a lowbit file */
    LB_E_VERSION,       /* a major version this reader does not read */
    LB_E_RESERVED,      /* flags or reserved not zero */
    LB_E_HEADER_LEN,    /* header_len outside 1 .. 64 MiB */
    LB_E_DATA_OFFSET,   /* data_offset != align64(48 + header_len) */
    LB_E_HEADER_CRC,    /* header CRC-32 mismatch */
    LB_E_PADDING,       /* non-zero bytes between header and data */
    LB_E_JSON,          /* header is not strict UTF-8 JSON within the nesting limit */
    LB_E_HEADER,        /* JSON is not {"metadata": {...}, "tensors": [...]} */
    LB_E_FILE_SIZE,     /* data_offset + data_len != file size, or file over 2^50 bytes */
    LB_E_TENSOR,        /* a tensor entry is malformed (name, type, shape, offset, nbytes, crc32) */
    LB_E_LIMIT,         /* a cap of SPEC.md section 7 is exceeded */
    LB_E_DUPLICATE,     /* two tensors with the same name */
    LB_E_LAYOUT,        /* row length or nbytes does not fit the type's layout */
    LB_E_TILING,        /* offsets do not tile the data region */
    LB_E_UNKNOWN_TYPE,  /* dequantizing a tensor of a type this reader does not know */
    LB_E_TENSOR_CRC,    /* a tensor's bytes do not match its crc32 */
    LB_E_NOMEM,         /* out of memory */
    LB_E_ARG            /* bad argument (output buffer too small, no such tensor) */
} lb_status;

typedef struct {
    lb_status code;
    char message[256];
} lb_error;

typedef struct {
    const char *name;      /* NUL-terminated; name_len bytes of UTF-8 (may contain U+0000) */
    size_t name_len;
    const char *type;      /* NUL-terminated type name, e.g. "q8_0" */
    size_t type_len;
    uint32_t ndim;         /* 1..4 */
    uint64_t shape[4];
    uint64_t rows;         /* product of all but the last dimension */
    uint64_t cols;         /* the last dimension (row length) */
    uint64_t elements;     /* rows * cols, at most 2^48 */
    uint64_t offset;       /* relative to the data region */
    uint64_t nbytes;
    uint32_t crc32;
    int known;             /* 1 when this reader knows the type and can dequantize it */
    const uint8_t *data;   /* the tensor's nbytes bytes inside the mapped file */
} lb_tensor;

typedef struct lb_file lb_file;

/* Open and fully validate a file (memory-mapped where POSIX mmap exists, else read). */
lb_status lb_open(const char *path, lb_file **out, lb_error *err);
/* Validate a file held in memory; the buffer must outlive the lb_file (it is not copied). */
lb_status lb_open_memory(const void *data, size_t size, lb_file **out, lb_error *err);
void lb_close(lb_file *f);

size_t lb_tensor_count(const lb_file *f);
const lb_tensor *lb_tensor_at(const lb_file *f, size_t i);
const lb_tensor *lb_find_tensor(const lb_file *f, const char *name);

/* The metadata object: its raw JSON text, and its top-level keys with their raw JSON values. */
const char *lb_metadata_json(const lb_file *f, size_t *len);
size_t lb_metadata_count(const lb_file *f);
lb_status lb_metadata_entry(const lb_file *f, size_t i, const char **key, size_t *key_len,
                            const char **json, size_t *json_len);

/* Dequantize a tensor to `n` float32 values (n must be t->elements). */
lb_status lb_dequantize(const lb_file *f, const lb_tensor *t, float *out, uint64_t n, lb_error *err);
/* Check a tensor's CRC-32 against its table entry. */
lb_status lb_check_crc(const lb_file *f, const lb_tensor *t, lb_error *err);

const char *lb_error_name(lb_status code);
uint32_t lb_crc32(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
