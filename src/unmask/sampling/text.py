"""Text in, text out: decode any run directory with the sampler its objective calls for."""

from __future__ import annotations

from pathlib import Path

import torch

from unmask.config import ConfigError


def generate_text(
    run: str | Path,
    prompt: str = "",
    n: int = 1,
    length: int = 48,
    steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    which: str = "best",
) -> list[str]:
    """n continuations of `prompt` (without the prompt's leading end-of-document when it is empty).

    AR and ar_orderings runs decode left to right; MDM runs use low-confidence decoding in
    `steps` steps (default: one token per step).
    """
    from unmask.checkpoint import load_run, run_configs
    from unmask.data.dataset import TokenData
    from unmask.sampling.ar import generate_ar
    from unmask.sampling.mdm import generate_mdm

    model, config = load_run(run, which)
    _, cfg = run_configs(config)
    data = TokenData(config["data"])
    tok = data.tokenizer()
    ids = tok.encode(prompt).ids if prompt else [data.eod_id]
    x = torch.tensor([ids] * n)
    g = torch.Generator().manual_seed(seed)
    banned = (data.pad_id, data.mask_id)
    if cfg.objective == "mdm":
        if x.shape[1] + length > data.seq_len:
            raise ConfigError(
                f"prompt ({x.shape[1]} tokens) + length {length} exceeds the model's seq_len "
                f"{data.seq_len}; shorten --length or the prompt"
            )
        steps = steps or length
        if not 1 <= steps <= length:
            raise ConfigError(f"--steps {steps} must be between 1 and --length {length}")
        tokens = generate_mdm(model, x, length, steps, data.mask_id, temperature, banned, g).tokens
    else:
        tokens = generate_ar(
            model,
            x,
            length,
            temperature,
            banned_ids=banned,
            generator=g,
            query_is_target=cfg.objective == "ar_orderings",
        )
    skip = 0 if prompt else 1
    return [tok.decode(row[skip:].tolist()) for row in tokens]
