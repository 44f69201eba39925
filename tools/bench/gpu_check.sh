#!/bin/bash
# build + test + profile + bench on the GPU machine (run from .cudawork; models/ holds gzipped
# NAME-QTYPE.lowbit files converted beforehand, whl/ the cffi/pycparser wheels).
#   bash tools/bench/gpu_check.sh [all|test|bench]
# A failed build stops here and prints nvcc's errors. Tests run with the defaults and with
# LOWBIT_CUDA_DP4A=0 LOWBIT_CUDA_MMA=0 (float activations in decode, prompts on the batched GEMV); the bench adds that A/B for the 7B q4_k_m.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD LOWBIT_CACHE=/tmp/lbcache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl/*.whl && export PYTHONPATH=$PWD:/tmp/site || exit 1
nvidia-smi --query-gpu=name,compute_cap,clocks.sm,clocks.mem --format=csv
if ! ( time python3 -m lowbit.cuda.build ) > $OUT/build.log 2>&1; then
  echo "BUILD FAILED"; grep -E "error|warning" $OUT/build.log | head -40; tail -20 $OUT/build.log; exit 2
fi
tail -4 $OUT/build.log
mkdir -p /tmp/models && cp models/*.lowbit /tmp/models/ 2>/dev/null; for g in models/*.gz; do [ -e "$g" ] && gunzip -c $g > /tmp/models/$(basename $g .gz).lowbit; done; ls /tmp/models
mkdir -p ../shared/models   # tests/conftest.py wants the shared world's folder; the GPU tests read /tmp/models
MODE=${1:-all}
AB=${AB:-}   # more settings for the bench, e.g. AB="LOWBIT_CUDA_PDL=0 LOWBIT_CUDA_MMA=0,LOWBIT_CUDA_PDL=0" (commas join variables)
if [ "$MODE" != test ]; then   # random 7B-shape models, made while the tests run
  ( python3 -m tools.generators.make_random_lowbit /tmp/q8_0.lowbit --type q8_0 2>&1 | tail -1 ) > $OUT/make.log &
  ( python3 -m tools.generators.make_random_lowbit /tmp/q4_k_m.lowbit --type q4_k_m 2>&1 | tail -1 ) >> $OUT/make.log &
fi
if [ "$MODE" != bench ]; then
  LOWBIT_TEST_MODELS=/tmp/models timeout 300 python3 -m pytest tests/test_cuda.py -q -s -p no:cacheprovider 2>&1 | tee $OUT/test.log | grep -E "rel err|agrees|passed|failed|Error|error|assert|Mismatch|^FAILED" | head -80
  echo "== tests with LOWBIT_CUDA_DP4A=0 LOWBIT_CUDA_MMA=0 (float decode, batched-GEMV prompts)"
  LOWBIT_CUDA_DP4A=0 LOWBIT_CUDA_MMA=0 LOWBIT_TEST_MODELS=/tmp/models timeout 300 python3 -m pytest tests/test_cuda.py -q -s -p no:cacheprovider 2>&1 | tee $OUT/test_float.log | grep -E "agrees|passed|failed|^E  |^FAILED" | head -60
fi
if [ "$MODE" != test ]; then
  wait; cat $OUT/make.log
  [ -z "$NOPROFILE" ] && for t in q4_k_m q8_0; do echo "== profile $t"; timeout 100 python3 -m tools.bench.profile_cuda /tmp/$t.lowbit 2>&1 | tee -a $OUT/profile.log; done
  timeout 240 python3 -m tools.bench.bench_cuda /tmp/q4_k_m.lowbit /tmp/q8_0.lowbit /tmp/models/*.lowbit --prompt 128 --gen 128 2>&1 | tee $OUT/bench.log
  for v in "LOWBIT_CUDA_DP4A=0" $AB; do
    echo "== $v"; env ${v//,/ } timeout 100 python3 -m tools.bench.bench_cuda /tmp/q4_k_m.lowbit --prompt 128 --gen 128 --reps 1 2>&1 | grep -E "^\|" | tee -a $OUT/bench.log
  done
  # prompt passes: tensor cores (default) vs the batched GEMV, 128 and 512 tokens (PROMPT_AB=0: skip)
  [ "${PROMPT_AB:-1}" != 0 ] && for p in 128 512; do for v in "LOWBIT_CUDA_MMA=1" "LOWBIT_CUDA_MMA=0"; do
    echo "== prompt $p $v"; env $v timeout 100 python3 -m tools.bench.bench_cuda /tmp/q4_k_m.lowbit /tmp/q8_0.lowbit --prompt $p --gen 8 --reps 2 2>&1 | grep -E "^\|" | tee -a $OUT/bench.log
  done; done
  # the crossover (LOWBIT_CUDA_MMA_MIN, default 96): short prompts forced onto tensor cores vs the GEMV, q4_k_m only
  [ "${PROMPT_AB:-1}" != 0 ] && for p in 16 32 64; do for v in "LOWBIT_CUDA_MMA_MIN=2" "LOWBIT_CUDA_MMA=0"; do
    echo "== prompt $p $v"; env $v timeout 60 python3 -m tools.bench.bench_cuda /tmp/q4_k_m.lowbit --prompt $p --gen 4 --reps 3 2>&1 | grep -E "^\| q4" | tee -a $OUT/bench.log
  done; done
fi
