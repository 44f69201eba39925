"""Per shared model and type: file bytes, conversion seconds, load seconds, RSS after load,
tokens/s of generation and the logit error against transformers' reference.

    python -m tools.bench.runtime_table [--types f16,q8_0] [--models stories260K,pycode-30m,pychat-30m] [-n 64]

Each measurement runs in a fresh subprocess so that RSS and load time are those of a cold process
(with the kernel's page cache warm, as after a first run)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tools._paths import ROOT, SHARED

PROBE = r"""
import json, sys, time
import numpy as np


def peak_rss():
    # VmHWM starts afresh at exec (ru_maxrss would carry the converting parent's peak over)
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
t0 = time.perf_counter()
import lowbit
m = lowbit.load(sys.argv[1])
load_s = time.perf_counter() - t0
rss_after_load = int(open('/proc/self/statm').read().split()[1]) * 4096
ref = np.load(sys.argv[2])
logits = m.logits(ref['ids'].tolist())
err = float(np.linalg.norm(logits - ref['logits']) / np.linalg.norm(ref['logits']))
m.generate_ids(ref['ids'].tolist(), max_tokens=4, temperature=0.0)      # JIT warm-up
out = m.generate_ids(ref['ids'].tolist(), max_tokens=int(sys.argv[3]), temperature=0.0, stop_on_eos=False)
s = m.last_stats
print(json.dumps({"load_s": load_s, "rss_after_load": rss_after_load, "rel_err": err,
                  "prefill_tps": s.prefill_tps, "decode_tps": s.decode_tps,
                  "peak_rss": peak_rss()}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="stories260K,pycode-30m,pychat-30m")
    ap.add_argument("--types", default="f16,bf16,q8_0")
    ap.add_argument("-n", type=int, default=64, help="tokens to generate")
    args = ap.parse_args()
    from converters import convert
    env = dict(os.environ, PYTHONPATH=ROOT)
    print("| model | type | bytes | bits/weight | convert s | load s | RSS after load MiB | peak RSS MiB | prompt t/s | gen t/s | logit rel. err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for qtype in args.types.split(","):
                out = os.path.join(tmp, f"{model}-{qtype}.lowbit")
                t0 = time.perf_counter()
                summary = convert(os.path.join(SHARED, "models", model), out, qtype, progress=False, log=lambda m: None)
                conv_s = time.perf_counter() - t0
                r = subprocess.run([sys.executable, "-c", PROBE, out, os.path.join(SHARED, "reference", f"{model}.npz"),
                                    str(args.n)], capture_output=True, text=True, env=env, check=True)
                d = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"| {model} | {qtype} | {summary['bytes']:,} | {summary['bits_per_weight']:.3f} | {conv_s:.2f} | "
                      f"{d['load_s']:.2f} | {d['rss_after_load'] / 2**20:.0f} | {d['peak_rss'] / 2**20:.0f} | "
                      f"{d['prefill_tps']:.0f} | {d['decode_tps']:.1f} | {d['rel_err']:.2e} |", flush=True)


if __name__ == "__main__":
    main()
