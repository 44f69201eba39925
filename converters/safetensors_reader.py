"""A small strict reader for safetensors shards (BF16 included, which numpy lacks), so that a
corrupt or truncated shard is reported naming the shard and the tensor."""
import json
import mmap
import os
import struct

import numpy as np

from lowbit.errors import ConvertError

DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "F64": ("<f8", 8)}
MAX_HEADER = 100 << 20


class SafetensorsFile:
    def __init__(self, path):
        self.path = str(path)
        name = os.path.basename(self.path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 8:
                    raise ConvertError(f"{name}: truncated safetensors file ({size} bytes)")
                (hlen,) = struct.unpack("<Q", f.read(8))
                if hlen > MAX_HEADER or 8 + hlen > size:
                    raise ConvertError(f"{name}: invalid safetensors header length {hlen} for a {size}-byte file (truncated or corrupt)")
                try:
                    header = json.loads(f.read(hlen).decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    raise ConvertError(f"{name}: safetensors header is not valid JSON ({e})") from None
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ConvertError(f"{name}: cannot read: {e.strerror}") from None
        if not isinstance(header, dict):
            raise ConvertError(f"{name}: safetensors header is not an object")
        self.metadata = header.pop("__metadata__", {}) or {}
        self.base = 8 + hlen
        self.entries = {}
        for tname, e in header.items():
            try:
                dtype, shape, (begin, end) = e["dtype"], list(e["shape"]), e["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ConvertError(f"{name}: tensor {tname!r} has a malformed header entry") from None
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*shape, begin, end]):
                raise ConvertError(f"{name}: tensor {tname!r} has a non-integer shape or data offset")
            if dtype not in DTYPES:
                raise ConvertError(f"{name}: tensor {tname!r} has dtype {dtype}, not supported (F32, F16, BF16, F64)")
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if any(s < 0 for s in shape) or not (0 <= begin <= end) or end - begin != n * DTYPES[dtype][1]:
                raise ConvertError(f"{name}: tensor {tname!r} has inconsistent offsets {begin}..{end} for {dtype} {shape}")
            if self.base + end > size:
                raise ConvertError(f"{name}: tensor {tname!r} ends at byte {self.base + end}, past the end of the {size}-byte file (truncated shard?)")
            self.entries[tname] = (dtype, tuple(shape), begin, end)

    def keys(self):
        return self.entries.keys()

    def shape(self, tname):
        return self.entries[tname][1]

    def dtype(self, tname):
        return self.entries[tname][0]

    def float32(self, tname) -> np.ndarray:
        dtype, shape, begin, end = self.entries[tname]
        raw = np.frombuffer(self._mm, dtype=DTYPES[dtype][0], count=(end - begin) // DTYPES[dtype][1], offset=self.base + begin)
        if dtype == "BF16":
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32)
        if not np.isfinite(out).all():
            raise ConvertError(f"{os.path.basename(self.path)}: tensor {tname!r} contains NaN or infinite values")
        return out.reshape(shape)
