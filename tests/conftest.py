import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MODELS = ["stories260K", "pycode-30m", "pychat-30m"]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def model_dir(name):
    return os.path.join(SHARED, "models", name)


def reference(name):
    return np.load(os.path.join(SHARED, "reference", f"{name}.npz"), allow_pickle=False)


def pytest_configure(config):
    if not os.path.isdir(os.path.join(SHARED, "models")):
        raise pytest.UsageError(f"the shared test world is missing: expected {SHARED} beside the checkout")


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(model, type) -> path of a .lowbit file, converted once per test session."""
    from converters import convert
    cache = {}
    root = tmp_path_factory.mktemp("converted")

    def get(model, qtype):
        key = (model, qtype)
        if key not in cache:
            out = str(root / f"{model}-{qtype}.lowbit")
            convert(model_dir(model), out, qtype, progress=False, log=lambda m: None)
            cache[key] = out
        return cache[key]
    return get


def cli(*args, **kw):
    """Run the real `lowbit` program in a subprocess (this checkout's code)."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=kw.pop("timeout", 600), **kw)
