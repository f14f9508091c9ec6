#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script (a lent GPU's time is scarce): the GPU tests (bf16
# autocast with fp32 master weights, fused AdamW, torch.compile, no host sync in a training step), then
# training throughput, peak memory and MFU of AR and MDM at GPT-2 small (125M parameters, sequence 1024, bf16 +
# compile) beside the reference GPT at the same shape, and the peak memory of the 350M preset's micro-batch
# (configs/paper_350M.yaml: 8 x 2048 tokens; eager, to compare with `unmask bench memory`'s estimate of
# 31.0 GiB, about 31,750 in bench train's 'peak MB' column, which counts MiB), then where the 125M step's GPU
# time goes (benchmarks/gpu_profile.py). Figures go to $OUT (7 files).
#
# The GPU image has PyTorch but not the pure-Python packages unmask's CLI needs; fetch them here first:
#   bash benchmarks/gpu_wheels.sh            # -> .whl/ (git-ignored)
# then run this there with .whl carried (the device tool: carry [".whl"], timeout 600 s):
#   bash benchmarks/gpu_check.sh             # 6 min on an H200 (2026-12-04) before the profile step; ~8-9 with it
# A failing step is recorded and the next one still runs; the script fails at the end if any step did.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=()
step() {  # step NAME COMMAND...: its output to the terminal and $OUT/NAME.txt
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.txt" || failed+=("$name")
}
step gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step tests $PY -m pytest -q -rs -p no:cacheprovider tests/training/test_runtime.py tests/objectives/test_host_batches.py
step vs_reference_125M $PY -m unmask bench train --size 125M --seq_len 1024 --batch_size 16 --vocab_size 50304 \
    --steps 20 --device cuda --compile true --repeats 1 --against reference --json "$OUT/vs_reference_125M.json"
step bench_350M $PY -m unmask bench train --size 350M --seq_len 2048 --batch_size 8 --vocab_size 50304 --steps 3 \
    --device cuda --compile false --repeats 1 --json "$OUT/bench_350M.json"
step profile_125M $PY benchmarks/gpu_profile.py
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]}"
    exit 1
fi
