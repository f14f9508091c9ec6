"""Supervised fine-tuning losses on (tokens, learned) batches: LLaDA's recipe for MDM, prompt-free
next-token cross-entropy for AR. `learned` marks the assistant's tokens and end-of-text (see chat.py);
everything else is the prompt, which is never masked and never scored.
"""

from __future__ import annotations

import torch

from unmask.finetune.chat import InstructionDataError
from unmask.objectives.ar import ar_token_nll
from unmask.objectives.mdm import mask_probability, masked_token_ce


def sft_batch(
    encoded: list[tuple[list[int], list[bool]]], seq_len: int, eos_id: int, pad_id: int, pad_with_eos: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) tokens and (B, T) learned flags of templated conversations, padded to seq_len.

    pad_with_eos (MDM, LLaDA): the answer is padded with end-of-text tokens that are learned too, so the
    model learns where an answer stops; otherwise (AR) padding is pad_id and not learned.
    """
    B = len(encoded)
    tokens = torch.full((B, seq_len), eos_id if pad_with_eos else pad_id, dtype=torch.long)
    learned = torch.full((B, seq_len), pad_with_eos, dtype=torch.bool)
    for b, (ids, flags) in enumerate(encoded):
        if len(ids) > seq_len:
            raise InstructionDataError(
                f"conversation {b + 1} is {len(ids)} tokens, longer than the sequence ({seq_len}); shorten it or "
                "drop long conversations"
            )
        tokens[b, : len(ids)] = torch.tensor(ids)
        learned[b, : len(ids)] = torch.tensor(flags)
    return tokens, learned


def mdm_sft_loss(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    learned: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
) -> torch.Tensor:
    """LLaDA SFT: Σ_b (Σ_i m_bi · CE_bi / p_b) / |answer_b|, summed over the batch (divide by B for the mean).

    Only learned positions are masked (each with probability p_b, stratified over the batch as in
    pre-training); the prompt stays visible and is never scored; each sequence is normalised by its
    answer length (its learned tokens, padding end-of-text included), so short and long answers weigh
    the same.
    """
    B, T = tokens.shape
    p = mask_probability(B, eps, generator, tokens.device)  # (B,)
    masked = (torch.rand(B, T, generator=generator, device=tokens.device) < p[:, None]) & learned
    ce, row = masked_token_ce(model, tokens, masked, 1.0 / p, mask_id)
    answer_length = learned.sum(1).clamp_min(1)  # (B,)
    return (ce / answer_length[row]).sum()


def ar_sft_loss(model: torch.nn.Module, tokens: torch.Tensor, learned: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(Σ next-token NLL over learned targets, their number): the prompt and padding are read, never scored.
    Right padding needs no attention mask under causal attention: no scored position sees it."""
    scored = learned[:, 1:]  # input position j predicts token j + 1
    nll, _ = ar_token_nll(model, tokens, scored=scored)
    return nll.sum(), int(scored.sum())
