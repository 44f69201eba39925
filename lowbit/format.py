"""The lowbit container: read (validate everything, then memory-map) and write (atomically).

Layout (format_spec/SPEC.md is normative):
    0   8  magic  b"\\x89LOWBIT\\n"
    8   4  u32    major version (1)
    12  4  u32    flags (0)
    16  8  u64    header_len: bytes of the JSON header
    24  8  u64    data_offset: start of the tensor data region (multiple of 64)
    32  8  u64    data_len: bytes of the data region; data_offset + data_len == file size
    40  4  u32    CRC-32 of the JSON header bytes
    44  4  u32    reserved (0)
    48  header_len bytes of UTF-8 JSON, zero bytes up to data_offset, then the data region.
"""
import json
import math
import mmap
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import quants
from .atomic import atomic_output
from .errors import FormatError

MAGIC = b"\x89LOWBIT\n"
VERSION = 1
PREFIX = struct.Struct("<8sIIQQQII")
PREFIX_SIZE = PREFIX.size  # 48
ALIGN = 64

# Caps: every count and length is bounded before anything is allocated from it.
MAX_HEADER_BYTES = 64 << 20
MAX_TENSORS = 100_000
MAX_NAME_BYTES = 512
MAX_NDIM = 4
MAX_DIM = (1 << 31) - 1
MAX_ELEMENTS = 1 << 48
MAX_FILE_BYTES = 1 << 50
MAX_JSON_DEPTH = 32


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    shape: tuple
    offset: int          # relative to the data region
    nbytes: int
    crc32: str           # 8 lowercase hex digits

    @property
    def rows(self) -> int:
        r = 1
        for s in self.shape[:-1]:
            r *= s
        return r

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "shape": list(self.shape),
                "offset": self.offset, "nbytes": self.nbytes, "crc32": self.crc32}


# ----------------------------------------------------------------------------- reading

def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _finite_number(text):
    """JSON numbers MUST be finite as binary64 (SPEC 3): "1e400" is as invalid as "Infinity"."""
    if not math.isfinite(float(text)):
        raise ValueError(f"number {text[:40]} overflows a binary64")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _check_tree(obj, limit):
    """Nesting depth (the top object is level 1, every value inside a container one more) and
    strings: a \\u escape of a lone surrogate decodes to a str that is not Unicode text."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return f"header is nested more than {limit} levels deep"
        if isinstance(o, dict):
            for k in o:
                if not _valid_text(k):
                    return "header has a string with a lone surrogate escape"
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
        elif isinstance(o, str) and not _valid_text(o):
            return "header has a string with a lone surrogate escape"
    return None


def _valid_text(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_header_bytes(path, buf: bytes):
    """Parse and validate the fixed prefix and the JSON header from the first bytes of a file.
    Returns (header dict, data_offset, data_len). `buf` must hold at least the header."""
    if len(buf) < PREFIX_SIZE:
        raise FormatError(path, f"file is {len(buf)} bytes, shorter than the {PREFIX_SIZE}-byte lowbit prefix (truncated or not a lowbit file)")
    magic, version, flags, header_len, data_offset, data_len, header_crc, reserved = PREFIX.unpack_from(buf)
    if magic != MAGIC:
        raise FormatError(path, f"not a lowbit file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise FormatError(path, f"format version {version} is not supported by this reader (it reads version {VERSION}); upgrade lowbit")
    if flags != 0 or reserved != 0:
        raise FormatError(path, f"reserved prefix fields are not zero (flags {flags}, reserved {reserved})")
    if header_len == 0 or header_len > MAX_HEADER_BYTES:
        raise FormatError(path, f"header length {header_len} is outside 1..{MAX_HEADER_BYTES}")
    if data_offset != align(PREFIX_SIZE + header_len) :
        raise FormatError(path, f"data offset {data_offset} is not the header end {PREFIX_SIZE + header_len} aligned to {ALIGN}")
    if len(buf) < data_offset:
        raise FormatError(path, f"file is truncated: {len(buf)} bytes, but the header says data starts at {data_offset}")
    raw = bytes(buf[PREFIX_SIZE:PREFIX_SIZE + header_len])
    if zlib.crc32(raw) != header_crc:
        raise FormatError(path, "header checksum mismatch (the file is corrupt)")
    if any(buf[PREFIX_SIZE + header_len:data_offset]):
        raise FormatError(path, "padding between header and data is not zero")
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates,
                            parse_int=_finite_number, parse_float=_finite_number)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(path, f"header is not valid UTF-8 JSON: {str(e)[:200]}") from None
    problem = _check_tree(header, MAX_JSON_DEPTH)
    if problem:
        raise FormatError(path, f"header is not valid JSON: {problem}")
    if not isinstance(header, dict):
        raise FormatError(path, "header must be a JSON object")
    return header, data_offset, data_len


def validate_tensor_table(path, header, data_len) -> dict:
    """Check the tensor table against the spec: names, types, shapes, and that tensors tile the
    data region in order, each at the next 64-byte boundary, with checked arithmetic."""
    table = header.get("tensors")
    if not isinstance(table, list):
        raise FormatError(path, "header has no 'tensors' list")
    if len(table) > MAX_TENSORS:
        raise FormatError(path, f"{len(table)} tensors exceeds the cap of {MAX_TENSORS}")
    if not isinstance(header.get("metadata", {}), dict):
        raise FormatError(path, "'metadata' must be a JSON object")
    tensors = {}
    expect = 0
    for i, t in enumerate(table):
        where = f"tensor #{i}"
        if not isinstance(t, dict):
            raise FormatError(path, f"{where} is not an object")
        name = t.get("name")
        if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise FormatError(path, f"{where} has no valid name (a string of 1..{MAX_NAME_BYTES} bytes)")
        where = f"tensor {name!r}"
        if name in tensors:
            raise FormatError(path, f"{where} appears twice")
        typ, shape, offset, nbytes, crc = (t.get(k) for k in ("type", "shape", "offset", "nbytes", "crc32"))
        if not isinstance(typ, str):
            raise FormatError(path, f"{where} has no type")
        if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_NDIM or not all(_is_int(s) and 1 <= s <= MAX_DIM for s in shape):
            raise FormatError(path, f"{where} has an invalid shape {str(shape)[:80]} (1..{MAX_NDIM} dims, each 1..{MAX_DIM})")
        elements = 1
        for s in shape:
            elements *= s
        if elements > MAX_ELEMENTS:
            raise FormatError(path, f"{where} has {elements} elements, over the cap {MAX_ELEMENTS}")
        if not (_is_int(offset) and _is_int(nbytes)) or offset < 0 or nbytes < 0:
            raise FormatError(path, f"{where} has an invalid offset or nbytes")
        if not isinstance(crc, str) or len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
            raise FormatError(path, f"{where} has an invalid crc32 (8 lowercase hex digits expected)")
        if typ in quants.TYPES:
            qt = quants.TYPES[typ]
            if not qt.fits(shape[-1]):
                raise FormatError(path, f"{where}: row length {shape[-1]} is not a multiple of {typ}'s block size {qt.block_size}")
            if not qt.self_sized and nbytes != qt.nbytes(shape):
                raise FormatError(path, f"{where}: {nbytes} bytes, but {typ} {shape} needs {qt.nbytes(shape)}")
        if offset != expect:
            what = "overlaps the previous tensor" if offset < expect else "leaves a gap after the previous tensor"
            raise FormatError(path, f"{where} at offset {offset} {what} (expected {expect})")
        end = offset + nbytes
        if end > data_len:
            raise FormatError(path, f"{where} ends at {end}, past the end of the data region ({data_len} bytes)")
        tensors[name] = TensorInfo(name, typ, tuple(shape), offset, nbytes, crc)
        expect = align(end)
    last_end = max((t.offset + t.nbytes for t in tensors.values()), default=0)
    if data_len != last_end:
        raise FormatError(path, f"data region is {data_len} bytes but its tensors end at {last_end}")
    return tensors


class LowbitFile:
    """An open, validated, memory-mapped lowbit file. Tensor data are zero-copy views."""

    def __init__(self, path):
        self.path = str(path)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise FormatError(self.path, f"cannot open: {e.strerror}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise FormatError(self.path, f"file of {size} bytes exceeds the cap")
            head = f.read(PREFIX_SIZE)
            if len(head) == PREFIX_SIZE and head[:8] == MAGIC:
                hl = PREFIX.unpack_from(head)[3]
                if 0 < hl <= MAX_HEADER_BYTES and PREFIX_SIZE + hl <= size:
                    head += f.read(align(PREFIX_SIZE + hl) - PREFIX_SIZE)
            self.header, self.data_offset, data_len = parse_header_bytes(self.path, head)
            if self.data_offset + data_len != size:
                raise FormatError(self.path, f"file is {size} bytes but its header describes {self.data_offset + data_len} (truncated or padded)")
            self.tensors = validate_tensor_table(self.path, self.header, data_len)
            self.metadata = self.header.get("metadata", {})
            self.size = size
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        for t in self.tensors.values():   # self-sized types: validate their own headers (SPEC.md 5.2)
            qt = quants.TYPES.get(t.type)
            if qt is not None and qt.self_sized:
                start = self.data_offset + t.offset
                try:
                    qt.check(self._buf[start:start + t.nbytes], t.shape)
                except ValueError as e:
                    raise FormatError(self.path, f"tensor {t.name!r} ({t.type}): {e}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the map: (rows, row_bytes)."""
        t = self.info(name)
        start = self.data_offset + t.offset
        flat = self._buf[start:start + t.nbytes]
        if t.type not in quants.TYPES or quants.TYPES[t.type].whole_tensor:
            return flat
        return flat.reshape(t.rows, t.nbytes // t.rows)

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise FormatError(self.path, f"tensor {name!r} is missing") from None

    def qtype(self, name: str):
        t = self.info(name)
        if t.type not in quants.TYPES:
            raise FormatError(self.path, f"tensor {name!r} has type {t.type!r}, which this version of lowbit cannot read; upgrade lowbit")
        return quants.TYPES[t.type]

    def dequantize(self, name: str) -> np.ndarray:
        return self.qtype(name).dequantize(self.raw(name), self.info(name).shape)

    def blob(self, name: str) -> bytes:
        return bytes(self.raw(name))

    def verify(self) -> list:
        """Check every tensor's CRC-32; returns the names that do not match."""
        bad = []
        for name, t in self.tensors.items():
            start = self.data_offset + t.offset
            if f"{zlib.crc32(self._buf[start:start + t.nbytes]):08x}" != t.crc32:   # a view: no copy
                bad.append(name)
        return bad

    def close(self):
        self._buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:   # views still alive; the map closes when they go
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- writing

@dataclass
class TensorSpec:
    """A tensor to write: its bytes come from `produce()` only when the writer reaches it,
    so conversion holds one tensor in memory at a time."""
    name: str
    type: str
    shape: tuple
    produce: object   # () -> np.ndarray (uint8 or any dtype; its raw bytes are written)


def _expected_nbytes(spec: TensorSpec, early: dict) -> int:
    if spec.type in quants.TYPES:
        qt = quants.TYPES[spec.type]
        if qt.self_sized:   # size known only once encoded: produce now, hold the (compressed) bytes
            early[spec.name] = np.ascontiguousarray(spec.produce())
            return early[spec.name].nbytes
        return qt.nbytes(spec.shape)
    raise ValueError(f"{spec.name}: unknown type {spec.type}")


def write_lowbit(path, metadata: dict, specs: list, progress=None):
    """Write a lowbit file atomically: a temporary file beside the target, renamed over it
    only when complete. An interrupted write leaves nothing at `path`."""
    path = os.fspath(path)
    table, offset, early = [], 0, {}
    for s in specs:
        nbytes = _expected_nbytes(s, early)
        table.append(TensorInfo(s.name, s.type, tuple(int(d) for d in s.shape), offset, nbytes, "0" * 8))
        offset = align(offset + nbytes)
    data_len = (table[-1].offset + table[-1].nbytes) if table else 0

    def header_bytes(tbl):
        doc = {"metadata": metadata, "tensors": [t.to_json() for t in tbl]}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")

    hb = header_bytes(table)
    data_offset = align(PREFIX_SIZE + len(hb))
    with atomic_output(path) as f:
        f.seek(data_offset)
        crcs = []
        for spec, info in zip(specs, table):
            raw = early.pop(spec.name) if spec.name in early else np.ascontiguousarray(spec.produce())
            data = memoryview(raw).cast("B")
            if data.nbytes != info.nbytes:
                raise ValueError(f"{spec.name}: produced {data.nbytes} bytes, expected {info.nbytes}")
            f.seek(data_offset + info.offset)
            f.write(data)
            crcs.append(f"{zlib.crc32(data):08x}")
            if progress is not None:
                progress(spec)
        f.truncate(data_offset + data_len)
        table = [TensorInfo(t.name, t.type, t.shape, t.offset, t.nbytes, c) for t, c in zip(table, crcs)]
        hb2 = header_bytes(table)
        assert len(hb2) == len(hb), "CRC strings are fixed width"
        f.seek(0)
        f.write(PREFIX.pack(MAGIC, VERSION, 0, len(hb2), data_offset, data_len, zlib.crc32(hb2), 0))
        f.write(hb2)
        f.write(b"\0" * (data_offset - PREFIX_SIZE - len(hb2)))
