"""ctypes binding of the C reference reader, for tests: builds lowbit_reader.c (and lowbit_dump)
with the system C compiler into a cache directory keyed by the sources' hash.

    from lowbit_ctypes import CReader, CReaderError
    with CReader.open("model.lowbit") as r:
        r.tensors(); r.dequantize("token_embd.weight"); r.metadata_json()
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["lowbit_reader.c", "lowbit_reader.h", "lowbit_dump.c"]
CFLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-pedantic", "-Werror"]


def compiler():
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (install gcc)")
    return cc


def build(out_dir=None):
    """Compile the shared library and lowbit_dump; returns (library path, dump path)."""
    h = hashlib.sha256()
    for s in SOURCES:
        with open(os.path.join(HERE, s), "rb") as f:
            h.update(f.read())
    out_dir = out_dir or os.path.join(tempfile.gettempdir(), f"lowbit-cref-{h.hexdigest()[:16]}")
    lib, dump = os.path.join(out_dir, "liblowbit_reader.so"), os.path.join(out_dir, "lowbit_dump")
    if not (os.path.exists(lib) and os.path.exists(dump)):
        os.makedirs(out_dir, exist_ok=True)
        cc, src = compiler(), os.path.join(HERE, "lowbit_reader.c")
        tmp_lib, tmp_dump = lib + f".{os.getpid()}", dump + f".{os.getpid()}"
        subprocess.run([cc, *CFLAGS, "-shared", "-fPIC", "-o", tmp_lib, src], check=True)
        subprocess.run([cc, *CFLAGS, "-o", tmp_dump, os.path.join(HERE, "lowbit_dump.c"), src], check=True)
        os.replace(tmp_lib, lib)
        os.replace(tmp_dump, dump)
    return lib, dump


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 256)]


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("name_len", ctypes.c_size_t), ("type", ctypes.c_char_p),
                ("type_len", ctypes.c_size_t), ("ndim", ctypes.c_uint32), ("shape", ctypes.c_uint64 * 4),
                ("rows", ctypes.c_uint64), ("cols", ctypes.c_uint64), ("elements", ctypes.c_uint64),
                ("offset", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("crc32", ctypes.c_uint32),
                ("known", ctypes.c_int), ("data", ctypes.c_void_p)]


_lib = None


def library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(build()[0])
        P, E = ctypes.c_void_p, ctypes.POINTER(_Error)
        lib.lb_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(P), E]
        lib.lb_open_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(P), E]
        lib.lb_close.argtypes = [P]
        lib.lb_tensor_count.argtypes = [P]
        lib.lb_tensor_count.restype = ctypes.c_size_t
        lib.lb_tensor_at.argtypes = [P, ctypes.c_size_t]
        lib.lb_tensor_at.restype = ctypes.POINTER(_Tensor)
        lib.lb_dequantize.argtypes = [P, ctypes.POINTER(_Tensor), ctypes.c_void_p, ctypes.c_uint64, E]
        lib.lb_check_crc.argtypes = [P, ctypes.POINTER(_Tensor), E]
        lib.lb_metadata_json.argtypes = [P, ctypes.POINTER(ctypes.c_size_t)]
        lib.lb_metadata_json.restype = ctypes.c_void_p
        lib.lb_error_name.argtypes = [ctypes.c_int]
        lib.lb_error_name.restype = ctypes.c_char_p
        _lib = lib
    return _lib


class CReaderError(Exception):
    def __init__(self, code, message):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


class CReader:
    def __init__(self, handle, keep=None):
        self._h, self._keep = handle, keep
        lib = library()
        self._tensors = {}
        for i in range(lib.lb_tensor_count(self._h)):
            t = lib.lb_tensor_at(self._h, i)
            self._tensors[ctypes.string_at(t.contents.name, t.contents.name_len).decode("utf-8")] = t

    @classmethod
    def _check(cls, rc, err):
        if rc != 0:
            raise CReaderError(library().lb_error_name(rc).decode(), err.message.decode("utf-8", "replace"))

    @classmethod
    def open(cls, path):
        h, err = ctypes.c_void_p(), _Error()
        cls._check(library().lb_open(os.fsencode(path), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h)

    @classmethod
    def from_bytes(cls, data: bytes):
        buf = ctypes.create_string_buffer(data, len(data)) if data else ctypes.create_string_buffer(1)
        h, err = ctypes.c_void_p(), _Error()
        cls._check(library().lb_open_memory(buf, len(data), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h, keep=buf)

    def tensors(self) -> list:
        out = []
        for name, t in self._tensors.items():
            c = t.contents
            out.append({"name": name, "type": ctypes.string_at(c.type, c.type_len).decode(),
                        "shape": [int(c.shape[i]) for i in range(c.ndim)], "offset": int(c.offset),
                        "nbytes": int(c.nbytes), "crc32": f"{c.crc32:08x}", "known": bool(c.known)})
        return out

    def dequantize(self, name) -> np.ndarray:
        t = self._tensors[name]
        err = _Error()
        if not t.contents.known:   # let the reader refuse before allocating what the shape claims
            self._check(library().lb_dequantize(self._h, t, None, 0, ctypes.byref(err)), err)
        out = np.empty(int(t.contents.elements), np.float32)
        self._check(library().lb_dequantize(self._h, t, out.ctypes.data, out.size, ctypes.byref(err)), err)
        return out.reshape([int(t.contents.shape[i]) for i in range(t.contents.ndim)])

    def check_crc(self, name):
        err = _Error()
        self._check(library().lb_check_crc(self._h, self._tensors[name], ctypes.byref(err)), err)

    def metadata_json(self) -> bytes:
        n = ctypes.c_size_t()
        p = library().lb_metadata_json(self._h, ctypes.byref(n))
        return ctypes.string_at(p, n.value)

    def close(self):
        if self._h:
            library().lb_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
