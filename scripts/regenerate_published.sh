#!/usr/bin/env bash
# Regenerate every number the docs publish from the code in this checkout (2 CPU cores: about 90 minutes, plus
# about 8 for the clipped-t studies of the prior and emma steps).
#
#   bash scripts/regenerate_published.sh [STEP ...]    # steps: mini demo finetune edlm prior emma adapt (default: all)
#   bash scripts/regenerate_published.sh long          # Study II on Austen and on Emma: ~3 hours more, never by default
#
# Results land in runs/ (git-ignored); the committed copies are refreshed where a step says so:
#   mini      docs/study/mini/       the CPU mini-study's report folder (report, table, fit, stamp, figures)
#   demo      docs/demo/results.json, docs/demo_loss_vs_epochs.png    (README and docs/study.md quote them)
#   finetune  runs/published/finetune/*.json  SFT / R2FT task metrics on the demo's bases (docs/finetuning.md)
#   edlm      runs/published/edlm/*.json      EDLM rows of `unmask bench sample` (docs/finetuning.md)
#   prior     runs/studies/local-prior/report  the local attention prior on Austen, 3 seeds, and mask-rate sampling
#             against it, 2 seeds (docs/study/mask-rate, docs/study/mask-rate-tmin)
#   emma      runs/studies/*-emma/report       the same checks on *Emma* alone, a corpus not tuned on
#   adapt     docs/finetune/adapt.json         AR -> MDM adaptation vs MDM from scratch (after demo and emma)
#   long      docs/study/long, docs/study/long-emma   Study II (after emma, which writes runs/emma.jsonl)
# The prose around the numbers is written by hand from these files; tests/test_published.py checks that the
# README's and the reports' numbers are the committed files' numbers, and (slow) that the code still
# produces the committed demo and study points.
set -euo pipefail
cd "$(dirname "$0")/.."
UNMASK=${UNMASK:-.venv/bin/unmask}
PY=${PY:-.venv/bin/python}
P=runs/published
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(mini demo finetune edlm prior emma adapt)
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }
say() { echo "== $(date +%T) $*"; }
mkdir -p "$P"

study() {  # study CONFIG [REPORT_COPY]: run, fit, report; copy the report folder where asked
    $UNMASK study run "$1" && $UNMASK study fit "$1" && $UNMASK study report "$1"
    local out
    out=$($PY -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$1")
    if [ -n "${2:-}" ]; then mkdir -p "$2" && cp -r "$out/report/." "$2/"; fi
}

if want mini; then
    say "mini-study: 88 runs"
    study configs/studies/mini-tuned.yaml docs/study/mini
fi

if want demo; then
    say "demo"
    $UNMASK demo
    mkdir -p docs/demo
    $PY - <<'EOF'
import json
results = json.load(open("runs/demo/results.json"))
results.pop("samples", None)  # sampled text is not a number the docs quote
json.dump(results, open("docs/demo/results.json", "w"), indent=1)
EOF
    cp runs/demo/loss_vs_epochs.png docs/demo_loss_vs_epochs.png
fi

if want finetune; then
    say "fine-tuning the demo's bases"
    F=$P/finetune
    mkdir -p $F
    [ -d $F/data ] || $UNMASK finetune prepare runs/demo/mdm-E64 --out $F/data
    $UNMASK finetune sft runs/demo/mdm-E64 --data $F/data --out $F/mdm-sft --resume "$([ -d $F/mdm-sft ] && echo true || echo false)"
    $UNMASK finetune r2ft $F/mdm-sft --data $F/data --out $F/mdm-r2ft --resume "$([ -d $F/mdm-r2ft ] && echo true || echo false)"
    $UNMASK finetune sft runs/demo/ar-E12 --data $F/data --out $F/ar-sft --resume "$([ -d $F/ar-sft ] && echo true || echo false)"
    $UNMASK finetune eval runs/demo/mdm-E64 $F/mdm-sft $F/mdm-r2ft runs/demo/ar-E12 $F/ar-sft \
        --per_task 20 --length 32 --out $F/chat.json
    $UNMASK finetune eval runs/demo/mdm-E64 $F/mdm-sft $F/mdm-r2ft --per_task 20 --length 40 \
        --sampler.commit.method low_confidence --sampler.conv.enabled true --sampler.commit.block_length null \
        --out $F/long_window.json
fi

if want edlm; then
    say "EDLM: NCE energy and bench sample"
    E=$P/edlm
    mkdir -p $E
    [ -f $E/energy-E16/last.safetensors ] || $UNMASK finetune energy runs/demo/mdm-E64 --out $E/energy-E16 \
        --train.epochs 16 --train.optim.lr 1e-3 --resume "$([ -d $E/energy-E16 ] && echo true || echo false)"
    for seed in 0 1; do  # 64 samples x 63 tokens, 32 ancestral steps, window [0.8, 1], gen PPL under ar-E12
        common=(runs/demo/mdm-E64 --n 64 --length 63 --seed $seed --sampler.commit.method ancestral
                --sampler.commit.steps 32 --sampler.temperature 1.0 --metrics true --judge_run runs/demo/ar-E12
                --json true)
        $UNMASK sample "${common[@]}" > $E/none_seed$seed.json
        $UNMASK sample "${common[@]}" --energy_run runs/demo/ar-E4 --sampler.energy.candidates 8 > $E/ar_seed$seed.json
        $UNMASK sample "${common[@]}" --energy_run $E/energy-E16 --sampler.energy.candidates 8 > $E/nce_seed$seed.json
    done
fi

if want prior; then
    say "local prior on Austen, 3 seeds"
    study configs/studies/local-prior.yaml
    study configs/studies/mask-rate.yaml docs/study/mask-rate
    study configs/studies/mask-rate-tmin.yaml docs/study/mask-rate-tmin
fi

if want emma; then
    say "second corpus: Emma alone"
    $PY - <<'EOF'
import gzip, json
from unmask.data.corpus import default_corpus_path
with gzip.open(default_corpus_path(), "rt") as f, open("runs/emma.jsonl", "w") as out:
    for line in f:
        if json.loads(line)["book"] == "Emma":
            out.write(line)
EOF
    study configs/studies/local-prior-emma.yaml
    study configs/studies/mini-emma.yaml
    study configs/studies/mask-rate-emma.yaml docs/study/mask-rate-emma
    study configs/studies/mask-rate-tmin-emma.yaml docs/study/mask-rate-tmin-emma
fi
if want adapt; then
    say "AR -> MDM adaptation: the demo's ar-E12 (Austen) and the Emma check's AR, against MDM from scratch"
    A=runs/adapt
    adapt() {  # adapt BASE OUT EPOCHS: the demo's MDM settings, from the AR run's weights
        [ -f $2/last.safetensors ] || $UNMASK finetune adapt "$1" --out "$2" --train.epochs "$3" --train.optim.lr 0.002 \
            --train.batch_size 16 --train.optim.warmup_frac 0.01 --train.eval.mc_passes 4 --train.eval.final_mc_passes 32 \
            --resume "$([ -d "$2" ] && echo true || echo false)"
    }
    for E in 8 16 32; do adapt runs/demo/ar-E12 $A/demo-E$E $E; done
    for E in 24 48; do adapt runs/studies/mini-emma/runs/ar-demo-U12500-E16-s0 $A/emma-E$E $E; done
    $PY scripts/adapt_table.py > docs/finetune/adapt.json
fi
if want long; then
    say "Study II: Austen, then Emma (2 workers each)"
    study configs/studies/long.yaml docs/study/long
    study configs/studies/long-emma.yaml docs/study/long-emma
fi
say "done"
