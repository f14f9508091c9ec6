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
    query_is_target: bool = False,
) -> torch.Tensor:
    """Continue prompts (B, P) by max_new_tokens; returns (B, P + max_new_tokens).

    After a sequence emits eod_id it keeps emitting eod_id (so batches stay rectangular).
    query_is_target: the model was trained with `ar_orderings`, whose queries carry the
    position of the token to predict (the next one, read left to right).
    """
    context = model.cfg.seq_len - 1 if query_is_target else model.cfg.seq_len  # target positions stay in the table
    x = prompt
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_new_tokens):
        window = x[:, -context:]
        kwargs = {}
        if query_is_target:
            pos = torch.arange(window.shape[1], device=x.device).expand(len(x), -1)
            kwargs = {"pos": pos, "query_pos": pos + 1}
        logits = model(window, **kwargs)[:, -1].float()  # (B, V)
        logits[:, list(banned_ids)] = float("-inf")
        nxt = sample_categorical(logits, temperature, generator)
        if eod_id is not None:
            nxt = nxt.masked_fill(done, eod_id)
            done |= nxt == eod_id
        x = torch.cat([x, nxt[:, None]], dim=1)
    return x
