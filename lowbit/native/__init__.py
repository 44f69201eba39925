"""The native CPU backend: C kernels compiled with cffi, one module per CPU feature level.

    build.py    compile (setup.py at install time; the loader on first use)
    loader.py   find/load the built library: library(), set_threads(), levels
    weights.py  tensor -> C weight descriptor (lb_weight) bindings, single matmuls, row lookups
    model.py    NativeTransformer: the transformer forward over lb_layer_forward

The C sources are lowbit_native.h (the API) and lowbit_native.c, which includes the kernel
families of kernels/ as one compilation unit. LOWBIT_NATIVE_LEVEL forces a level;
whether the native backend runs a file is lowbit.backend's choice (LOWBIT_BACKEND=numba turns it off)."""
from .loader import ORDER, available_levels, default_threads, library, load_error, set_threads  # noqa: F401
from .weights import (C_TYPES, CODEBOOK_TYPES, SIDE_FILL, HuffDecoder, HuffWeight, NativeMatmul,  # noqa: F401
                      bind_codebook, bound_weight, dequantize, fill_codebook, fill_weight, get_rows, huff_base, register,
                      supported)

# every type with a C kernel gets its kernels["c"] entry when the native package is imported
from .. import quants as _quants  # noqa: E402
register(_quants.TYPES)
