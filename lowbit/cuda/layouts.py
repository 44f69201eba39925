"""How each tensor type is laid out on the GPU (the kernel's type code and the optional repack
that splits blocks into a 16-byte aligned body and a tail of scales). One entry per type with a
CUDA kernel; adding a type = an entry here + its functions in lowbit_cuda.cu."""
from dataclasses import dataclass
from typing import Optional

T_F32, T_F16, T_BF16, T_Q8_0, T_Q4_K, T_Q6_K = 0, 1, 2, 3, 4, 5
SCALAR = {T_F32: 16, T_F16: 17, T_BF16: 18}   # plain floats whose rows are not 16-byte multiples


@dataclass(frozen=True)
class Repack:
    block_bytes: int
    body_off: int
    body_len: int
    tail_off: int
    tail_len: int


@dataclass(frozen=True)
class GpuLayout:
    code: int
    block_size: int = 1
    repack: Optional[Repack] = None


LAYOUTS = {
    "f32": GpuLayout(T_F32),
    "f16": GpuLayout(T_F16),
    "bf16": GpuLayout(T_BF16),
    # q8_0 block: fp16 d at 0, 32 int8 at 2 -> body = quants, tail = d
    "q8_0": GpuLayout(T_Q8_0, 32, Repack(34, 2, 32, 0, 2)),
    "q4_k": GpuLayout(T_Q4_K, 256),
    # q6_k block: ql|qh|scales (208 bytes), fp16 d at 208 -> body = first 208 bytes, tail = d
    "q6_k": GpuLayout(T_Q6_K, 256, Repack(210, 0, 208, 208, 2)),
}
