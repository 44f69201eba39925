"""tools/reports/quality_table.py's plot input and tools/reports/frontier_table.py's point syntax."""
import pytest

from tools.reports import frontier_table, quality_table


def test_frontier_point_syntax():
    assert frontier_table.parse_point("q2_k+gptq") == ("q2_k+gptq", {"qtype": "q2_k", "gptq": True})
    label, kw = frontier_table.parse_point("bpw2.87+q4_ke.h+cbk4")
    assert kw == {"qtype": "q8_0", "target_bpw": 2.87, "gptq": True, "candidates": "+q4_ke.h,+cbk4"}
    assert frontier_table.describe(label) == "--target-bpw 2.87 --candidates +q4_ke.h,+cbk4 (GPTQ)"
    assert "candidates" not in frontier_table.parse_point("bpw3.5")[1]
    with pytest.raises(SystemExit):
        frontier_table.parse_point("q2_k+bogus")


def test_family():
    f = quality_table.family
    assert [f(t) for t in ("q4_k_m", "q2_k", "q4_ke", "cbk2", "d4l2", "cb2_m", "q4_ke.h", "cbk4.h")] == \
        ["kquant", "kquant", "q4_ke", "codebook", "codebook", "codebook", "huffman", "huffman"]


def test_doc_points_read_the_published_tables(tmp_path):
    (tmp_path / "quality-m.md").write_text(
        "# t\n\n| type | imatrix | bytes | bits/weight | PPL | mean KLD | 99% KLD | top-1 % |\n|---|---|---|---|---|---|---|---|\n"
        "| f16 | no | 1 | 16.000 | 5.0 | 0.000000 | 0 | 100 |\n| q4_k | yes | 1 | 4.544 | 5.5 | 0.009415 | 0.06 | 95 |\n"
        "| q4_k | no | 1 | 4.543 | 5.5 | 0.010084 | 0.06 | 95 |\n\n| file | imatrix | bytes | bits/weight | PPL | mean KLD | vs |\n"
        "|---|---|---|---|---|---|---|\n| llama.cpp Q3_K_M | no | 1 | 4.227 | 5.5 | 0.0216 | |\n"
        "| lowbit q3_k_m before | no | 1 | 4.214 | 5.6 | 0.0224 | +3% |\n")
    (tmp_path / "codebook-m.md").write_text(
        "| file | imatrix | bytes | bits/weight | PPL | mean KLD | 99% KLD | top-1 % |\n|---|---|---|---|---|---|---|---|\n"
        "| **q4_ke.h** (same weights as q4_ke) | yes | 1 | **3.993** | = q4_ke | 0.027564 | | |\n"
        "| q4_ke + GPTQ | yes (hessian) | 1 | 4.544 | 5.56 | 0.018000 | 0.1 | 94 |\n| cbk2 | no | 1 | 2.228 | 6.9 | 0.288316 | 1 | 77 |\n"
        "\n| type | bits/weight | backend | gen t/s |\n|---|---|---|---|\n| q4_ke | 4.5 | c | 3000 |\n")
    (tmp_path / "frontier-m.md").write_text(
        "| file | bytes | bits/weight | PPL | mean KLD | 99% KLD | top-1 % |\n|---|---|---|---|---|---|---|\n"
        "| llama.cpp IQ2_XS imatrix | 1 | 2.870 | 6.2 | 0.159346 | 1.1 | 83 |\n"
        "| lowbit --target-bpw 2.87 (GPTQ) | 1 | 2.862 | 5.7 | 0.072020 ± 0.000883 | 0.4 | 88 |\n"
        "| lowbit --target-bpw 2.87 --candidates +cbk2 (GPTQ) | 1 | 2.860 | 5.7 | 0.07 ± 0.0008 | 0.4 | 88 |\n"
        "| lowbit q2_k, imatrix + GPTQ | 1 | 3.436 | 5.7 | 0.053922 ± 0.0007 | 0.4 | 89 |\n"
        "| lowbit q2_k, imatrix | 1 | 3.436 | 5.8 | 0.075634 ± 0.0009 | 0.5 | 88 |\n")
    pts = quality_table.doc_points("m", str(tmp_path))
    got = [(p["series"], p["label"], p["imatrix"], p["bits_per_weight"], p["kld_mean"]) for p in pts]
    assert got == [("kquant", "q4_k", True, 4.544, 0.009415), ("kquant", "q4_k", False, 4.543, 0.010084),
                   ("huffman", "q4_ke.h", True, 3.993, 0.027564), ("gptq", "q4_ke", True, 4.544, 0.018),
                   ("codebook", "cbk2", False, 2.228, 0.288316), ("target", "bpw 2.87", True, 2.862, 0.07202),
                   ("target_new", "bpw 2.87 +new", True, 2.86, 0.07), ("gptq", "q2_k", True, 3.436, 0.053922)]
    try:
        import matplotlib  # noqa: F401   (the tools extra; without it the plot is skipped with a message)
        has_mpl = True
    except ImportError:
        has_mpl = False
    quality_table.plot("m", None, str(tmp_path / "p.png"), points=pts)
    assert (tmp_path / "p.png").exists() == has_mpl
    assert not has_mpl or (tmp_path / "p.png").stat().st_size > 1000
