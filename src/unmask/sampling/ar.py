"""Autoregressive decoding for `ar` and `ar_orderings` runs, with a KV cache.

Each step feeds only the newest token and attends to the cached keys and values of
the context (`Transformer.forward(past_kv=...)`); `use_cache=False` recomputes the
same context from scratch each step, a slow reference that must give the same tokens.

Prompts of different lengths share a batch left-padded (`left_pad`): padding is
hidden by the key padding mask and every row counts its positions from its own first
real token, so a row decodes exactly as it would alone.

Context longer than the model's RoPE table (`seq_len`; `seq_len - 1` for
ar_orderings, whose queries sit one position ahead): a sliding window. When the
context would overflow, it restarts from its last 3/4 (re-encoded at positions
from 0, the cache rebuilt in one pass), then grows again. The context therefore never
drops below 3/4 of the table, and the re-encoding costs about 3 tokens per step
amortised. Both paths use the same windows, so they agree beyond seq_len too. The
window is shared by the batch, so there a padded row may restart earlier than it
would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from unmask.config import check
from unmask.sampling.base import SampleOutput, filter_logits
from unmask.sampling.config import MAX_LOGITS
from unmask.sampling.gumbel import sample_categorical

AR_MAX_WINDOWS = 16
"""AR decodes past its window by sliding it; at most this many windows (seq_len each) per call."""


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, P) of prompts right-aligned with pad_id before them, and the mask (B, P) of real tokens."""
    check(len(prompts) > 0 and all(len(p) > 0 for p in prompts), "prompts: every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    for row, p in enumerate(prompts):
        tokens[row, P - len(p) :] = torch.as_tensor(p, dtype=torch.long)
    return tokens, tokens.new_tensor([[i >= P - len(p) for i in range(P)] for p in prompts], dtype=torch.bool)


def next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    banned_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids (B,) from logits (B, V): banned ids removed, then top-k and the top-p nucleus of
    softmax(logits / T), sampled by float64 Gumbel-max; T = 0 is argmax (top-k/top-p cannot change it).
    """
    logits = logits.double()
    if banned_ids:
        logits[:, list(banned_ids)] = float("-inf")
    if temperature == 0:
        return logits.argmax(-1)
    # the nucleus is taken from the tempered distribution, the one that is sampled
    return sample_categorical(filter_logits(logits / temperature, top_k, top_p), 1.0, generator)


@torch.no_grad()
def sample_ar(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eod_id: int | None = None,
    banned_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    query_is_target: bool = False,
    use_cache: bool = True,
    prompt_mask: torch.Tensor | None = None,
    on_step: Callable[[list[list[int]], torch.Tensor], None] | None = None,
) -> SampleOutput:
    """Continue prompts (B, P) by max_new_tokens; `tokens` is (B, P + max_new_tokens).

    top_k: keep the k most likely tokens (0 = all); top_p: the smallest set with probability
        >= top_p (1 = all; the most likely token always stays).
    eod_id: a sequence that emits it keeps emitting it (so the batch stays rectangular);
        decoding stops early once every sequence has, the rest filled with eod_id.
    banned_ids: never emitted (pass the mask and pad ids).
    query_is_target: the model was trained with `ar_orderings`, whose queries carry the
        position of the token to predict (the next one, read left to right).
    prompt_mask: (B, P) True for real prompt tokens, padding on the left (see `left_pad`);
        None = no padding. Padded columns keep their ids in `tokens`.
    `history[s]` lists, per sequence, the position written at step s; `forward_passes`
    counts model calls (the cache's prefill and each rebuild count one).
    on_step: called after every step with, per sequence, the positions committed at that step and
        the canvas (B, T) after it (`unmask serve` streams them); it may raise to stop decoding.
    """
    check(temperature >= 0, f"temperature={temperature}: must be >= 0")
    check(top_k >= 0, f"top_k={top_k}: must be >= 0 (0 = off)")
    check(0 < top_p <= 1, f"top_p={top_p}: must be in (0, 1]")
    B, P = prompt.shape
    check(P >= 1, "prompt: needs at least one token (an empty prompt is the end-of-document id alone)")
    real = torch.ones_like(prompt, dtype=torch.bool) if prompt_mask is None else prompt_mask.to(prompt.device)
    check(real.shape == prompt.shape, f"prompt_mask {tuple(real.shape)} must match the prompt {tuple(prompt.shape)}")
    check(bool(real[:, -1].all()), "prompt_mask: every prompt needs a real last token (padding goes on the left)")
    check(bool((real[:, 1:] >= real[:, :-1]).all()), "prompt_mask: padding must be on the left (see left_pad)")
    longest = AR_MAX_WINDOWS * model.cfg.seq_len
    check(
        0 <= max_new_tokens <= longest,
        f"length={max_new_tokens}: must be in [0, {longest}] ({AR_MAX_WINDOWS} windows of seq_len {model.cfg.seq_len})",
    )
    vocab = getattr(model.cfg, "vocab_size", 1)  # (a stand-in model in tests may not say)
    logits = B * min(P + max_new_tokens, model.cfg.seq_len) * vocab  # the prefill's, the largest
    check(logits <= MAX_LOGITS, f"{B} sequence(s) x vocabulary {vocab}: {logits:,} logits per forward pass, over "
          f"{MAX_LOGITS:,}; ask for fewer samples")  # fmt: skip
    limit = model.cfg.seq_len - 1 if query_is_target else model.cfg.seq_len  # query positions stay in the table
    keep = max(1, 3 * limit // 4)
    padded = not bool(real.all())  # once: a window without padding may still pass its (all-True) mask
    x, out = prompt, SampleOutput(tokens=prompt)
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    start = cached = 0  # the context is x[:, start:]; the cache holds its columns [start, cached)
    past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    for _ in range(max_new_tokens):
        T = x.shape[1]
        if T - start > limit:  # overflow: restart the window from its last 3/4, rebuild the cache
            start, past = T - keep, None
        if past is None:
            cached = start
        window = real[:, start:]  # (B, Tw) over every key of the context
        window_pos = (window.cumsum(1) - 1).clamp_min(0)  # (B, Tw) per-row positions of every key
        pos = window_pos[:, cached - start :]  # of the fed tokens
        logits, kv = model(
            x[:, cached:],
            pos=pos,
            query_pos=pos + 1 if query_is_target else None,
            key_padding_mask=window if padded else None,
            past_kv=past,
            return_kv=True,
            key_pos=window_pos,
        )
        out.forward_passes += 1
        if use_cache:
            past, cached = kv if past is None else _extend(past, kv), T
        nxt = next_token(logits[:, -1], temperature, top_k, top_p, banned_ids, generator)  # (B,)
        if eod_id is not None:
            nxt = nxt.masked_fill(done, eod_id)
            done |= nxt == eod_id
        x = torch.cat([x, nxt[:, None]], dim=1)
        real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool, device=x.device)], dim=1)
        out.history.append([[T] for _ in range(B)])
        if on_step is not None:
            on_step(out.history[-1], x)
        if eod_id is not None and bool(done.all()):  # host-device sync: one bool per step
            break
    if x.shape[1] < P + max_new_tokens:
        x = torch.cat([x, x.new_full((B, P + max_new_tokens - x.shape[1]), eod_id)], dim=1)
    out.tokens = x
    return out


def _extend(past: list[tuple[torch.Tensor, torch.Tensor]], new: list[tuple[torch.Tensor, torch.Tensor]]):
    """Per layer, the cached (k, v) followed by the new tokens' (k, v) along the sequence (dim 2)."""
    return [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(past, new, strict=True)]
