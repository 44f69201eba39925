# The native CPU kernels are compiled by cffi at install time (one module per CPU feature level);
# without them lowbit builds them on first use into ~/.cache/lowbit/native.
from setuptools import setup

setup(cffi_modules=["lowbit/native/build.py:ffi_avx512vnni", "lowbit/native/build.py:ffi_avx2",
                    "lowbit/native/build.py:ffi_scalar"])
