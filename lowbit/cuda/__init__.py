"""The CUDA runtime: kernels in lowbit_cuda.cu, built with nvcc on first use (cached per CUDA
version and GPU architecture) and loaded with cffi. Importing this package builds nothing."""
from .build import CudaUnavailable  # noqa: F401


def available():
    """(True, device description) or (False, the reason the CUDA runtime cannot be used)."""
    try:
        from .runtime import get_runtime
        rt = get_runtime()
        return True, rt.describe()
    except CudaUnavailable as e:
        return False, str(e)
