""".lowbit file -> GGUF file for llama.cpp. Tensors whose bytes are already GGML's layout
(f32, f16, bf16, q8_0, k-quant rows of whole 256-weight super-blocks) are copied byte for byte;
for the llama architecture q/k rows are reordered to llama.cpp's RoPE pairing (whole rows move,
so the bytes stay the same). Rows in a lowbit-only layout (a k-quant tail block) are
requantized to the GGML type llama.cpp itself falls back to for such rows, from lowbit's
dequantized weights, and reported."""
import os
import sys

import numpy as np

from lowbit import quants
from lowbit.config import ModelConfig
from lowbit.errors import ConvertError, FormatError
from lowbit.format import LowbitFile

from . import gguf_io

# lowbit type -> GGML type for rows in a lowbit-only layout (llama.cpp's own fallbacks, among
# the types the gguf package can quantize; iq4_nl, llama.cpp's choice for q2_k/q3_k, it cannot)
REQUANT = {"q2_k": "Q4_0", "q3_k": "Q4_0", "q4_k": "Q5_0", "q5_k": "Q5_1", "q6_k": "Q8_0", "q8_0": "Q8_0"}

# general.file_type (llama_ftype) by the dominant weight type
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q2_k": 10, "q3_k": 12, "q4_k": 15, "q5_k": 17, "q6_k": 18, "bf16": 32}


def requant_type(qtype: str, cols: int):
    """The GGML type (gguf.GGMLQuantizationType name) a lowbit-only tensor is stored as."""
    gguf = gguf_io.need_gguf()
    want = REQUANT.get(qtype, "F16")
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[want]][0]
    return want if cols % block == 0 else "F16"


def export_gguf(src, out, log=None) -> dict:
    """Write the GGUF file `out` from the lowbit file `src`. Returns a summary with the tensors that
    were copied byte for byte and those that had to be requantized."""
    gguf = gguf_io.need_gguf()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    src, out = os.fspath(src), os.fspath(out)
    with LowbitFile(src) as f:
        try:
            config = ModelConfig.from_json(src, f.metadata.get("architecture"))
        except FormatError as e:
            raise ConvertError(str(e)) from None
        tok = f.metadata.get("tokenizer") or {}
        weights = [n for n, t in f.tensors.items() if t.type != "u8"]
        for n in weights:
            if f.info(n).type not in quants.TYPES or quants.TYPES[f.info(n).type].ggml_type is None:
                raise ConvertError(f"{src}: tensor {n!r} has type {f.info(n).type!r}, which has no GGML counterpart")
        tmp = out + ".tmp"
        writer = gguf.GGUFWriter(tmp, config.arch)
        try:
            summary = _write(f, config, tok, weights, writer, src, log)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            os.replace(tmp, out)
        except BaseException:
            writer.close()
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    summary.update(path=out, bytes=os.path.getsize(out))
    return summary


def _write(f, config, tok, weights, writer, src, log):
    gguf = gguf_io.need_gguf()
    prov = f.metadata.get("provenance") or {}
    gguf_io.write_hparams(writer, config, str(prov.get("source") or os.path.basename(src)))
    counts = {}
    for n in weights:
        if len(f.info(n).shape) == 2:
            counts[f.info(n).type] = counts.get(f.info(n).type, 0) + int(np.prod(f.info(n).shape))
    main = max(counts, key=counts.get) if counts else "f32"
    writer.add_file_type(FILE_TYPES.get(main, 0))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    blob_name = tok.get("tensor")
    if blob_name not in f.tensors:
        raise ConvertError(f"{src}: the file embeds no tokenizer ({blob_name!r}); GGUF needs its vocabulary")
    kind = None
    if "tokenizer.model" in f.tensors and f.info("tokenizer.model").type == "u8":
        # a checkpoint with both files (stories260K): llama.cpp's sentencepiece vocabulary is the exact one
        blob_name, kind = "tokenizer.model", "sentencepiece"
    gguf_io.write_tokenizer(writer, tok, f.blob(blob_name), config.vocab_size, warn=lambda m: log(f"warning: {m}"),
                            kind=kind)

    copied, requantized = [], {}
    if config.rope_scaling and config.rope_scaling.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", gguf_io.llama3_rope_factors(config))
    for name in weights:
        info = f.info(name)
        qt = quants.TYPES[info.type]
        heads = gguf_io.qk_heads(name, config)
        cols = info.shape[-1]
        if qt.ggml_compatible(cols):
            raw = f.raw(name).reshape(*info.shape[:-1], -1)   # bytes, in the tensor's shape
            if heads:
                raw = gguf_io.permute_qk(raw, heads)
            writer.add_tensor(name, np.ascontiguousarray(raw), raw_dtype=gguf.GGMLQuantizationType(qt.ggml_type))
            copied.append(name)
            continue
        target = requant_type(info.type, cols)
        w = f.dequantize(name).reshape(info.rows, cols)
        if heads:
            w = gguf_io.permute_qk(w, heads)
        gt = gguf.GGMLQuantizationType[target]
        data = w.astype(np.float16) if gt == gguf.GGMLQuantizationType.F16 else gguf.quants.quantize(w, gt)
        writer.add_tensor(name, data, raw_dtype=gt)
        requantized[name] = {"from": info.type, "to": target.lower()}
    if requantized:
        by = {}
        for n, r in requantized.items():
            by.setdefault(f"{r['from']} -> {r['to']}", []).append(n)
        log(f"warning: {len(requantized)} tensors are in a lowbit-only layout (rows not a multiple of the block "
            "size) and were requantized from lowbit's weights:")
        for k, names in by.items():
            log(f"  {k}: {', '.join(names)}")
    return {"copied": copied, "requantized": requantized, "architecture": config.arch}
