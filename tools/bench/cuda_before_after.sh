#!/bin/bash
# Two trees' CUDA speed side by side on one GPU machine (a change that must not slow decoding down):
# builds both, runs tests/test_cuda.py on NEW, makes random Llama-2-7B-shape q4_k_m and q8_0 files
# and runs each tree's bench_cuda on them alternately (old, new, old, new), then the 512-token prompt
# (tensor cores). Logs go to $OUT (or /tmp/cuda_before_after) as well as stdout.
#   bash tools/bench/cuda_before_after.sh OLD_TREE NEW_TREE
# e.g. OLD_TREE from `git archive 9f90308 | tar -x -C old` (trees before tools/ moved to kernels are fine).
OLD=$(cd "$1" && pwd) NEW=$(cd "$2" && pwd) || { echo "usage: $0 OLD_TREE NEW_TREE" >&2; exit 2; }
export PYTHONUNBUFFERED=1 LOWBIT_CACHE=${LOWBIT_CACHE:-/tmp/lbcache}
OUT=${OUT:-/tmp/cuda_before_after}; mkdir -p "$OUT"
bench() {   # tree, args...: that tree's bench_cuda.py (before issue 14 it lived in tools/)
  local t=$1; shift
  if [ -f "$t/tools/bench/bench_cuda.py" ]; then (cd "$t" && PYTHONPATH=$PWD:$PYTHONPATH python3 -m tools.bench.bench_cuda "$@")
  else (cd "$t" && PYTHONPATH=$PWD:$PYTHONPATH python3 tools/bench_cuda.py "$@"); fi
}
nvidia-smi --query-gpu=name,compute_cap --format=csv
for t in "$OLD" "$NEW"; do (cd "$t" && PYTHONPATH=$PWD:$PYTHONPATH python3 -m lowbit.cuda.build > "$OUT/build_$(basename "$t").log" 2>&1; echo "build $t rc=$?"); done
for q in q4_k_m q8_0; do (cd "$NEW" && PYTHONPATH=$PWD:$PYTHONPATH python3 -m tools.generators.make_random_lowbit /tmp/$q.lowbit --type $q | tail -1); done
(cd "$NEW" && PYTHONPATH=$PWD:$PYTHONPATH python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/test_new.log" | tail -4)
for t in "$OLD" "$NEW" "$OLD" "$NEW"; do
  echo "== $t --prompt 128 --gen 128"; bench "$t" /tmp/q4_k_m.lowbit /tmp/q8_0.lowbit --prompt 128 --gen 128 --reps 3 2>&1 | tee -a "$OUT/bench128.log"
done
for t in "$OLD" "$NEW"; do
  echo "== $t --prompt 512 --gen 8"; bench "$t" /tmp/q4_k_m.lowbit /tmp/q8_0.lowbit --prompt 512 --gen 8 --reps 2 2>&1 | tee -a "$OUT/bench512.log"
done
