"""Numba's on-disk cache is invalidated only when a cached function's own file changes, not when a
function it inlines from another module does, so a stale entry can survive an upgrade and compute
with old code. lowbit therefore keys the cache directory by a hash of all its Python sources."""
import hashlib
import os


def configure():
    if os.environ.get("NUMBA_CACHE_DIR"):
        return   # the user chose a place
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for root, dirs, files in os.walk(here):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, here).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    base = os.environ.get("LOWBIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lowbit")
    import numba
    numba.config.CACHE_DIR = os.path.join(base, "numba", h.hexdigest()[:16])
