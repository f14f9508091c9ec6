#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script (a lent GPU's time is scarce): the GPU tests
# (bf16 autocast with fp32 master weights, fused AdamW, torch.compile), then training throughput,
# peak memory and MFU of AR and MDM at GPT-2 small (125M parameters, sequence 1024, bf16 + compile),
# the paired comparison with the reference GPT at the same shape, and the peak memory of the 350M preset's
# micro-batch (configs/paper_350M.yaml: 8 x 2048 tokens; eager, to compare with `unmask bench memory`'s
# estimate of 31.0 GiB, about 31,750 in bench train's 'peak MB' column, which counts MiB). Figures go to $OUT.
#   bash benchmarks/gpu_check.sh            # ~5-8 minutes on an H100-class GPU (compilation included; not yet run)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PY:-python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -m pytest -q -rs tests/training/test_runtime.py tests/objectives/test_host_batches.py 2>&1 | tee "$OUT/tests.txt"
SHAPE=(--size 125M --seq_len 1024 --batch_size 16 --vocab_size 50304 --steps 20 --device cuda --compile true)
$PY -m unmask bench train "${SHAPE[@]}" --repeats 2 --json "$OUT/bench_125M.json" | tee "$OUT/bench_125M.txt"
$PY -m unmask bench train "${SHAPE[@]}" --repeats 2 --against reference --json "$OUT/vs_reference_125M.json" \
    | tee "$OUT/vs_reference_125M.txt"
$PY -m unmask bench train --size 350M --seq_len 2048 --batch_size 8 --vocab_size 50304 --steps 3 --device cuda \
    --compile false --repeats 1 --json "$OUT/bench_350M.json" | tee "$OUT/bench_350M.txt"
