"""llama.cpp (llama-cpp-python) as the tests' and benchmarks' peer, never a runtime dependency.

On CPUs with AMX tiles (Intel Xeons with amx_int8) llama-cpp-python 0.3.36 built natively crashes
on quantized GGUF files in its AMX extra buffer type; llama() turns the extra buffer types off
there only, so elsewhere llama.cpp keeps its repacked (faster) weights in benchmarks."""
from contextlib import contextmanager


def has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


@contextmanager
def _no_extra_buffer_types():
    """Models loaded inside get use_extra_bufts = False (Llama() takes no argument for it: its model
    params start from llama_model_default_params(), which this wraps for the duration)."""
    import llama_cpp.llama_cpp as C
    default = C.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p
    C.llama_model_default_params = params
    try:
        yield
    finally:
        C.llama_model_default_params = default


def llama(model_path: str, **kwargs):
    """llama_cpp.Llama(model_path, **kwargs), safe on AMX machines."""
    from llama_cpp import Llama
    if not has_amx():
        return Llama(model_path=model_path, **kwargs)
    with _no_extra_buffer_types():
        return Llama(model_path=model_path, **kwargs)
