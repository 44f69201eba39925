"""lowbit.backend: the one place that picks the forward pass for a file, and says why."""
import os

import numpy as np
import pytest

import lowbit
from lowbit import backend, native
from lowbit import cuda as lbcuda
from lowbit.format import LowbitFile

from conftest import SHARED


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    from converters import convert
    path = str(tmp_path_factory.mktemp("backend") / "stories260K-f32.lowbit")
    convert(os.path.join(SHARED, "models", "stories260K"), path, "f32", progress=False, log=lambda m: None)
    return path


def test_q4_k_m_file_runs_native(converted, monkeypatch):
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    path = converted("pycode-30m", "q4_k_m")
    with LowbitFile(path) as f:
        choice = backend.select(f)
    assert choice.name == backend.CPU_NATIVE
    assert choice.reason.startswith("every weight type has a native kernel (")
    m = lowbit.load(path, n_ctx=64)
    assert m.backend == choice and m.device == "cpu" and m.transformer.native is not None


@pytest.mark.parametrize("value", ["numba", "python", "Numba"])
def test_lowbit_backend_numba_runs_the_reference(stories, monkeypatch, value):
    monkeypatch.setenv("LOWBIT_BACKEND", value)
    with LowbitFile(stories) as f:
        assert backend.select(f) == backend.Choice(backend.CPU_REFERENCE, f"LOWBIT_BACKEND={value}")
    assert not backend.native_kernels()
    m = lowbit.load(stories)
    assert m.backend.name == backend.CPU_REFERENCE and m.transformer.native is None


def test_other_lowbit_backend_values_keep_the_default(stories, monkeypatch):
    monkeypatch.setenv("LOWBIT_BACKEND", "c")
    with LowbitFile(stories) as f:
        assert backend.select(f).name == backend.CPU_NATIVE


def test_reference_only_is_an_explicit_request(stories, monkeypatch):
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    with backend.reference_only("lowbit bench --backend numba"):
        m = lowbit.load(stories)
        assert not backend.native_kernels()
    assert m.backend == backend.Choice(backend.CPU_REFERENCE, "lowbit bench --backend numba")
    assert m.transformer.native is None and backend.native_kernels()


def test_a_type_without_native_kernel_runs_the_reference(stories, monkeypatch):
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    monkeypatch.setattr(native, "supported", lambda type_name: type_name != "f32")
    m = lowbit.load(stories)
    assert m.backend == backend.Choice(backend.CPU_REFERENCE, "tensor token_embd.weight of type f32 has no native kernel")
    assert m.transformer.native is None


def test_no_compiler_runs_the_reference(stories, monkeypatch):
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    monkeypatch.setattr(native, "library", lambda level=None: None)
    monkeypatch.setattr(native, "load_error", lambda level=None: "gcc: not found (test)")
    with LowbitFile(stories) as f:
        assert backend.select(f) == backend.Choice(backend.CPU_REFERENCE,
                                                   "no native library (no C compiler?): gcc: not found (test)")


def test_cuda_without_a_gpu_says_why_and_runs_on_the_cpu(stories, monkeypatch, capsys):
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    monkeypatch.setattr(lbcuda, "available", lambda: (False, "no CUDA GPU found (test)"))
    with LowbitFile(stories) as f:
        assert backend.select(f, device="cuda").name == backend.CPU_NATIVE
        assert capsys.readouterr().err == "lowbit: CUDA is not usable (no CUDA GPU found (test)); running on the CPU\n"
        assert backend.select(f, device="auto").name == backend.CPU_NATIVE
        assert capsys.readouterr().err == ""
        with pytest.raises(ValueError, match=r"unknown device 'tpu' \(choose cpu, cuda or auto\)"):
            backend.select(f, device="tpu")
    m = lowbit.load(stories, device="cuda")
    assert m.device == "cpu" and m.backend.name == backend.CPU_NATIVE


def test_observer_sees_every_matmul_input_on_the_reference_path(stories, monkeypatch):
    """The statistics hook: every matmul's input in forward order; the C block forward stays
    attached and runs again once the hook is cleared."""
    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    m = lowbit.load(stories)
    t = m.transformer
    assert t.native is not None
    ids = m.tokenize("Once upon a time")
    want = m.logits(ids)
    seen = []
    t.observer = lambda name, x: seen.append((name, x.shape))
    got = m.logits(ids)
    t.observer = None
    per_layer = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    names = [f"blk.{i}.{w}.weight" for i in range(m.config.num_layers) for w in per_layer] + ["token_embd.weight"]
    assert [s[0] for s in seen] == names
    assert seen[0][1] == (len(ids), m.config.hidden_size)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)   # the reference forward vs the C block forward
    assert t.native is not None
