"""The CUDA runtime, the same shape as lowbit/native/: build.py (nvcc, cached per CUDA version, GPU
architecture and source hash), loader.py (load the built library with cffi, checked calls),
weights.py (tensor -> GPU layout and lb_mat bindings), model.py (CudaTransformer, the KV cache);
the kernels in kernels/, one file per family. Importing this package builds nothing."""
from .build import CudaUnavailable  # noqa: F401


def available():
    """(True, device description) or (False, the reason the CUDA runtime cannot be used)."""
    try:
        from .loader import get_runtime
        rt = get_runtime()
        return True, rt.describe()
    except CudaUnavailable as e:
        return False, str(e)
