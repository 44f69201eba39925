"""Loader of the native CPU kernels: picks the best feature level the CPU has (AVX-512 VNNI, AVX2,
scalar), from the modules built at install time or, failing that, built on first use into a
per-user cache (~/.cache/lowbit/native/<source hash>/). LOWBIT_NATIVE_LEVEL forces a level.
(Whether a file runs natively is lowbit.backend's choice.)"""
import fcntl
import importlib
import importlib.util
import os

from . import build as _build

ORDER = ["avx512vnni", "avx2", "scalar"]

_libs = {}
_errors = {}


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lowbit", "native", _build.source_hash())


def _import_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_level(level: str, bench: bool = False):
    """The cffi module of one level: the installed one if built from these sources, else the cached
    build (compiled now if missing, under a lock so concurrent processes build it once). bench: the
    tools' build of it (lowbit_bench.h's entry points added), only ever cached, never installed."""
    want = _build.source_hash()
    name = _build.module_name(level, bench)
    if not bench:
        try:
            mod = importlib.import_module(f"lowbit.native.{name}")
            if mod.ffi.string(mod.lib.lb_source_hash()).decode() == want:
                return mod
        except ImportError:
            pass
    d = _cache_dir()
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = [f for f in os.listdir(d) if f.startswith(f"{name}.") and f.endswith(".so")]
        path = os.path.join(d, found[0]) if found else _build.build(level, d, bench)
    return _import_file(name, path)


def library(level: str = None):
    """(ffi, lib) of the best level this CPU runs (or `level`); None when nothing can be built."""
    level = level or os.environ.get("LOWBIT_NATIVE_LEVEL") or None
    key = level or "best"
    if key in _libs:
        return _libs[key]
    result = None
    try:
        scalar = _load_level("scalar")
        cpu = scalar.lib.lb_cpu_level()
        for name in ([level] if level else ORDER):
            if name not in _build.LEVELS:
                raise ValueError(f"unknown native level {name!r} (known: {', '.join(ORDER)})")
            if _build.LEVELS[name][1] > cpu:
                if level:
                    raise RuntimeError(f"this CPU cannot run the {name} kernels")
                continue
            mod = scalar if name == "scalar" else _load_level(name)
            result = (mod.ffi, mod.lib)
            break
    except (OSError, ImportError, RuntimeError) as e:    # no compiler, read-only cache, ...
        _errors[key] = str(e)
        if level:
            raise
    if result is not None and result[1].lb_threads() == 1:
        result[1].lb_init(default_threads())
    _libs[key] = result
    return result


def load_error(level: str = None) -> str:
    """Why library(level) gave None (the build or load error), or None when it has not failed."""
    return _errors.get(level or "best")


def available_levels() -> list:
    """Levels this CPU can run, best first."""
    lib = library("scalar")
    cpu = lib[1].lb_cpu_level() if lib else -1
    return [name for name in ORDER if _build.LEVELS[name][1] <= cpu]


def default_threads() -> int:
    env = os.environ.get("LOWBIT_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(n: int) -> int:
    lib = library()
    return lib[1].lb_init(int(n)) if lib else 1


def bench_library(level: str = None):
    """(ffi, lib) of the bench build (tools/ only: the kernels plus lowbit_bench.h's entry points) of
    `level`, by default the level library() runs; built on first use into the cache. A separate
    module with its own (one-thread) pool: objects made with library()'s lib do not cross over to it
    (HuffDecoder(bound, lib=bench_library()) makes a decoder for it)."""
    if level is None:
        ffi, lib = library()
        level = ffi.string(lib.lb_level_name()).decode()
    key = ("bench", level)
    if key not in _libs:
        mod = _load_level(level, bench=True)
        _libs[key] = (mod.ffi, mod.lib)
    return _libs[key]
