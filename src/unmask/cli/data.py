"""`unmask prepare`: a corpus → tokenizer + budgeted token shards."""

from __future__ import annotations

import dataclasses
import json

from unmask.config import DataConfig


def prepare(
    inputs: list[str] | None = None,
    out: str = "data/austen",
    data: DataConfig = DataConfig(),
    overwrite: bool = False,
) -> str:
    """Corpus → tokenizer + token shards with an exact unique-token budget and a validation split.

    Args:
        inputs: Files or folders (text, JSONL, parquet, saved HF datasets); none = the embedded Austen corpus.
        out: Output folder (tokenizer.json, train.bin, val.bin, manifest.json).
        data: Tokenizer, budget and split settings.
        overwrite: Replace an existing output folder that `unmask prepare` wrote (any other folder is refused).
    """
    from unmask.data.prepare import prepare as prepare_data

    if inputs:
        data = dataclasses.replace(data, inputs=list(inputs))
    path = prepare_data(cfg=data, out=out, overwrite=overwrite)
    m = json.loads((path / "manifest.json").read_text())
    print(
        f"{path}: {m['unique_tokens']:,} training tokens ({m['n_train_sequences']} sequences of {m['seq_len']}), "
        f"{m['val_tokens']:,} validation tokens, vocabulary {m['tokenizer_vocab_size']}, "
        f"{m['encode_tokens_per_s']:,} tokens/s"
    )
    return str(path)
