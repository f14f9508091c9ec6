"""Autoregressive decoding (greedy or temperature) for AR runs.

Minimal on purpose: the context is recomputed each step (cropped to seq_len);
the KV-cached decoder belongs to the full sampler suite.
"""

from __future__ import annotations

import torch

from unmask.sampling.gumbel import sample_categorical


@torch.no_grad()
def generate_ar(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    eod_id: int | None = None,
    banned_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue prompts (B, P) by max_new_tokens; returns (B, P + max_new_tokens).

    After a sequence emits eod_id it keeps emitting eod_id (so batches stay rectangular).
    """
    seq_len = model.cfg.seq_len
    x = prompt
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_new_tokens):
        logits = model(x[:, -seq_len:])[:, -1].float()  # (B, V)
        logits[:, list(banned_ids)] = float("-inf")
        nxt = sample_categorical(logits, temperature, generator)
        if eod_id is not None:
            nxt = nxt.masked_fill(done, eod_id)
            done |= nxt == eod_id
        x = torch.cat([x, nxt[:, None]], dim=1)
    return x
