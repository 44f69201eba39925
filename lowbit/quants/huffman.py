"""Canonical Huffman coding of byte symbols, length-limited to MAX_LEN bits so that decoding is one
table look-up per symbol (format_spec/types/huffman.md is normative).

Canonical code: symbols sorted by (code length, symbol value) get consecutive codes; bits are
written most significant first, filling each byte from bit 7 down."""
import heapq

import numpy as np
from numba import njit, prange

MAX_LEN = 12
TABLE = 1 << MAX_LEN


def code_lengths(counts, max_len=MAX_LEN) -> np.ndarray:
    """Huffman code lengths (uint8[256]) for symbol counts; 0 for absent symbols. Length-limited by
    halving the counts until the longest code fits. One used symbol gets length 1 and so does the
    next unused symbol value (the code stays complete: every table entry decodes)."""
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(256, np.uint8)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        lengths[(used[0] + 1) % 256] = 1
        return lengths
    c = counts.copy()
    while True:
        heap = [(int(c[s]), int(s), (int(s),)) for s in used]
        heapq.heapify(heap)
        depth = {int(s): 0 for s in used}
        tiebreak = 256
        while len(heap) > 1:
            a, b = heapq.heappop(heap), heapq.heappop(heap)
            for s in a[2] + b[2]:
                depth[s] += 1
            heapq.heappush(heap, (a[0] + b[0], tiebreak, a[2] + b[2]))
            tiebreak += 1
        if max(depth.values()) <= max_len:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        c = np.where(c > 0, np.maximum(c >> 1, 1), 0)


def canonical_codes(lengths) -> np.ndarray:
    """uint32[256] codes of the canonical code for `lengths`."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(256, np.uint32)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def kraft_ok(lengths) -> bool:
    """The code is complete (Kraft sum exactly 1) with every length in 1..MAX_LEN, or empty."""
    lengths = np.asarray(lengths, np.int64)
    if (lengths > MAX_LEN).any():
        return False
    used = lengths[lengths > 0]
    if len(used) == 0:
        return True
    return int((1 << (MAX_LEN - used)).sum()) == TABLE


def decode_table(lengths) -> np.ndarray:
    """int32[TABLE]: entry (symbol | length << 8) for every MAX_LEN-bit window."""
    codes = canonical_codes(lengths)
    table = np.zeros(TABLE, np.int32)
    for s in np.flatnonzero(lengths):
        l = int(lengths[s])
        lo = int(codes[s]) << (MAX_LEN - l)
        table[lo:lo + (1 << (MAX_LEN - l))] = s | (l << 8)
    return table


@njit(cache=True)
def _row_bits(sym, lengths, out_bytes):
    for r in range(sym.shape[0]):
        n = 0
        for i in range(sym.shape[1]):
            n += lengths[sym[r, i]]
        out_bytes[r] = (n + 7) >> 3


@njit(parallel=True, cache=True)
def _encode(sym, lengths, codes, offsets, stream):
    for r in prange(sym.shape[0]):
        pos = offsets[r] * 8
        for i in range(sym.shape[1]):
            s = sym[r, i]
            l = np.int64(lengths[s])
            c = np.int64(codes[s])
            for k in range(l - 1, -1, -1):
                if (c >> k) & 1:
                    stream[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
                pos += 1


def encode_rows(sym: np.ndarray, lengths: np.ndarray):
    """sym uint8[rows, n] -> (offsets uint32[rows+1] in bytes, stream uint8[...]); each row is a chunk
    that starts on a byte boundary."""
    sym = np.ascontiguousarray(sym, np.uint8)
    rb = np.zeros(sym.shape[0], np.int64)
    _row_bits(sym, lengths.astype(np.int64), rb)
    offsets = np.zeros(sym.shape[0] + 1, np.int64)
    np.cumsum(rb, out=offsets[1:])
    if offsets[-1] >= 1 << 32:
        raise ValueError("entropy-coded stream exceeds 4 GiB; split the tensor")
    stream = np.zeros(int(offsets[-1]), np.uint8)
    _encode(sym, lengths.astype(np.int64), canonical_codes(lengths).astype(np.int64), offsets, stream)
    return offsets.astype(np.uint32), stream


@njit(inline="always", cache=True)
def decode_chunk(stream, start, end, table, n, out, pos):
    """Decode n symbols from stream[start:end] into out[pos[i]]. Bytes past `end` read as zero, so a
    damaged chunk yields wrong values but never reads outside the chunk."""
    buf = np.uint64(0)
    nbits = 0
    p = start
    for i in range(n):
        while nbits <= 56:
            if p < end:
                buf |= np.uint64(stream[p]) << np.uint64(56 - nbits)
            p += 1
            nbits += 8
        e = table[np.int64(buf >> np.uint64(64 - MAX_LEN))]
        l = e >> 8
        out[pos[i]] = np.uint8(e & 255)
        buf = buf << np.uint64(l)
        nbits -= l
