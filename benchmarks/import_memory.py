"""Peak memory of `unmask import` and of using the imported run, measured on a 1B-class synthetic bf16 checkpoint
in LLaDA's layout (two shards) against `unmask bench memory --checkpoint`'s estimate; and that estimate for
LLaDA-8B's shapes, from a sparse folder (headers only: no 16 GB written, nothing downloaded).

    PYTHONPATH=src python benchmarks/import_memory.py /tmp/import-memory   # needs ~4 GB of disk

Each figure is its own process's peak RSS (ru_maxrss), so it is that step's alone. Target (#22): import peak RSS
<= 1.2x the weights' bytes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

SIZES_1B = dict(d_model=2048, n_heads=16, n_layers=16, vocab=32000, hidden=5632)  # 953M parameters
SIZES_8B = dict(d_model=4096, n_heads=32, n_layers=32, vocab=126464, hidden=12288)  # LLaDA-8B's config.json


def llada_shapes(d_model, n_heads, n_layers, vocab, hidden) -> dict[str, tuple[int, ...]]:
    D = d_model
    shapes = {"model.transformer.wte.weight": (vocab, D), "model.transformer.ln_f.weight": (D,),
              "model.transformer.ff_out.weight": (vocab, D)}  # fmt: skip
    block = {"attn_norm": (D,), "ff_norm": (D,), "q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D),
             "attn_out": (D, D), "ff_proj": (hidden, D), "up_proj": (hidden, D), "ff_out": (D, hidden)}  # fmt: skip
    for i in range(n_layers):
        shapes |= {f"model.transformer.blocks.{i}.{name}.weight": shape for name, shape in block.items()}
    return shapes


def write_checkpoint(out: Path, sizes: dict, sparse: bool) -> None:
    """Two bf16 shards with their index, config.json and a tokenizer; `sparse`: headers and holes, no data."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.open_models.checkpoints import LLADA_CONFIG, write_sparse, write_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    shapes = llada_shapes(**sizes)
    names, weight_map = list(shapes), {}
    for k, part in enumerate([names[: len(names) // 2], names[len(names) // 2 :]], 1):
        file = f"model-0000{k}-of-00002.safetensors"
        if sparse:
            write_sparse(out / file, {n: shapes[n] for n in part})
        else:
            save_file({n: (torch.randn(shapes[n]) * 0.02).bfloat16() for n in part}, str(out / file), {"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    V = sizes["vocab"]
    cfg = {**LLADA_CONFIG, "d_model": sizes["d_model"], "n_heads": sizes["n_heads"], "n_kv_heads": sizes["n_heads"],
           "n_layers": sizes["n_layers"], "mlp_hidden_size": sizes["hidden"], "vocab_size": V, "embedding_size": V,
           "max_sequence_length": 4096, "mask_token_id": V - 1}  # fmt: skip
    (out / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(out)


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(step: str, hf: Path, run: Path) -> None:
    if step == "estimate":
        from dataclasses import asdict

        from unmask.hub.memory import estimate_checkpoint_memory

        print(json.dumps(asdict(estimate_checkpoint_memory(hf))))
    elif step == "import":
        from unmask.hub import import_checkpoint

        import_checkpoint(hf, run)
        print(json.dumps({"peak": peak()}))
    else:  # use the run in a dtype, as sample/eval/serve do: load it and run a forward pass (every weight read)
        from unmask.run import Run

        model = Run(run).load_model(dtype=step)
        with torch.no_grad():
            model(torch.zeros(1, 8, dtype=torch.long))
        print(json.dumps({"peak": peak()}))


def run_child(step: str, hf: Path, run: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "child", step, str(hf), str(run)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main(work: Path) -> None:
    gib = 2**30
    hf, run = work / "hf", work / "run"
    if not (hf / "config.json").is_file():
        subprocess.run([sys.executable, __file__, "write", str(hf)], check=True)
    if run.exists():
        import shutil

        shutil.rmtree(run)  # made by this script
    est = run_child("estimate", hf, run)
    measured = {"import": run_child("import", hf, run)["peak"]}
    for dtype in ("bfloat16", "float32"):
        measured[dtype] = run_child(dtype, hf, run)["peak"]
    estimated = {"import": est["import_peak"], **est["load_peak"]}
    weights = est["file_bytes"]
    print(f"953M-parameter bf16 checkpoint, {weights / gib:.3f} GiB of weights; peak RSS in GiB (x the weights):")
    for step in ("import", "bfloat16", "float32"):
        what = "import" if step == "import" else f"use in {step}"
        print(f"  {what:18s} measured {measured[step] / gib:.3f} ({measured[step] / weights:.2f}x), "
              f"estimated {estimated[step] / gib:.3f} ({estimated[step] / measured[step] - 1:+.1%})")  # fmt: skip
    big = work / "llada-8b-sparse"
    if not (big / "config.json").is_file():
        subprocess.run([sys.executable, __file__, "write-sparse", str(big)], check=True)
    est = run_child("estimate", big, work / "unused")
    use = {dtype: f"{peak / gib:.2f} GiB" for dtype, peak in est["load_peak"].items()}
    print(f"LLaDA-8B shapes ({est['parameters'] / 1e9:.2f}B parameters, {est['file_bytes'] / gib:.2f} GiB bf16), "
          f"estimated: import {est['import_peak'] / gib:.2f} GiB, using the run {use}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write_checkpoint(Path(sys.argv[2]), SIZES_1B, sparse=False)
    elif sys.argv[1] == "write-sparse":
        write_checkpoint(Path(sys.argv[2]), SIZES_8B, sparse=True)
    elif sys.argv[1] == "child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main(Path(sys.argv[1]))
