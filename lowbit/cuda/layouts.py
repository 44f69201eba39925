"""How each tensor type is laid out on the GPU: the kernel's type code and the optional repack
that splits each block into a 16-byte aligned body (bytes body_off..body_off+body_len) and a tail
(the block's other bytes, in order). q8_0 has its own repack (its body is also permuted, see
lowbit_cuda.cu). One entry per type with a CUDA kernel; adding a type = an entry here + its
functions in lowbit_cuda.cu.

Codebook types (cbk2, cbk4, d4l2; format_spec/types/codebook.md): the tensor's prefix (codebook
256 x D fp16, then the fp16 row scales; d4l2's fixed D4 lattice is written out as fp16 in front)
goes to lb_mat.xtra as the kernel's side data; each block (scale byte, then B/D index bytes) is
split by lb_repack_vq into body = the row's index bytes, each full chunk of 512 vectors permuted so
that lane l's 16 bytes hold vectors l, l+32, ... (vq_pos in lowbit_cuda.cu: the warp's x loads are
then contiguous), and tail = the scale bytes. gemv_vq_kernel holds the codebook in shared memory as
float. (Repack below gives the block split's byte counts; the permutation is lb_repack_vq's.)

Huffman-coded types `<base>.h` (format_spec/types/huffman.md) have no layout of their own: at load
each tensor's index stream is decoded on the host, a row block at a time, back into the base type's
exact bytes (host_repack.base_tensor_bytes), which are uploaded and run the base type's kernel. The
GPU holds the base type's bytes (the .h saving is a file-size and disk/RAM saving, not a VRAM one)."""
from dataclasses import dataclass
from typing import Optional

T_F32, T_F16, T_BF16, T_Q8_0, T_Q4_K, T_Q6_K, T_Q2_K, T_Q3_K, T_Q5_K, T_CBK2, T_CBK4, T_D4L2 = range(12)
SCALAR = {T_F32: 16, T_F16: 17, T_BF16: 18}   # plain floats whose rows are not 16-byte multiples
KQUANTS = {T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K}   # rows may end in a tail block
CODEBOOK = {T_CBK2, T_CBK4, T_D4L2}                 # side data (codebook, row scales) in lb_mat.xtra


@dataclass(frozen=True)
class Repack:
    block_bytes: int
    body_off: int
    body_len: int

    @property
    def tail_len(self):
        return self.block_bytes - self.body_len


@dataclass(frozen=True)
class GpuLayout:
    code: int
    block_size: int = 1
    repack: Optional[Repack] = None


LAYOUTS = {
    "f32": GpuLayout(T_F32),
    "f16": GpuLayout(T_F16),
    "bf16": GpuLayout(T_BF16),
    # q8_0 block: fp16 d at 0, 32 int8 at 2 -> body = quants (permuted), tail = d
    "q8_0": GpuLayout(T_Q8_0, 32, Repack(34, 2, 32)),
    # q2_k block: 16 scale bytes, 64 bytes qs, d, dmin -> body = qs, tail = scales, d, dmin
    "q2_k": GpuLayout(T_Q2_K, 256, Repack(84, 16, 64)),
    # q3_k block: hmask 32, qs 64, 12 scale bytes, d -> body = hmask + qs, tail = scales, d
    "q3_k": GpuLayout(T_Q3_K, 256, Repack(110, 0, 96)),
    "q4_k": GpuLayout(T_Q4_K, 256),   # 144-byte blocks, kept as in the file
    "q4_ke": GpuLayout(T_Q4_K, 256),  # q4_k's bytes (only its quantizer differs)
    "q5_k": GpuLayout(T_Q5_K, 256),   # 176-byte blocks, kept as in the file
    # q6_k block: ql|qh|scales (208 bytes), fp16 d at 208 -> body = first 208 bytes, tail = d
    "q6_k": GpuLayout(T_Q6_K, 256, Repack(210, 0, 208)),
    # codebook blocks: scale byte, then the index bytes -> body = indices, tail = scale byte
    "cbk2": GpuLayout(T_CBK2, 64, Repack(17, 1, 16)),
    "cbk4": GpuLayout(T_CBK4, 32, Repack(17, 1, 16)),
    "d4l2": GpuLayout(T_D4L2, 32, Repack(9, 1, 8)),
}


def layout_of(qtype: str):
    """The GPU layout of a file's tensor type: `<base>.h` runs as its base type (decoded at load)."""
    return LAYOUTS.get(qtype[:-2] if qtype.endswith(".h") else qtype)
