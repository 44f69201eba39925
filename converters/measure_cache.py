"""--target-bpw measurements, (bytes, error) per (weight, candidate type), and their on-disk cache.

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

from lowbit import quants
from lowbit.atomic import atomic_output
from lowbit.errors import ConvertError
from lowbit.imatrix import LOOKUP

from .gptq import gptq_quantize, inverse_cholesky, output_error

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
    """Hash of the code the measurements come from: the quantizers, GPTQ and this file (measure),
    plus the numeric libraries (GPTQ's BLAS products) and lowbit's version."""
    global _CODE
    if _CODE is None:
        import numba
        import lowbit
        h = hashlib.sha256(f"{FORMAT}|{lowbit.__version__}|numpy {np.__version__}|numba {numba.__version__}".encode())
        here = os.path.dirname(os.path.abspath(__file__))
        qdir = os.path.dirname(os.path.abspath(quants.__file__))
        files = [os.path.join(here, f) for f in ("gptq.py", "measure_cache.py")]
        files += sorted(os.path.join(qdir, f) for f in os.listdir(qdir) if f.endswith(".py"))
        for path in files:
            h.update(os.path.basename(path).encode())
            with open(path, "rb") as f:
                h.update(f.read())
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


def measure(names, shapes, tensor, vectors: dict, covs: dict, tied: bool, use_gptq: bool = True,
            candidates=None, fixed: dict = None, sensitivity: dict = None, log=None, warn=None,
            cache: bool = True) -> dict:
    """{name: {type: (bytes, error, packed uint8[rows, row_bytes] or None)}} for every 2-D weight
    in `names`; `tensor(name)` gives float32 weights; `fixed` {name: type} restricts a tensor to
    one type (overrides); `sensitivity` {weight name or LOOKUP: KL divergence per unit of output
    error} (from `lowbit imatrix --hessian`) turns each error into an estimated KL divergence.
    With `cache`, measurements found in the on-disk cache are reused (their packed bytes are then
    None: the caller quantizes the type it chooses) and new ones are stored; `warn` receives
    the cache's warnings."""
    candidates = CANDIDATES if candidates is None else candidates
    fixed = fixed or {}
    sens = sensitivity or {}
    out = {}
    U_for = {}
    digests = {}           # id(covariance) -> its hash (q/k/v share one matrix)
    for k, name in enumerate(names):
        shape = shapes[name]
        if len(shape) != 2:
            continue
        w = np.asarray(tensor(name), np.float32)
        rows, cols = shape
        H = covs.get(name)
        im = vectors.get(name)
        gptq_here = use_gptq and H is not None
        types = [fixed[name]] if name in fixed else [t for t in candidates if quants.get(t).fits(cols)]
        if not types:
            raise ConvertError(f"{name}: row length {cols} fits none of the candidate types ({', '.join(candidates)}); "
                               "add one that does, e.g. +q4_k (k-quants store any row length)")
        key, cached = None, {}
        if cache:
            if H is not None and id(H) not in digests:
                digests.clear()
                digests[id(H)] = array_digest(H)
            parts = {"imatrix": array_digest(im),
                     "cov": digests[id(H)] if H is not None else "none", "gptq": gptq_here,
                     "sensitivity": sens.get(name, 1.0)}
            if name == "token_embd.weight":
                parts.update(tied=bool(tied), lookup_sensitivity=sens.get(LOOKUP, 1.0))
            key = entry_key(name, array_digest(w), parts)
            cached = load(key, warn)
        U = None
        res = {}
        for t in types:
            if t in cached:
                res[t] = (cached[t][0], cached[t][1], None)
                continue
            qt = quants.get(t)
            if gptq_here and qt.gptq is not None:
                if U is None:
                    U = U_for.get(id(H))
                    if U is None:
                        U_for.clear()          # groups are consecutive: keep only the current factor
                        U = U_for[id(H)] = inverse_cholesky(H)
                raw = gptq_quantize(t, w, H, im, U=U)
            else:
                raw = qt.quantize(w, im)
            if name == "token_embd.weight":
                e = output_error(t, w, raw) / rows * sens.get(LOOKUP, 1.0)     # the lookup: one row per token
                if tied:
                    e += output_error(t, w, raw, H, im) * sens.get(name, 1.0)
            else:
                e = output_error(t, w, raw, H, im) * sens.get(name, 1.0)
            res[t] = (int(raw.nbytes), float(e), raw)
        new = [t for t in types if t not in cached]
        if cache and new:
            save(key, name, {**cached, **{t: res[t][:2] for t in new}}, warn)
        out[name] = res
        if log:
            log(f"target-bpw: measured {name} ({k + 1}/{len(names)}): " +
                ", ".join(f"{t} {v[1]:.4g}{' (cached)' if t in cached else ''}" for t, v in res.items()))
    return out
