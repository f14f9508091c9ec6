"""Peak memory of `unmask import` on a 1B-class synthetic bf16 checkpoint in LLaDA's layout (two shards).

    PYTHONPATH=src python benchmarks/import_memory.py /tmp/import-memory   # needs ~6 GB of disk

The checkpoint is written by one process, the import measured in another (its peak RSS, ru_maxrss), so the
figure is the import's alone. Target (#22): peak RSS <= 1.2x the weights' bytes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

D, H, LAYERS, VOCAB, HIDDEN = 2048, 16, 16, 32000, 5632  # 953M parameters


def write_checkpoint(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.open_models.checkpoints import LLADA_CONFIG, write_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    shapes = {"model.transformer.wte.weight": (VOCAB, D), "model.transformer.ln_f.weight": (D,),
              "model.transformer.ff_out.weight": (VOCAB, D)}  # fmt: skip
    block = {"attn_norm": (D,), "ff_norm": (D,), "q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D),
             "attn_out": (D, D), "ff_proj": (HIDDEN, D), "up_proj": (HIDDEN, D), "ff_out": (D, HIDDEN)}  # fmt: skip
    for i in range(LAYERS):
        shapes |= {f"model.transformer.blocks.{i}.{name}.weight": shape for name, shape in block.items()}
    names, weight_map = list(shapes), {}
    for k, part in enumerate([names[: len(names) // 2], names[len(names) // 2 :]], 1):
        file = f"model-0000{k}-of-00002.safetensors"
        tensors = {n: (torch.randn(shapes[n]) * 0.02).bfloat16() for n in part}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sizes = {"d_model": D, "n_heads": H, "n_kv_heads": H, "n_layers": LAYERS, "mlp_hidden_size": HIDDEN}
    cfg = {**LLADA_CONFIG, **sizes, "vocab_size": VOCAB, "embedding_size": VOCAB, "max_sequence_length": 2048,
           "mask_token_id": VOCAB - 1}  # fmt: skip
    (out / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(out)


def measure(hf: Path, run: Path) -> None:
    from unmask.hub import import_checkpoint

    import_checkpoint(hf, run)
    weights = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"weights {weights / 2**30:.3f} GiB, import peak RSS {peak / 2**30:.3f} GiB = {peak / weights:.3f}x")


if __name__ == "__main__":
    if sys.argv[1] == "write":  # a child process: write the checkpoint
        write_checkpoint(Path(sys.argv[2]))
    elif sys.argv[1] == "measure":  # a child process: the import alone
        measure(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        work = Path(sys.argv[1])
        if not (work / "hf" / "config.json").is_file():
            subprocess.run([sys.executable, __file__, "write", str(work / "hf")], check=True)
        subprocess.run([sys.executable, __file__, "measure", str(work / "hf"), str(work / "run")], check=True)
