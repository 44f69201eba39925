"""On-disk cache of --target-bpw measurements: (bytes, error) per (weight, candidate type).

Measuring every candidate type of every weight is most of a --target-bpw conversion; the numbers
depend only on the weight, its imatrix data (importance vector, covariance, sensitivity), the
options and the quantizer code, not on the target. One JSON file per weight, named by a hash of
all of those, under $LOWBIT_MEASURE_CACHE or, by default, <$LOWBIT_CACHE or ~/.cache/lowbit>/
target_bpw (LOWBIT_MEASURE_CACHE=off turns it off). Only the numbers are stored, not the packed
bytes (those would be ~4 bytes per weight per checkpoint): a conversion that hits the cache
quantizes just the chosen type of each weight, with the same deterministic code. Errors are
JSON floats, which round-trip exactly, so a cached allocation is the measured one. Writes are
atomic; an unreadable or inconsistent entry is ignored with a warning and measured again."""
import hashlib
import json
import math
import os

import numpy as np

from lowbit.atomic import atomic_output

FORMAT = 1
_CODE = None


def cache_dir():
    """The cache folder, or None when turned off."""
    d = os.environ.get("LOWBIT_MEASURE_CACHE")
    if d is not None and d.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    if d:
        return d
    base = os.environ.get("LOWBIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lowbit")
    return os.path.join(base, "target_bpw")


def code_version() -> str:
    """Hash of the code the measurements come from: the quantizers, GPTQ, target_bpw.measure and
    this file, plus the numeric libraries (GPTQ's BLAS products) and lowbit's version."""
    global _CODE
    if _CODE is None:
        import numba
        import lowbit
        from lowbit import quants
        h = hashlib.sha256(f"{FORMAT}|{lowbit.__version__}|numpy {np.__version__}|numba {numba.__version__}".encode())
        here = os.path.dirname(os.path.abspath(__file__))
        qdir = os.path.dirname(os.path.abspath(quants.__file__))
        files = [os.path.join(here, f) for f in ("gptq.py", "measure_cache.py")]
        files += sorted(os.path.join(qdir, f) for f in os.listdir(qdir) if f.endswith(".py"))
        for path in files:
            h.update(os.path.basename(path).encode())
            with open(path, "rb") as f:
                h.update(f.read())
        # of target_bpw.py only what measures (the allocation and the candidate lists do not change a number)
        import inspect
        from . import target_bpw
        h.update(inspect.getsource(target_bpw.measure).encode())
        _CODE = h.hexdigest()
    return _CODE


def array_digest(a) -> str:
    """Hash of an array's dtype, shape and bytes ('none' for None)."""
    if a is None:
        return "none"
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def entry_key(name: str, w_digest: str, parts: dict) -> str:
    """Key of one weight's measurements: its name, bytes, imatrix data and options, the code."""
    blob = json.dumps({"name": name, "w": w_digest, "code": code_version(), **parts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _path(d, key):
    return os.path.join(d, key[:2], key + ".json")


def load(key: str, warn=None) -> dict:
    """{type: (bytes, error)} cached under `key` ({} when absent, off or invalid)."""
    d = cache_dir()
    if d is None:
        return {}
    path = _path(d, key)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        _warn(warn, f"ignoring the unreadable measurement cache entry {path}: {e}")
        return {}
    try:
        if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key
                and isinstance(data.get("types"), dict)):
            raise ValueError("not an entry of this key and format")
        out = {}
        for t, v in data["types"].items():
            b, e = v["bytes"], v["error"]
            if not (isinstance(t, str) and isinstance(b, int) and not isinstance(b, bool) and b > 0
                    and isinstance(e, float) and math.isfinite(e) and e >= 0):
                raise ValueError(f"bad numbers for type {t!r}")
            out[t] = (b, e)
        return out
    except (ValueError, KeyError, TypeError) as e:
        _warn(warn, f"ignoring the invalid measurement cache entry {path}: {e}")
        return {}


def save(key: str, name: str, measured: dict, warn=None):
    """Store {type: (bytes, error)} under `key` atomically; a failure to write only warns."""
    d = cache_dir()
    if d is None:
        return
    path = _path(d, key)
    data = {"format": FORMAT, "key": key, "name": name,
            "types": {t: {"bytes": int(b), "error": float(e)} for t, (b, e) in sorted(measured.items())}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path, prefix=".measure-") as f:
            f.write(json.dumps(data, indent=1).encode("utf-8"))
    except OSError as e:
        _warn(warn, f"could not write the measurement cache entry {path}: {e}")


def _warn(warn, msg):
    if warn is None:
        import sys
        print(f"warning: {msg}", file=sys.stderr)
    else:
        warn(f"warning: {msg}")
