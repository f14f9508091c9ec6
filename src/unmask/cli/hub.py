"""`unmask import` and `unmask export`: open checkpoints in and out (see unmask.hub, docs/open_models.md).

Plain typed functions like the rest of the CLI; torch and the converters load inside them.
"""

from __future__ import annotations

from typing import Literal

from unmask.config import check

FLAG_ALIASES = {"--as": "--kind"}
"""`unmask import HF_DIR --as llada`: `as` is a Python keyword, so the parameter is `kind`."""


def import_checkpoint(
    folder: str,
    out: str | None = None,
    kind: Literal["ar", "llada", "dream"] | None = None,
    mask_id: int | None = None,
    pad_id: int | None = None,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
) -> str:
    """Import a Hugging Face-format checkpoint folder (Llama, Qwen2, GPT-2, LLaDA, Dream) as an unmask run directory.

    Args:
        folder: The checkpoint folder: config.json, model.safetensors or its shards with their index, tokenizer.json.
        out: The run directory to create (it must not exist, or be empty).
        kind: --as: 'ar' (Llama, Qwen2, GPT-2), 'llada' or 'dream' (MDMs); none = from config.json's model_type.
        mask_id: The mask token id (an MDM's: LLaDA-8B's is 126336); none = config.json's mask_token_id or the
            tokenizer's <|mdm_mask|>, else (AR) unmask's own <|mask|> in a spare embedding row.
        pad_id: The padding id; none = unmask's own <|pad|> in a spare embedding row.
        dtype: Store the weights in this dtype; none = the checkpoint's own (bf16 stays bf16).
    """
    from unmask.hub import import_checkpoint as run_import

    check(out is not None, "unmask import needs --out RUN: the run directory to create")
    path = run_import(folder=folder, out=out, kind=kind, mask_id=mask_id, pad_id=pad_id, dtype=dtype)
    print(f"{path}: imported from {folder}")
    return str(path)


def export(run: str, out: str | None = None, which: Literal["best", "last"] = "last") -> str:
    """Export a run as a Hugging Face-format folder: AR runs as Llama (Qwen2, GPT-2), MDM runs as LLaDA (Dream).

    Args:
        run: The run directory.
        out: The folder to write: config.json, model.safetensors, tokenizer.json (it must not exist, or be empty).
        which: Weights to export: last (final) or best (early-stopped).
    """
    from unmask.hub import export_run

    check(out is not None, "unmask export needs --out HF_DIR: the folder to write")
    path = export_run(run_path=run, out=out, which=which)
    print(f"{path}: exported from {run}")
    return str(path)
