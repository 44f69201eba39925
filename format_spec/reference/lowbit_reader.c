/* lowbit_reader.c: reference reader for lowbit files, version 1 (see lowbit_reader.h).
 *
 * Written from format_spec/SPEC.md. Every size taken from the file is range-checked before use and
 * every sum or product of such sizes goes through checked_add/checked_mul, so no crafted value can
 * wrap around into a small allocation or an out-of-bounds pointer.
 *
 * Adding a tensor type = one dequantization function + one row in TYPES below (whose tail_layout
 * gives the size of a row's shorter last block, for the types that have one).
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "lowbit_reader.h"

/* Dequantization must round every float32 product on its own (no fused multiply-add): build with
 * -ffp-contract=off where the compiler would otherwise contract (GCC in GNU mode, clang). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32) && !defined(LB_NO_MMAP)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LB_HAVE_MMAP 1
#endif

/* ------------------------------------------------------------------------------- limits (SPEC 7) */

#define PREFIX_SIZE 48u
#define ALIGN 64u
#define MAX_HEADER_BYTES (64ull << 20)
#define MAX_JSON_DEPTH 32u
#define MAX_TENSORS 100000u
#define MAX_NAME_BYTES 512u
#define MAX_NDIM 4u
#define MAX_DIM ((1ull << 31) - 1)
#define MAX_ELEMENTS (1ull << 48)
#define MAX_FILE_BYTES (1ull << 50)
#define INT_CLAMP (1ull << 62)   /* JSON integers above this are kept as this: never a valid value */

static const uint8_t MAGIC[8] = {0x89, 'L', 'O', 'W', 'B', 'I', 'T', '\n'};

/* ------------------------------------------------------------------------------- errors */

static const char *ERROR_NAMES[] = {
    "ok", "io", "truncated", "magic", "version", "reserved", "header_len", "data_offset",
    "header_crc", "padding", "json", "header", "file_size", "tensor", "limit", "duplicate",
    "layout", "tiling", "unknown_type", "tensor_crc", "nomem", "arg"};

const char *lb_error_name(lb_status code) {
    if ((unsigned)code < sizeof ERROR_NAMES / sizeof ERROR_NAMES[0]) return ERROR_NAMES[code];
    return "unknown";
}

static lb_status fail(lb_error *err, lb_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ------------------------------------------------------------------------------- arithmetic */

static int checked_add(uint64_t a, uint64_t b, uint64_t *r) {
    if (a > UINT64_MAX - b) return 0;
    *r = a + b;
    return 1;
}

static int checked_mul(uint64_t a, uint64_t b, uint64_t *r) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}

/* align64 of n, or 0 on overflow (n is always < 2^63 where it is used) */
static int align64(uint64_t n, uint64_t *r) {
    uint64_t t;
    if (!checked_add(n, ALIGN - 1, &t)) return 0;
    *r = t / ALIGN * ALIGN;
    return 1;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ------------------------------------------------------------------------------- CRC-32 */

static uint32_t crc_table[256];
static int crc_ready = 0;

uint32_t lb_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    if (!crc_ready) {  /* idempotent: concurrent first calls compute the same table */
        uint32_t k, j, v;
        for (k = 0; k < 256; k++) {
            v = k;
            for (j = 0; j < 8; j++) v = (v & 1) ? 0xEDB88320u ^ (v >> 1) : v >> 1;
            crc_table[k] = v;
        }
        crc_ready = 1;
    }
    for (i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------------------------------- tensor types */

static float f32_from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* IEEE binary16 -> binary32, exact; NaN becomes the canonical quiet NaN 0x7FC00000. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        /* subnormal: mant * 2^-24, normalize */
        exp = 127 - 15 + 1;
        while (!(mant & 0x400)) { mant <<= 1; exp--; }
        mant &= 0x3FF;
        return f32_from_bits(sign | (exp << 23) | (mant << 13));
    }
    if (exp == 31) return mant ? f32_from_bits(0x7FC00000u) : f32_from_bits(sign | 0x7F800000u);
    return f32_from_bits(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

/* Each function dequantizes one row of `cols` values from its row_bytes(cols) bytes. */
typedef void (*dequant_row_fn)(const uint8_t *raw, float *out, uint64_t cols);

static void dq_f32(const uint8_t *raw, float *out, uint64_t cols) {
    uint64_t i;
    for (i = 0; i < cols; i++) out[i] = f32_from_bits(rd32(raw + 4 * i));
}

static void dq_f16(const uint8_t *raw, float *out, uint64_t cols) {
    uint64_t i;
    for (i = 0; i < cols; i++) out[i] = f16_to_f32((uint16_t)(raw[2 * i] | (raw[2 * i + 1] << 8)));
}

static void dq_bf16(const uint8_t *raw, float *out, uint64_t cols) {
    uint64_t i;
    for (i = 0; i < cols; i++) out[i] = f32_from_bits(((uint32_t)raw[2 * i] << 16) | ((uint32_t)raw[2 * i + 1] << 24));
}

static void dq_u8(const uint8_t *raw, float *out, uint64_t cols) {
    uint64_t i;
    for (i = 0; i < cols; i++) out[i] = (float)raw[i];
}

static void dq_q8_0(const uint8_t *raw, float *out, uint64_t cols) {
    uint64_t b, i;
    for (b = 0; b < cols / 32; b++) {
        const uint8_t *blk = raw + b * 34;
        float d = f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
        for (i = 0; i < 32; i++) out[b * 32 + i] = d * (float)(int8_t)blk[2 + i];
    }
}

/* ---- k-quants (format_spec/types/kquants.md): super-blocks of 256 weights, then an optional tail
 * block for the last cols % 256. Every product is a separate float32 statement in the spec's order
 * and the library is built without FP contraction, so results match GGML and the Python runtime bit
 * for bit. */

#define QK_K 256u

static float f16_at(const uint8_t *p) { return f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* Affine weight (d * sc) * q - dmin * m, each step rounded to float32. */
static float kq_affine(float d, float dmin, uint32_t sc, uint32_t m, uint32_t q) {
    float dl = d * (float)sc, ml = dmin * (float)m, y = dl * (float)q;
    return y - ml;
}

/* Symmetric weight (d * sc) * q. */
static float kq_symmetric(float d, int32_t sc, int32_t q) {
    float dl = d * (float)sc;
    return dl * (float)q;
}

/* Quant i of a tail block's little-endian bit stream of `bits`-bit values. */
static uint32_t tail_quant(const uint8_t *s, uint32_t i, uint32_t bits) {
    uint32_t v = 0, k;
    for (k = 0; k < bits; k++) {
        uint32_t p = i * bits + k;
        v |= (uint32_t)((s[p >> 3] >> (p & 7)) & 1) << k;
    }
    return v;
}

static void q2_k_block(const uint8_t *b, float *y) {
    float d = f16_at(b + 80), dmin = f16_at(b + 82);
    uint32_t e;
    for (e = 0; e < QK_K; e++) {
        uint32_t h = e / 128, j = e % 128 / 32, l = e % 32, s = b[e / 16];
        y[e] = kq_affine(d, dmin, s & 15, s >> 4, (b[16 + 32 * h + l] >> (2 * j)) & 3);
    }
}

static void q2_k_tail(const uint8_t *b, float *y, uint32_t r) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    uint32_t nsub = (r + 15) / 16, i;
    const uint8_t *q = b + 4 + nsub;
    for (i = 0; i < r; i++) {
        uint32_t s = b[4 + i / 16];
        y[i] = kq_affine(d, dmin, s & 15, s >> 4, tail_quant(q, i, 2));
    }
}

static int32_t q3_k_scale(const uint8_t *sc, uint32_t j) {
    uint32_t lo = j < 8 ? sc[j] & 15u : (uint32_t)sc[j - 8] >> 4, hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3u;
    return (int32_t)(lo | (hi << 4)) - 32;
}

static void q3_k_block(const uint8_t *b, float *y) {
    float d = f16_at(b + 108);
    uint32_t e;
    for (e = 0; e < QK_K; e++) {
        uint32_t h = e / 128, j = e % 128 / 32, l = e % 32;
        int32_t low = (b[32 + 32 * h + l] >> (2 * j)) & 3, high = (b[l] >> (e / 32)) & 1;
        y[e] = kq_symmetric(d, q3_k_scale(b + 96, e / 16), low - (high ? 0 : 4));
    }
}

static void q3_k_tail(const uint8_t *b, float *y, uint32_t r) {
    float d = f16_at(b);
    uint32_t nsub = (r + 15) / 16, i;
    const uint8_t *q = b + 2 + nsub;
    for (i = 0; i < r; i++) y[i] = kq_symmetric(d, (int32_t)b[2 + i / 16] - 32, (int32_t)tail_quant(q, i, 3) - 4);
}

/* q4_k/q5_k packed scale (or min, mins = 1) of sub-block j from the 12 bytes K. */
static uint32_t k4_scale(const uint8_t *K, uint32_t j, int mins) {
    if (j < 4) return (mins ? K[j + 4] : K[j]) & 63u;
    return mins ? (uint32_t)(K[j + 4] >> 4) | ((uint32_t)(K[j] >> 6) << 4)
                : (uint32_t)(K[j + 4] & 15) | ((uint32_t)(K[j - 4] >> 6) << 4);
}

static void q4_k_block(const uint8_t *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    uint32_t e;
    for (e = 0; e < QK_K; e++) {
        uint32_t c = e / 64, t = e % 64 / 32, l = e % 32, j = e / 32;
        y[e] = kq_affine(d, dmin, k4_scale(b + 4, j, 0), k4_scale(b + 4, j, 1), (b[16 + 32 * c + l] >> (4 * t)) & 15u);
    }
}

/* q4_k and q5_k tails differ only in the quant width. */
static void k45_tail(const uint8_t *b, float *y, uint32_t r, uint32_t bits) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    uint32_t nsub = (r + 31) / 32, i;
    const uint8_t *q = b + 4 + 2 * nsub;
    for (i = 0; i < r; i++) y[i] = kq_affine(d, dmin, b[4 + i / 32], b[4 + nsub + i / 32], tail_quant(q, i, bits));
}

static void q4_k_tail(const uint8_t *b, float *y, uint32_t r) { k45_tail(b, y, r, 4); }

static void q5_k_block(const uint8_t *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    uint32_t e;
    for (e = 0; e < QK_K; e++) {
        uint32_t c = e / 64, t = e % 64 / 32, l = e % 32, j = e / 32;
        uint32_t q = ((b[48 + 32 * c + l] >> (4 * t)) & 15u) | (((b[16 + l] >> j) & 1u) << 4);
        y[e] = kq_affine(d, dmin, k4_scale(b + 4, j, 0), k4_scale(b + 4, j, 1), q);
    }
}

static void q5_k_tail(const uint8_t *b, float *y, uint32_t r) { k45_tail(b, y, r, 5); }

static void q6_k_block(const uint8_t *b, float *y) {
    float d = f16_at(b + 208);
    uint32_t e;
    for (e = 0; e < QK_K; e++) {
        uint32_t h = e / 128, f = e % 128, k = f / 32, l = f % 32;
        uint32_t low = (b[64 * h + f % 64] >> (4 * (f / 64))) & 15u, high = (b[128 + 32 * h + l] >> (2 * k)) & 3u;
        y[e] = kq_symmetric(d, (int8_t)b[192 + e / 16], (int32_t)(low | (high << 4)) - 32);
    }
}

static void q6_k_tail(const uint8_t *b, float *y, uint32_t r) {
    float d = f16_at(b);
    uint32_t nsub = (r + 15) / 16, i;
    const uint8_t *q = b + 2 + nsub;
    for (i = 0; i < r; i++) y[i] = kq_symmetric(d, (int8_t)b[2 + i / 16], (int32_t)tail_quant(q, i, 6) - 32);
}

/* Rows of whole super-blocks followed by one tail block (its size: tail_bytes in TYPES). */
#define KQUANT_ROW(T, BYTES)                                                        \
    static void dq_##T(const uint8_t *raw, float *out, uint64_t cols) {             \
        uint64_t b, nb = cols / QK_K;                                               \
        for (b = 0; b < nb; b++) T##_block(raw + b * (BYTES), out + b * QK_K);      \
        if (cols % QK_K) T##_tail(raw + nb * (BYTES), out + nb * QK_K, (uint32_t)(cols % QK_K)); \
    }
KQUANT_ROW(q2_k, 84)
KQUANT_ROW(q3_k, 110)
KQUANT_ROW(q4_k, 144)
KQUANT_ROW(q5_k, 176)
KQUANT_ROW(q6_k, 210)

/* A row's last cols % block_size weights, for types that allow them, form one tail block of
 * head + nsub * (scale_bytes + sub * bits / 8) bytes, nsub = ceil(remainder / sub). */
typedef struct {
    uint32_t sub;          /* weights per sub-block; 0: rows must be whole blocks */
    uint32_t bits;         /* bits per quant */
    uint32_t head;         /* header bytes (binary16 d, dmin) */
    uint32_t scale_bytes;  /* scale (and min) bytes per sub-block */
} tail_layout;

typedef struct {
    const char *name;
    uint32_t block_size;   /* weights per block along a row */
    uint32_t block_bytes;  /* bytes per block */
    dequant_row_fn dequant_row;   /* NULL for the codebook and entropy-coded types (see below) */
    tail_layout tail;
    /* Codebook types (types/codebook.md): D weights per index byte, and whether the codebook is
     * stored in the tensor's prefix (learned) or is the fixed D4 lattice. 0 for other types. */
    uint32_t vq_dim, vq_learned;
    /* Index bytes of a whole block (the bytes an entropy-coded variant replaces by Huffman codes,
     * types/huffman.md): positions idx_first .. idx_first + idx_count - 1 of the block; idx_tail = 1:
     * a tail block's packed quants (its bytes after head + nsub * scale_bytes) are index bytes too. */
    uint32_t idx_first, idx_count, idx_tail;
    /* Self-sized entropy-coded types `<base>.h`: the base type's name; NULL otherwise. */
    const char *base;
} type_info;

#define NO_TAIL {0, 0, 0, 0}
static const type_info TYPES[] = {
    {"f32", 1, 4, dq_f32, NO_TAIL, 0, 0, 0, 0, 0, NULL},
    {"f16", 1, 2, dq_f16, NO_TAIL, 0, 0, 0, 0, 0, NULL},
    {"bf16", 1, 2, dq_bf16, NO_TAIL, 0, 0, 0, 0, 0, NULL},
    {"u8", 1, 1, dq_u8, NO_TAIL, 0, 0, 0, 0, 0, NULL},
    {"q8_0", 32, 34, dq_q8_0, NO_TAIL, 0, 0, 0, 0, 0, NULL},
    {"q2_k", 256, 84, dq_q2_k, {16, 2, 4, 1}, 0, 0, 0, 0, 0, NULL},
    {"q3_k", 256, 110, dq_q3_k, {16, 3, 2, 1}, 0, 0, 0, 0, 0, NULL},
    {"q4_k", 256, 144, dq_q4_k, {32, 4, 4, 2}, 0, 0, 16, 128, 0, NULL},
    {"q4_ke", 256, 144, dq_q4_k, {32, 4, 4, 2}, 0, 0, 16, 128, 1, NULL},
    {"q5_k", 256, 176, dq_q5_k, {32, 5, 4, 2}, 0, 0, 0, 0, 0, NULL},
    {"q6_k", 256, 210, dq_q6_k, {16, 6, 2, 1}, 0, 0, 0, 0, 0, NULL},
    {"cbk2", 64, 17, NULL, NO_TAIL, 4, 1, 1, 16, 0, NULL},
    {"cbk4", 32, 17, NULL, NO_TAIL, 2, 1, 1, 16, 0, NULL},
    {"d4l2", 32, 9, NULL, NO_TAIL, 4, 0, 1, 8, 0, NULL},
    {"cbk2.h", 64, 17, NULL, NO_TAIL, 0, 0, 0, 0, 0, "cbk2"},
    {"cbk4.h", 32, 17, NULL, NO_TAIL, 0, 0, 0, 0, 0, "cbk4"},
    {"d4l2.h", 32, 9, NULL, NO_TAIL, 0, 0, 0, 0, 0, "d4l2"},
    {"q4_k.h", 256, 144, NULL, {32, 4, 4, 2}, 0, 0, 0, 0, 0, "q4_k"},
    {"q4_ke.h", 256, 144, NULL, {32, 4, 4, 2}, 0, 0, 0, 0, 0, "q4_ke"},
};

/* Bytes of one row of `cols` weights; 0 when the type cannot hold such a row or the size overflows. */
static int row_bytes_of(const type_info *ti, uint64_t cols, uint64_t *out) {
    uint64_t whole, rem = cols % ti->block_size, tail = 0;
    if (!checked_mul(cols / ti->block_size, ti->block_bytes, &whole)) return 0;
    if (rem) {
        uint64_t nsub;
        if (!ti->tail.sub) return 0;
        nsub = (rem + ti->tail.sub - 1) / ti->tail.sub;   /* rem < block_size <= 2^32: no overflow */
        tail = ti->tail.head + nsub * (ti->tail.scale_bytes + ti->tail.sub * ti->tail.bits / 8);
    }
    return checked_add(whole, tail, out);
}

/* Per-tensor side data before the rows (SPEC.md 5.1): a codebook type's stored codebook
 * (256 points of D binary16 values) and one binary16 scale per row. rows <= 2^48: no overflow. */
static uint64_t prefix_bytes_of(const type_info *ti, uint64_t rows) {
    if (!ti->vq_dim) return 0;
    return (ti->vq_learned ? 256u * ti->vq_dim * 2u : 0u) + 2 * rows;
}

static const type_info *find_type(const char *name, size_t len) {
    size_t i;
    for (i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strlen(TYPES[i].name) == len && memcmp(TYPES[i].name, name, len) == 0) return &TYPES[i];
    return NULL;
}

/* ---- codebook types (format_spec/types/codebook.md): one scale byte then B/D index bytes per block,
 * w = (d_r * SCALE[s]) * P[idx][j] in float32, P the tensor's stored codebook or the D4 lattice. */

/* 2^(r/16) for r = 0..15, correctly rounded to float32 (bit patterns, as codebook.md lists them). */
static const uint32_t SCALE_FRAC_BITS[16] = {
    0x3f800000u, 0x3f85aac3u, 0x3f8b95c2u, 0x3f91c3d3u, 0x3f9837f0u, 0x3f9ef532u, 0x3fa5fed7u, 0x3fad583fu,
    0x3fb504f3u, 0x3fbd08a4u, 0x3fc5672au, 0x3fce248cu, 0x3fd744fdu, 0x3fe0ccdfu, 0x3feac0c7u, 0x3ff5257du};

/* SCALE[s] = 2^((s - 255) / 16) for s >= 1, SCALE[0] = 0: 2^(r/16) times 2^q (q = -16 .. 0), exact. */
static float vq_scale(uint32_t s) {
    int32_t t = (int32_t)s - 255, q, r;
    if (s == 0) return 0.0f;
    q = t >= 0 ? t / 16 : -((15 - t) / 16);   /* floor(t / 16) */
    r = t - 16 * q;
    return f32_from_bits(SCALE_FRAC_BITS[r]) * f32_from_bits((uint32_t)(127 + q) << 23);
}

/* The codebook P[256][D] of a codebook type: read from the prefix, or the D4 lattice points of
 * smallest norm in (squared norm, z0, z1, z2, z3) order. Norms up to 10 fill 256 entries, so
 * coordinates stay within -3 .. 3. */
static void vq_codebook(const type_info *ti, const uint8_t *prefix, float *P) {
    uint32_t k = 0, i;
    int n2, a, b, c, d;
    if (ti->vq_learned) {
        for (i = 0; i < 256u * ti->vq_dim; i++) P[i] = f16_at(prefix + 2 * i);
        return;
    }
    for (n2 = 0; n2 <= 10; n2 += 2)
        for (a = -3; a <= 3; a++)
            for (b = -3; b <= 3; b++)
                for (c = -3; c <= 3; c++)
                    for (d = -3; d <= 3; d++)
                        if (k < 256 && a * a + b * b + c * c + d * d == n2 && (a + b + c + d + 12) % 2 == 0) {
                            P[4 * k] = (float)a; P[4 * k + 1] = (float)b; P[4 * k + 2] = (float)c; P[4 * k + 3] = (float)d;
                            k++;
                        }
}

static void vq_row(const type_info *ti, const float *P, float d, const uint8_t *raw, float *out, uint64_t cols) {
    uint32_t D = ti->vq_dim, B = ti->block_size, nv = B / D, v, j;
    uint64_t blk;
    for (blk = 0; blk < cols / B; blk++) {
        const uint8_t *q = raw + blk * (1 + nv);
        float sc = d * vq_scale(q[0]);
        for (v = 0; v < nv; v++)
            for (j = 0; j < D; j++) out[blk * B + v * D + j] = sc * P[q[1 + v] * D + j];
    }
}

/* ---- entropy-coded types `<base>.h` (format_spec/types/huffman.md) */

#define HUFF_MAX_LEN 12u
#define HUFF_FIXED 280u   /* u32 R, n_idx, n_other, P; u64 S; u8 len[256] */

typedef struct {
    const type_info *base;
    uint64_t rows, n_idx, n_other, prefix, stream_len, row_bytes;
    uint64_t whole;        /* bytes of the row's whole blocks (a tail block, if any, follows) */
    uint64_t tail_idx;     /* row position where the tail block's index bytes start (to the row's end); row_bytes: none */
    const uint8_t *lengths, *offsets, *pre, *other, *stream;
} huff_tensor;

/* Validate an entropy-coded tensor's header against its shape and nbytes (every MUST of huffman.md,
 * in the order the Python reader checks them) and locate its parts. Reads nothing outside the
 * tensor's nbytes bytes. */
static lb_status huff_parse(const lb_tensor *t, const type_info *ti, huff_tensor *h, lb_error *err) {
    const uint8_t *p = t->data;
    uint64_t kraft = 0, need, part, r, prev;
    uint32_t s;
    int used = 0;
    h->base = find_type(ti->base, strlen(ti->base));
    h->rows = t->rows;
    if (!h->base || !row_bytes_of(h->base, t->cols, &h->row_bytes))
        return fail(err, LB_E_LAYOUT, "tensor '%.200s': row length %llu does not fit %s", t->name, (unsigned long long)t->cols, ti->name);
    /* index bytes by arithmetic: idx_count per whole block, and for q4_ke the tail block's packed
     * quants, which end its row (rem < block_size <= 2^32 and row_bytes was computed: no overflow) */
    h->whole = t->cols / h->base->block_size * h->base->block_bytes;
    h->n_idx = t->cols / h->base->block_size * h->base->idx_count;
    h->tail_idx = h->row_bytes;
    if (h->base->idx_tail && t->cols % h->base->block_size) {
        const tail_layout *tl = &h->base->tail;
        uint64_t nsub = (t->cols % h->base->block_size + tl->sub - 1) / tl->sub;
        h->tail_idx = h->whole + tl->head + nsub * tl->scale_bytes;
        h->n_idx += h->row_bytes - h->tail_idx;
    }
    h->n_other = h->row_bytes - h->n_idx;
    h->prefix = prefix_bytes_of(h->base, t->rows);
    if (t->nbytes < HUFF_FIXED)
        return fail(err, LB_E_LAYOUT, "tensor '%.200s' (%s): %llu bytes is shorter than the %u-byte entropy-coding header",
                    t->name, ti->name, (unsigned long long)t->nbytes, HUFF_FIXED);
    if (rd32(p) != h->rows || rd32(p + 4) != h->n_idx || rd32(p + 8) != h->n_other || rd32(p + 12) != h->prefix)
        return fail(err, LB_E_LAYOUT, "tensor '%.200s' (%s): header (rows %u, index bytes %u, other bytes %u, prefix %u) does not match "
                    "the shape (expected %llu, %llu, %llu, %llu)", t->name, ti->name, rd32(p), rd32(p + 4), rd32(p + 8), rd32(p + 12),
                    (unsigned long long)h->rows, (unsigned long long)h->n_idx, (unsigned long long)h->n_other, (unsigned long long)h->prefix);
    h->stream_len = rd64(p + 16);
    h->lengths = p + 24;
    for (s = 0; s < 256; s++) {
        uint32_t l = h->lengths[s];
        if (l > HUFF_MAX_LEN) { kraft = 0; used = -1; break; }
        if (l) { kraft += 1u << (HUFF_MAX_LEN - l); used = 1; }
    }
    if (used < 0 || (used && kraft != 1u << HUFF_MAX_LEN) || (!used && h->rows * h->n_idx > 0))
        return fail(err, LB_E_LAYOUT, "tensor '%.200s' (%s): code lengths do not form a complete prefix code of at most 12 bits",
                    t->name, ti->name);
    /* 284 + 4R + P + R * n_other + S, each term checked (R <= 2^48, so 4(R + 1) cannot overflow) */
    need = HUFF_FIXED + 4 * (h->rows + 1);
    if (!checked_add(need, h->prefix, &need) || !checked_mul(h->rows, h->n_other, &part) || !checked_add(need, part, &need) ||
        !checked_add(need, h->stream_len, &need) || need != t->nbytes)
        return fail(err, LB_E_LAYOUT, "tensor '%.200s' (%s): header describes a different size than its %llu bytes",
                    t->name, ti->name, (unsigned long long)t->nbytes);
    h->offsets = p + HUFF_FIXED;
    h->pre = h->offsets + 4 * (h->rows + 1);
    h->other = h->pre + h->prefix;
    h->stream = h->other + h->rows * h->n_other;
    prev = 0;
    for (r = 0; r <= h->rows; r++) {
        uint64_t o = rd32(h->offsets + 4 * r);
        if ((r == 0 && o != 0) || o < prev || (r == h->rows && o != h->stream_len))
            return fail(err, LB_E_LAYOUT, "tensor '%.200s' (%s): chunk offsets are not non-decreasing from 0 to the stream length",
                        t->name, ti->name);
        prev = o;
    }
    return LB_OK;
}

/* Decoding table: for each 12-bit window, (symbol | length << 8) of the canonical code. */
static void huff_table(const uint8_t *lengths, uint16_t *table) {
    uint32_t code = 0, prev = 0, len, s, i, fill = 0;
    for (len = 1; len <= HUFF_MAX_LEN; len++)
        for (s = 0; s < 256; s++) {
            if (lengths[s] != len) continue;
            code <<= len - prev;
            prev = len;
            for (i = 0; i < 1u << (HUFF_MAX_LEN - len); i++) {
                uint32_t at = (code << (HUFF_MAX_LEN - len)) + i;
                if (at < (1u << HUFF_MAX_LEN)) { table[at] = (uint16_t)(s | (len << 8)); fill++; }
            }
            code++;
        }
    for (i = fill; i < (1u << HUFF_MAX_LEN); i++) table[i] = 0x100;   /* unreachable for a complete code */
}

/* The next 12 bits of a chunk at bit position `bit`, most significant first; bits past the chunk read as 0. */
static uint32_t huff_peek(const uint8_t *c, uint64_t n, uint64_t bit) {
    uint64_t at = bit >> 3;
    uint32_t w = 0, k;
    for (k = 0; k < 3; k++) w = (w << 8) | (at + k < n ? c[at + k] : 0u);
    return (w >> (12 - (bit & 7))) & 0xFFFu;
}

/* Row r of the base type's bytes: other bytes in position order, index bytes decoded from chunk r. */
static void huff_row(const huff_tensor *h, const uint16_t *table, uint64_t r, uint8_t *row) {
    const type_info *b = h->base;
    const uint8_t *other = h->other + r * h->n_other;
    uint64_t start = rd32(h->offsets + 4 * r), n = rd32(h->offsets + 4 * (r + 1)) - start, bit = 0, p;
    const uint8_t *chunk = h->stream + start;
    for (p = 0; p < h->row_bytes; p++) {
        uint32_t in = (uint32_t)(p % b->block_bytes);
        if ((p < h->whole && in >= b->idx_first && in < b->idx_first + b->idx_count) || p >= h->tail_idx) {
            uint32_t e = table[huff_peek(chunk, n, bit)];
            row[p] = (uint8_t)(e & 0xFF);
            bit += e >> 8;
        } else {
            row[p] = *other++;
        }
    }
}

/* ------------------------------------------------------------------------------- strict JSON */

enum { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT };
#define J_NONE 0xFFFFFFFFu

typedef struct {
    uint8_t kind;
    uint8_t is_int;     /* number written without fraction or exponent */
    uint8_t neg;        /* number has a minus sign */
    uint32_t src, srclen;  /* the value's text in the header */
    uint32_t a, b;      /* string: arena offset, length; container: first child, count */
    uint32_t key, keylen;  /* for members of an object: decoded key in the arena */
    uint32_t next;      /* next sibling */
    uint64_t ival;      /* |integer|, clamped to INT_CLAMP */
} jnode;

typedef struct {
    const uint8_t *s;
    size_t n, pos;
    jnode *nodes;
    size_t nn, cap;
    char *arena;
    size_t alen;
    lb_error *err;
} jparser;

static lb_status jfail(jparser *p, const char *what) {
    return fail(p->err, LB_E_JSON, "header is not valid JSON: %s at byte %lu", what, (unsigned long)p->pos);
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing above U+10FFFF. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len, k;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (n - i < len) return i;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return (size_t)-1;
}

static void jskip_ws(jparser *p) {
    while (p->pos < p->n) {
        uint8_t c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static lb_status jnew(jparser *p, uint8_t kind, uint32_t *idx) {
    if (p->nn == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        jnode *nodes;
        if (cap > p->n + 1) cap = p->n + 1;   /* a value takes at least one byte of the header */
        if (cap <= p->nn) return jfail(p, "too many values");
        nodes = (jnode *)realloc(p->nodes, cap * sizeof(jnode));
        if (!nodes) return fail(p->err, LB_E_NOMEM, "out of memory parsing the header");
        p->nodes = nodes;
        p->cap = cap;
    }
    memset(&p->nodes[p->nn], 0, sizeof(jnode));
    p->nodes[p->nn].kind = kind;
    p->nodes[p->nn].next = J_NONE;
    p->nodes[p->nn].a = J_NONE;
    p->nodes[p->nn].src = (uint32_t)p->pos;
    *idx = (uint32_t)p->nn++;
    return LB_OK;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(jparser *p, uint32_t *v) {
    int i, h;
    if (p->n - p->pos < 4) return 0;
    *v = 0;
    for (i = 0; i < 4; i++) {
        if ((h = hexval(p->s[p->pos + i])) < 0) return 0;
        *v = (*v << 4) | (uint32_t)h;
    }
    p->pos += 4;
    return 1;
}

/* Decode a string at p->pos (the opening quote) into the arena. */
static lb_status jstring(jparser *p, uint32_t *off, uint32_t *len) {
    size_t start = p->alen;
    p->pos++;   /* opening quote */
    for (;;) {
        uint8_t c;
        if (p->pos >= p->n) return jfail(p, "unterminated string");
        c = p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return jfail(p, "control character in a string");
        if (c != '\\') { p->arena[p->alen++] = (char)c; p->pos++; continue; }
        if (p->n - p->pos < 2) return jfail(p, "unterminated escape");
        c = p->s[p->pos + 1];
        p->pos += 2;
        switch (c) {
        case '"': case '\\': case '/': p->arena[p->alen++] = (char)c; break;
        case 'b': p->arena[p->alen++] = '\b'; break;
        case 'f': p->arena[p->alen++] = '\f'; break;
        case 'n': p->arena[p->alen++] = '\n'; break;
        case 'r': p->arena[p->alen++] = '\r'; break;
        case 't': p->arena[p->alen++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!read_hex4(p, &cp)) return jfail(p, "bad \\u escape");
            if (cp >= 0xDC00 && cp <= 0xDFFF) return jfail(p, "lone low surrogate escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return jfail(p, "lone high surrogate escape");
                p->pos += 2;
                if (!read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) return jfail(p, "lone high surrogate escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* the UTF-8 form (<= 4 bytes) is never longer than the escape (>= 6 bytes) */
            if (cp < 0x80) p->arena[p->alen++] = (char)cp;
            else if (cp < 0x800) {
                p->arena[p->alen++] = (char)(0xC0 | (cp >> 6));
                p->arena[p->alen++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                p->arena[p->alen++] = (char)(0xE0 | (cp >> 12));
                p->arena[p->alen++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                p->arena[p->alen++] = (char)(0x80 | (cp & 0x3F));
            } else {
                p->arena[p->alen++] = (char)(0xF0 | (cp >> 18));
                p->arena[p->alen++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                p->arena[p->alen++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                p->arena[p->alen++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: return jfail(p, "bad escape");
        }
    }
    *off = (uint32_t)start;
    *len = (uint32_t)(p->alen - start);
    p->arena[p->alen++] = '\0';   /* fits: the two quotes were not copied */
    return LB_OK;
}

/* 2^1024 - 2^970: the smallest magnitude that rounds to infinity as an IEEE binary64. */
static const char DBL_OVERFLOW_DIGITS[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490179775872070963302864166928879109465555478519404026306574886715058206819089020007083836762738548458177117317644757302700698555713669596228429148198608349364752927190741684443655107043427115596995080930428801779041744977920";

/* A JSON number; records whether it is an integer and its clamped magnitude, and rejects any
 * number that is infinite when read as a binary64 (so "1e400" is as invalid as "Infinity"). */
static lb_status jnumber(jparser *p, jnode *nd) {
    const uint8_t *s = p->s;
    size_t i = p->pos, int_start, int_end, frac_start = 0, frac_end = 0;
    int64_t exp10 = 0, e = 0, esign = 1, E;
    uint64_t mag = 0;
    size_t k, first_sig = (size_t)-1;
    int seen_int_sig = 0;
    if (i < p->n && s[i] == '-') { nd->neg = 1; i++; }
    int_start = i;
    if (i < p->n && s[i] == '0') i++;
    else if (i < p->n && s[i] >= '1' && s[i] <= '9') while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    else return jfail(p, "bad number");
    int_end = i;
    nd->is_int = 1;
    if (i < p->n && s[i] == '.') {
        i++;
        frac_start = i;
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
        frac_end = i;
        if (frac_end == frac_start) return jfail(p, "bad number");
        nd->is_int = 0;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        size_t es;
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) { if (s[i] == '-') esign = -1; i++; }
        es = i;
        while (i < p->n && s[i] >= '0' && s[i] <= '9') {
            if (e < 1000000000) e = e * 10 + (s[i] - '0');
            i++;
        }
        if (i == es) return jfail(p, "bad number");
        nd->is_int = 0;
    }
    for (k = int_start; k < int_end; k++) {
        if (mag >= INT_CLAMP / 10) mag = INT_CLAMP;   /* no wrap: clamp before multiplying */
        else mag = mag * 10 + (uint64_t)(s[k] - '0');
    }
    nd->ival = mag;
    /* decimal exponent E of the leading significant digit: value in [10^(E-1), 10^E) */
    for (k = int_start; k < int_end; k++)
        if (s[k] != '0') { first_sig = k; seen_int_sig = 1; break; }
    if (seen_int_sig) E = (int64_t)(int_end - first_sig);
    else {
        E = 0;
        for (k = frac_start; k < frac_end; k++) {
            if (s[k] != '0') { first_sig = k; break; }
            E--;
        }
    }
    if (first_sig != (size_t)-1) {
        exp10 = E + esign * e;
        if (exp10 > 309) return jfail(p, "number too large for a binary64");
        if (exp10 == 309) {   /* compare the significant digits with the overflow threshold */
            /* significant digits: [first_sig, int_end) then the fraction, or [first_sig, frac_end) */
            size_t s1 = first_sig, e1 = seen_int_sig ? int_end : frac_end;
            size_t s2 = seen_int_sig ? frac_start : 0, e2 = seen_int_sig ? frac_end : 0;
            size_t d = 0, kk = s1;
            int cmp = 0;
            for (;;) {
                char c, t;
                if (kk == e1 && s2 < e2) { kk = s2; e1 = e2; s2 = e2 = 0; }
                c = kk < e1 ? (char)s[kk] : 0;
                t = DBL_OVERFLOW_DIGITS[d];
                if (!c && !t) break;
                if (!c) c = '0';
                if (!t) t = '0';
                if (c != t) { cmp = c > t ? 1 : -1; break; }
                if (kk < e1) kk++;
                if (DBL_OVERFLOW_DIGITS[d]) d++;
            }
            if (cmp >= 0) return jfail(p, "number too large for a binary64");
        }
    }
    p->pos = i;
    return LB_OK;
}

typedef struct { const char *s; uint32_t len; } keyref;

static int keyref_cmp(const void *a, const void *b) {
    const keyref *x = (const keyref *)a, *y = (const keyref *)b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->s, y->s, x->len);
}

static lb_status jvalue(jparser *p, uint32_t depth, uint32_t *out);

static lb_status jcontainer(jparser *p, uint32_t depth, uint32_t idx, int object) {
    uint32_t last = J_NONE, count = 0;
    uint8_t close = object ? '}' : ']';
    lb_status st;
    p->pos++;
    jskip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; goto done; }
    for (;;) {
        uint32_t child, koff = 0, klen = 0;
        if (object) {
            if (p->pos >= p->n || p->s[p->pos] != '"') return jfail(p, "expected a string key");
            if ((st = jstring(p, &koff, &klen)) != LB_OK) return st;
            jskip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') return jfail(p, "expected ':'");
            p->pos++;
        }
        if ((st = jvalue(p, depth + 1, &child)) != LB_OK) return st;
        if (object) { p->nodes[child].key = koff; p->nodes[child].keylen = klen; }
        if (last == J_NONE) p->nodes[idx].a = child;
        else p->nodes[last].next = child;
        last = child;
        count++;
        jskip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; jskip_ws(p); continue; }
        if (p->pos < p->n && p->s[p->pos] == close) { p->pos++; break; }
        return jfail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
done:
    p->nodes[idx].b = count;
    if (object && count > 1) {   /* duplicate keys: sort the keys, compare neighbours */
        keyref *keys = (keyref *)malloc(count * sizeof(keyref));
        uint32_t c = p->nodes[idx].a, i = 0;
        if (!keys) return fail(p->err, LB_E_NOMEM, "out of memory parsing the header");
        for (; c != J_NONE; c = p->nodes[c].next, i++) {
            keys[i].s = p->arena + p->nodes[c].key;
            keys[i].len = p->nodes[c].keylen;
        }
        qsort(keys, count, sizeof(keyref), keyref_cmp);
        for (i = 1; i < count; i++)
            if (keyref_cmp(&keys[i - 1], &keys[i]) == 0) { free(keys); return jfail(p, "duplicate key"); }
        free(keys);
    }
    return LB_OK;
}

static lb_status jvalue(jparser *p, uint32_t depth, uint32_t *out) {
    uint32_t idx;
    lb_status st;
    uint8_t c;
    if (depth > MAX_JSON_DEPTH)
        return fail(p->err, LB_E_JSON, "header is nested more than %u levels deep", MAX_JSON_DEPTH);
    jskip_ws(p);
    if (p->pos >= p->n) return jfail(p, "unexpected end");
    c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if ((st = jnew(p, c == '{' ? J_OBJECT : J_ARRAY, &idx)) != LB_OK) return st;
        if ((st = jcontainer(p, depth, idx, c == '{')) != LB_OK) return st;
    } else if (c == '"') {
        uint32_t off, len;
        if ((st = jnew(p, J_STRING, &idx)) != LB_OK) return st;
        if ((st = jstring(p, &off, &len)) != LB_OK) return st;
        p->nodes[idx].a = off;
        p->nodes[idx].b = len;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        if ((st = jnew(p, J_NUMBER, &idx)) != LB_OK) return st;
        if ((st = jnumber(p, &p->nodes[idx])) != LB_OK) return st;
    } else if (p->n - p->pos >= 4 && memcmp(p->s + p->pos, "true", 4) == 0) {
        if ((st = jnew(p, J_TRUE, &idx)) != LB_OK) return st;
        p->pos += 4;
    } else if (p->n - p->pos >= 5 && memcmp(p->s + p->pos, "false", 5) == 0) {
        if ((st = jnew(p, J_FALSE, &idx)) != LB_OK) return st;
        p->pos += 5;
    } else if (p->n - p->pos >= 4 && memcmp(p->s + p->pos, "null", 4) == 0) {
        if ((st = jnew(p, J_NULL, &idx)) != LB_OK) return st;
        p->pos += 4;
    } else {
        return jfail(p, "unexpected character");
    }
    p->nodes[idx].srclen = (uint32_t)(p->pos - p->nodes[idx].src);
    *out = idx;
    return LB_OK;
}

/* The member `key` of object node `obj`, or J_NONE. */
static uint32_t jget(const jnode *nodes, const char *arena, uint32_t obj, const char *key) {
    uint32_t c;
    size_t len = strlen(key);
    for (c = nodes[obj].a; c != J_NONE; c = nodes[c].next)
        if (nodes[c].keylen == len && memcmp(arena + nodes[c].key, key, len) == 0) return c;
    return J_NONE;
}

/* ------------------------------------------------------------------------------- the file */

struct lb_file {
    const uint8_t *base;
    uint64_t size;
    uint64_t data_offset, data_len;
    void *map;            /* owned mapping or buffer (NULL for lb_open_memory) */
    size_t map_len;
    int mapped;
    jnode *nodes;
    char *arena;
    const char *header;   /* the JSON text */
    uint32_t metadata;    /* node of the metadata object, or J_NONE */
    uint32_t *meta_items; /* its members' nodes, for O(1) lb_metadata_entry */
    lb_tensor *tensors;
    size_t ntensors;
    uint32_t *hash;       /* open-addressing table of tensor indices + 1, by name */
    size_t hash_cap;
};

static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 1099511628211ull; }
    return h;
}

static int json_uint(const jnode *nd, uint64_t *v) {
    if (nd->kind != J_NUMBER || !nd->is_int) return 0;
    if (nd->neg && nd->ival != 0) return 0;
    *v = nd->ival;
    return 1;
}

static lb_status validate_table(lb_file *f, uint32_t root, lb_error *err) {
    const jnode *N = f->nodes;
    const char *A = f->arena;
    uint32_t tl = jget(N, A, root, "tensors"), md = jget(N, A, root, "metadata"), c;
    uint64_t expect = 0, last_end = 0;
    size_t i;
    if (tl == J_NONE || N[tl].kind != J_ARRAY) return fail(err, LB_E_HEADER, "header has no 'tensors' list");
    if (N[tl].b > MAX_TENSORS)
        return fail(err, LB_E_LIMIT, "%u tensors exceeds the cap of %u", N[tl].b, MAX_TENSORS);
    if (md != J_NONE && N[md].kind != J_OBJECT) return fail(err, LB_E_HEADER, "'metadata' must be a JSON object");
    f->metadata = md;
    if (md != J_NONE && N[md].b) {
        uint32_t k = 0;
        f->meta_items = (uint32_t *)malloc(N[md].b * sizeof(uint32_t));
        if (!f->meta_items) return fail(err, LB_E_NOMEM, "out of memory for the metadata");
        for (c = N[md].a; c != J_NONE; c = N[c].next) f->meta_items[k++] = c;
    }
    f->ntensors = 0;
    if (N[tl].b) {
        f->tensors = (lb_tensor *)calloc(N[tl].b, sizeof(lb_tensor));
        for (f->hash_cap = 16; f->hash_cap < 2 * (size_t)N[tl].b; f->hash_cap *= 2) {}
        f->hash = (uint32_t *)calloc(f->hash_cap, sizeof(uint32_t));
        if (!f->tensors || !f->hash) return fail(err, LB_E_NOMEM, "out of memory for the tensor table");
    }
    for (c = N[tl].a, i = 0; c != J_NONE; c = N[c].next, i++) {
        lb_tensor *t = &f->tensors[i];
        uint32_t name, type, shape, off, nb, crc, d;
        const type_info *ti;
        uint64_t h, elements = 1, end;
        unsigned k;
        if (N[c].kind != J_OBJECT) return fail(err, LB_E_TENSOR, "tensor #%lu is not an object", (unsigned long)i);
        name = jget(N, A, c, "name");
        if (name == J_NONE || N[name].kind != J_STRING || N[name].b < 1 || N[name].b > MAX_NAME_BYTES)
            return fail(err, LB_E_TENSOR, "tensor #%lu has no valid name (a string of 1..%u bytes)", (unsigned long)i, MAX_NAME_BYTES);
        t->name = A + N[name].a;
        t->name_len = N[name].b;
        for (h = name_hash(t->name, t->name_len) & (f->hash_cap - 1);; h = (h + 1) & (f->hash_cap - 1)) {
            uint32_t o = f->hash[h];
            if (o == 0) { f->hash[h] = (uint32_t)i + 1; break; }
            if (f->tensors[o - 1].name_len == t->name_len && memcmp(f->tensors[o - 1].name, t->name, t->name_len) == 0)
                return fail(err, LB_E_DUPLICATE, "tensor '%.200s' appears twice", t->name);
        }
        type = jget(N, A, c, "type");
        shape = jget(N, A, c, "shape");
        off = jget(N, A, c, "offset");
        nb = jget(N, A, c, "nbytes");
        crc = jget(N, A, c, "crc32");
        if (type == J_NONE || N[type].kind != J_STRING)
            return fail(err, LB_E_TENSOR, "tensor '%.200s' has no type", t->name);
        t->type = A + N[type].a;
        t->type_len = N[type].b;
        if (shape == J_NONE || N[shape].kind != J_ARRAY || N[shape].b < 1 || N[shape].b > MAX_NDIM)
            return fail(err, LB_E_TENSOR, "tensor '%.200s' has an invalid shape (1..%u dims, each 1..%llu)", t->name, MAX_NDIM, (unsigned long long)MAX_DIM);
        t->ndim = N[shape].b;
        for (d = N[shape].a, k = 0; d != J_NONE; d = N[d].next, k++) {
            uint64_t v;
            if (!json_uint(&N[d], &v) || v < 1 || v > MAX_DIM)
                return fail(err, LB_E_TENSOR, "tensor '%.200s' has an invalid shape (1..%u dims, each 1..%llu)", t->name, MAX_NDIM, (unsigned long long)MAX_DIM);
            t->shape[k] = v;
        }
        for (k = 0; k < t->ndim; k++)   /* each factor < 2^31 and the running product <= 2^48: no overflow */
            if (!checked_mul(elements, t->shape[k], &elements) || elements > MAX_ELEMENTS)
                return fail(err, LB_E_LIMIT, "tensor '%.200s' has more than %llu elements", t->name, (unsigned long long)MAX_ELEMENTS);
        t->elements = elements;
        t->cols = t->shape[t->ndim - 1];
        t->rows = elements / t->cols;
        if (off == J_NONE || nb == J_NONE || !json_uint(&N[off], &t->offset) || !json_uint(&N[nb], &t->nbytes))
            return fail(err, LB_E_TENSOR, "tensor '%.200s' has an invalid offset or nbytes", t->name);
        if (crc == J_NONE || N[crc].kind != J_STRING || N[crc].b != 8)
            return fail(err, LB_E_TENSOR, "tensor '%.200s' has an invalid crc32 (8 lowercase hex digits expected)", t->name);
        t->crc32 = 0;
        for (k = 0; k < 8; k++) {
            char ch = A[N[crc].a + k];
            int v = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
            if (v < 0) return fail(err, LB_E_TENSOR, "tensor '%.200s' has an invalid crc32 (8 lowercase hex digits expected)", t->name);
            t->crc32 = (t->crc32 << 4) | (uint32_t)v;
        }
        ti = find_type(t->type, t->type_len);
        t->known = ti != NULL;
        if (ti) {
            uint64_t need = 0, row_bytes = 0;
            if (t->cols % ti->block_size && !ti->tail.sub)
                return fail(err, LB_E_LAYOUT, "tensor '%.200s': row length %llu is not a multiple of %s's block size %u",
                            t->name, (unsigned long long)t->cols, ti->name, ti->block_size);
            /* a self-sized type's size follows from its own header, checked after the table (validate_self_sized) */
            if (!ti->base && (!row_bytes_of(ti, t->cols, &row_bytes) || !checked_mul(row_bytes, t->rows, &need) ||
                              !checked_add(need, prefix_bytes_of(ti, t->rows), &need) || need != t->nbytes))
                return fail(err, LB_E_LAYOUT, "tensor '%.200s': %llu bytes, but %s needs %llu", t->name,
                            (unsigned long long)t->nbytes, ti->name, (unsigned long long)need);
        }
        if (t->offset != expect)
            return fail(err, LB_E_TILING, "tensor '%.200s' at offset %llu %s (expected %llu)", t->name, (unsigned long long)t->offset,
                        t->offset < expect ? "overlaps the previous tensor" : "leaves a gap after the previous tensor",
                        (unsigned long long)expect);
        /* offset <= 2^62 and nbytes <= 2^62 (clamped), so the sum cannot overflow */
        if (!checked_add(t->offset, t->nbytes, &end) || end > f->data_len)
            return fail(err, LB_E_TILING, "tensor '%.200s' ends past the end of the data region (%llu bytes)", t->name,
                        (unsigned long long)f->data_len);
        t->data = f->base + f->data_offset + t->offset;
        last_end = end;
        if (!align64(end, &expect)) return fail(err, LB_E_TILING, "tensor '%.200s' offset overflow", t->name);
        f->ntensors = i + 1;
    }
    if (f->data_len != last_end)
        return fail(err, LB_E_TILING, "data region is %llu bytes but its tensors end at %llu",
                    (unsigned long long)f->data_len, (unsigned long long)last_end);
    return LB_OK;
}

/* Self-sized tensors (SPEC.md 5.2): once the table and tiling are valid, each one's own header, in table order. */
static lb_status validate_self_sized(lb_file *f, lb_error *err) {
    size_t i;
    for (i = 0; i < f->ntensors; i++) {
        const lb_tensor *t = &f->tensors[i];
        const type_info *ti = find_type(t->type, t->type_len);
        huff_tensor h;
        lb_status st;
        if (ti && ti->base && (st = huff_parse(t, ti, &h, err)) != LB_OK) return st;
    }
    return LB_OK;
}

static lb_status validate(lb_file *f, lb_error *err) {
    const uint8_t *b = f->base;
    uint64_t header_len, data_offset, data_len, i, want;
    size_t bad;
    jparser p;
    uint32_t root;
    lb_status st;
    if (f->size > MAX_FILE_BYTES)
        return fail(err, LB_E_LIMIT, "file of %llu bytes exceeds the cap of 2^50", (unsigned long long)f->size);
    if (f->size < PREFIX_SIZE)
        return fail(err, LB_E_TRUNCATED, "file is %llu bytes, shorter than the 48-byte lowbit prefix", (unsigned long long)f->size);
    if (memcmp(b, MAGIC, 8) != 0) return fail(err, LB_E_MAGIC, "not a lowbit file (bad magic)");
    if (rd32(b + 8) != 1) return fail(err, LB_E_VERSION, "format version %u is not supported (this reader reads version 1)", rd32(b + 8));
    if (rd32(b + 12) != 0 || rd32(b + 44) != 0)
        return fail(err, LB_E_RESERVED, "reserved prefix fields are not zero (flags %u, reserved %u)", rd32(b + 12), rd32(b + 44));
    header_len = rd64(b + 16);
    data_offset = rd64(b + 24);
    data_len = rd64(b + 32);
    if (header_len == 0 || header_len > MAX_HEADER_BYTES)
        return fail(err, LB_E_HEADER_LEN, "header length %llu is outside 1..%llu", (unsigned long long)header_len, MAX_HEADER_BYTES);
    align64(PREFIX_SIZE + header_len, &want);   /* header_len <= 64 MiB: cannot overflow */
    if (data_offset != want)
        return fail(err, LB_E_DATA_OFFSET, "data offset %llu is not align64(48 + header_len) = %llu",
                    (unsigned long long)data_offset, (unsigned long long)want);
    if (f->size < data_offset)
        return fail(err, LB_E_TRUNCATED, "file is truncated: %llu bytes, but data starts at %llu",
                    (unsigned long long)f->size, (unsigned long long)data_offset);
    if (lb_crc32(b + PREFIX_SIZE, (size_t)header_len) != rd32(b + 40))
        return fail(err, LB_E_HEADER_CRC, "header checksum mismatch (the file is corrupt)");
    for (i = PREFIX_SIZE + header_len; i < data_offset; i++)
        if (b[i]) return fail(err, LB_E_PADDING, "padding between header and data is not zero");
    if ((bad = utf8_invalid_at(b + PREFIX_SIZE, (size_t)header_len)) != (size_t)-1)
        return fail(err, LB_E_JSON, "header is not valid UTF-8 (byte %lu)", (unsigned long)bad);
    memset(&p, 0, sizeof p);
    p.s = b + PREFIX_SIZE;
    p.n = (size_t)header_len;
    p.err = err;
    p.arena = (char *)malloc((size_t)header_len + 1);
    if (!p.arena) return fail(err, LB_E_NOMEM, "out of memory for the header");
    f->arena = p.arena;
    f->header = (const char *)p.s;
    if (p.n >= 3 && p.s[0] == 0xEF && p.s[1] == 0xBB && p.s[2] == 0xBF) {
        st = jfail(&p, "byte-order mark");
    } else {
        st = jvalue(&p, 1, &root);
        if (st == LB_OK) {
            jskip_ws(&p);
            if (p.pos != p.n) st = jfail(&p, "trailing data");
        }
    }
    f->nodes = p.nodes;
    if (st != LB_OK) return st;
    if (f->nodes[root].kind != J_OBJECT) return fail(err, LB_E_HEADER, "header must be a JSON object");
    if (f->size - data_offset != data_len)
        return fail(err, LB_E_FILE_SIZE, "file is %llu bytes but its header describes data_offset %llu + data_len %llu (truncated or padded)",
                    (unsigned long long)f->size, (unsigned long long)data_offset, (unsigned long long)data_len);
    f->data_offset = data_offset;
    f->data_len = data_len;
    if ((st = validate_table(f, root, err)) != LB_OK) return st;
    return validate_self_sized(f, err);
}

lb_status lb_open_memory(const void *data, size_t size, lb_file **out, lb_error *err) {
    lb_file *f = (lb_file *)calloc(1, sizeof(lb_file));
    lb_status st;
    *out = NULL;
    if (!f) return fail(err, LB_E_NOMEM, "out of memory");
    f->base = (const uint8_t *)data;
    f->size = size;
    f->metadata = J_NONE;
    if ((st = validate(f, err)) != LB_OK) { lb_close(f); return st; }
    *out = f;
    if (err) { err->code = LB_OK; err->message[0] = 0; }
    return LB_OK;
}

lb_status lb_open(const char *path, lb_file **out, lb_error *err) {
    lb_file *f = NULL;
    void *buf = NULL;
    size_t size = 0;
    lb_status st;
    int mapped = 0;
    *out = NULL;
#ifdef LB_HAVE_MMAP
    {
        struct stat sb;
        int fd = open(path, O_RDONLY);
        if (fd < 0) return fail(err, LB_E_IO, "%.200s: cannot open", path);
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { close(fd); return fail(err, LB_E_IO, "%.200s: not a regular file", path); }
        if ((uint64_t)sb.st_size > MAX_FILE_BYTES) { close(fd); return fail(err, LB_E_LIMIT, "%.200s: file exceeds the cap of 2^50 bytes", path); }
        if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) { close(fd); return fail(err, LB_E_LIMIT, "%.200s: file too large for this address space", path); }
        size = (size_t)sb.st_size;
        if (size > 0) {
            buf = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (buf == MAP_FAILED) { close(fd); return fail(err, LB_E_IO, "%.200s: cannot map", path); }
            mapped = 1;
        }
        close(fd);
    }
#else
    {
        FILE *fp = fopen(path, "rb");
        long n;
        if (!fp) return fail(err, LB_E_IO, "%.200s: cannot open", path);
        if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
            fclose(fp);
            return fail(err, LB_E_IO, "%.200s: cannot read", path);
        }
        size = (size_t)n;
        if (size > 0) {
            buf = malloc(size);
            if (!buf) { fclose(fp); return fail(err, LB_E_NOMEM, "%.200s: out of memory", path); }
            if (fread(buf, 1, size, fp) != size) { free(buf); fclose(fp); return fail(err, LB_E_IO, "%.200s: cannot read", path); }
        }
        fclose(fp);
    }
#endif
    st = lb_open_memory(buf ? buf : (const void *)"", size, &f, err);
    if (st != LB_OK) {
#ifdef LB_HAVE_MMAP
        if (mapped) munmap(buf, size);
#else
        free(buf);
#endif
        return st;
    }
    f->map = buf;
    f->map_len = size;
    f->mapped = mapped;
    *out = f;
    return LB_OK;
}

void lb_close(lb_file *f) {
    if (!f) return;
    free(f->nodes);
    free(f->arena);
    free(f->tensors);
    free(f->hash);
    free(f->meta_items);
    if (f->map) {
#ifdef LB_HAVE_MMAP
        if (f->mapped) munmap(f->map, f->map_len);
#else
        free(f->map);
#endif
    }
    free(f);
}

size_t lb_tensor_count(const lb_file *f) { return f->ntensors; }

const lb_tensor *lb_tensor_at(const lb_file *f, size_t i) { return i < f->ntensors ? &f->tensors[i] : NULL; }

const lb_tensor *lb_find_tensor(const lb_file *f, const char *name) {
    size_t len = strlen(name);
    uint64_t h;
    if (!f->hash_cap) return NULL;
    for (h = name_hash(name, len) & (f->hash_cap - 1);; h = (h + 1) & (f->hash_cap - 1)) {
        uint32_t o = f->hash[h];
        if (o == 0) return NULL;
        if (f->tensors[o - 1].name_len == len && memcmp(f->tensors[o - 1].name, name, len) == 0) return &f->tensors[o - 1];
    }
}

const char *lb_metadata_json(const lb_file *f, size_t *len) {
    if (f->metadata == J_NONE) { *len = 2; return "{}"; }
    *len = f->nodes[f->metadata].srclen;
    return f->header + f->nodes[f->metadata].src;
}

size_t lb_metadata_count(const lb_file *f) { return f->metadata == J_NONE ? 0 : f->nodes[f->metadata].b; }

lb_status lb_metadata_entry(const lb_file *f, size_t i, const char **key, size_t *key_len, const char **json, size_t *json_len) {
    uint32_t c;
    if (f->metadata == J_NONE || i >= f->nodes[f->metadata].b) return LB_E_ARG;
    c = f->meta_items[i];
    *key = f->arena + f->nodes[c].key;
    *key_len = f->nodes[c].keylen;
    *json = f->header + f->nodes[c].src;
    *json_len = f->nodes[c].srclen;
    return LB_OK;
}

/* Entropy-coded tensor: rebuild each row's base bytes, then dequantize them as the base type does. */
static lb_status dequantize_huff(const lb_tensor *t, const type_info *ti, float *out, lb_error *err) {
    huff_tensor h;
    uint16_t table[1u << HUFF_MAX_LEN];
    float P[256 * 4];
    uint8_t *row;
    uint64_t r;
    lb_status st = huff_parse(t, ti, &h, err);   /* validated at open; checked again as it is cheap */
    if (st != LB_OK) return st;
    /* row_bytes < 5 bytes per weight of a row of `cols` weights the caller holds in float32 */
    row = (uint8_t *)malloc(h.row_bytes ? (size_t)h.row_bytes : 1);
    if (!row) return fail(err, LB_E_NOMEM, "out of memory for a row of tensor '%.200s'", t->name);
    huff_table(h.lengths, table);
    if (h.base->vq_dim) vq_codebook(h.base, h.pre, P);
    for (r = 0; r < h.rows; r++) {
        huff_row(&h, table, r, row);
        if (h.base->vq_dim) {
            uint64_t scales_at = h.prefix - 2 * h.rows;
            vq_row(h.base, P, f16_at(h.pre + scales_at + 2 * r), row, out + r * t->cols, t->cols);
        } else {
            h.base->dequant_row(row, out + r * t->cols, t->cols);
        }
    }
    free(row);
    if (err) { err->code = LB_OK; err->message[0] = 0; }
    return LB_OK;
}

lb_status lb_dequantize(const lb_file *f, const lb_tensor *t, float *out, uint64_t n, lb_error *err) {
    const type_info *ti;
    uint64_t r, row_bytes;
    (void)f;
    if (!t) return fail(err, LB_E_ARG, "no such tensor");
    ti = find_type(t->type, t->type_len);
    if (!ti) return fail(err, LB_E_UNKNOWN_TYPE, "tensor '%.200s' has type '%.64s', which this reader cannot dequantize", t->name, t->type);
    if (n != t->elements) return fail(err, LB_E_ARG, "output holds %llu values, tensor '%.200s' has %llu",
                                      (unsigned long long)n, t->name, (unsigned long long)t->elements);
    if (ti->base) return dequantize_huff(t, ti, out, err);
    if (!row_bytes_of(ti, t->cols, &row_bytes))   /* cannot fail: validated at open (rows * row_bytes == nbytes) */
        return fail(err, LB_E_LAYOUT, "tensor '%.200s' does not fit its type's layout", t->name);
    if (ti->vq_dim) {   /* codebook type: prefix = [codebook] row scales, then the rows */
        uint64_t rows_at = prefix_bytes_of(ti, t->rows), scales_at = rows_at - 2 * t->rows;
        float P[256 * 4];
        vq_codebook(ti, t->data, P);
        for (r = 0; r < t->rows; r++)
            vq_row(ti, P, f16_at(t->data + scales_at + 2 * r), t->data + rows_at + r * row_bytes, out + r * t->cols, t->cols);
    } else {
        for (r = 0; r < t->rows; r++) ti->dequant_row(t->data + r * row_bytes, out + r * t->cols, t->cols);
    }
    if (err) { err->code = LB_OK; err->message[0] = 0; }
    return LB_OK;
}

lb_status lb_check_crc(const lb_file *f, const lb_tensor *t, lb_error *err) {
    uint32_t c;
    (void)f;
    if (!t) return fail(err, LB_E_ARG, "no such tensor");
    c = lb_crc32(t->data, (size_t)t->nbytes);
    if (c != t->crc32) return fail(err, LB_E_TENSOR_CRC, "tensor '%.200s': CRC-32 %08x, the table says %08x", t->name, c, t->crc32);
    return LB_OK;
}
