#!/usr/bin/env bash
# The pure-Python packages unmask needs that the lent GPU machine's image lacks (it has PyTorch, numpy, tokenizers,
# safetensors, rich, PyYAML, scipy, matplotlib, tensorboard, pytest, hypothesis), as wheels in .whl/ (git-ignored)
# for benchmarks/gpu_check.sh to install there. The GPU image's Python is 3.12; these wheels are py3-none-any.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
rm -rf .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "jsonargparse==4.53.0" "docstring-parser==0.18.0" "typeshed-client==2.15.0"
ls .whl
