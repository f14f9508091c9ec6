"""Supervised fine-tuning on instruction data: LLaDA's recipe for MDM, prompt-free next-token CE for AR.

A batch holds the templated conversations (B, T), right-padded with pad_id, and as its loss mask the learned
flags (assistant text and its end-of-text; see unmask.finetune.chat and unmask.data.instructions). The prompt
is never masked and never scored.

    sft_mdm   the answer is padded with end-of-text tokens that are learned too (the model learns where an
              answer stops), only answer positions are masked, each with probability p_b, and each
              conversation's masked cross-entropy (weighted 1/p_b) is divided by its answer length:
              L = (1/B) Σ_b Σ_i m_bi · CE_bi / (p_b · |answer_b|)
    sft_ar    next-token cross-entropy over the learned targets only, averaged over them

Validation uses the same loss on the held-out conversations: the exact mean NLL of the answer
tokens (AR), or the mean over conversations of the per-answer-token ELBO over K fixed-seed passes
(MDM, an upper bound), with its standard error.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from unmask.config import ConfigError, MdmConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.ar import ar_token_nll
from unmask.objectives.base import LossOutput, Objective, Specials
from unmask.objectives.mdm import mask_probability, masked_token_ce


def with_eos_padding(tokens: torch.Tensor, learned: torch.Tensor, sp: Specials) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA: padding becomes end-of-text, learned like the answer it ends."""
    pad = tokens == sp.pad_id
    return tokens.masked_fill(pad, sp.eod_id), learned | pad


def mdm_sft_loss(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    learned: torch.Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Σ_b (Σ_i m_bi · CE_bi / p_b) / |answer_b| over (B, T) tokens whose `learned` positions alone are masked.

    Noise levels are stratified over the batch as in pre-training; divide by B for the mean."""
    B, T = tokens.shape
    p = mask_probability(B, eps, generator, tokens.device)  # (B,)
    masked = (torch.rand(B, T, generator=generator, device=tokens.device) < p[:, None]) & learned
    answer_length = learned.sum(1).clamp_min(1)  # (B,)
    ce, _ = masked_token_ce(model, tokens, masked, 1.0 / (p * answer_length), mask_id)
    return ce.sum()


class ConversationObjective(Objective):
    """What the fine-tuning objectives on instruction batches share: how a batch counts its tokens, validation
    by their own loss, and SFT's bases."""

    conversations = True
    validation = "own_loss"
    sft_bases: ClassVar[tuple[str, ...]] = ()
    """The base objectives `unmask finetune sft` fine-tunes with this objective."""

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        """Each conversation weighs the same: the mean over the batch."""
        return len(batch)

    def check_base(self, base) -> None:
        if base is not None and base.objective.name not in self.sft_bases:
            raise ConfigError(
                f"run {base.path} was trained with {base.objective.name}; SFT starts from an 'mdm' or 'ar' run"
            )


class SFTMDM(ConversationObjective):
    """LLaDA's SFT of an MDM; options: train.mdm (eps)."""

    name, causal, exact, decoder = "sft_mdm", False, False, "mdm"
    host_batches = True
    sft_bases = ("mdm", "mdm_adapt")

    def __init__(self, options: MdmConfig | None = None):
        self.options = options or MdmConfig()

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> SFTMDM:
        return cls(cfg.mdm)

    def loss(self, model, batch: Batch, sp: Specials, generator=None) -> LossOutput:
        tokens, learned = with_eos_padding(batch.tokens, batch.loss_mask, sp)
        return LossOutput(mdm_sft_loss(model, tokens, learned, sp.mask_id, generator, self.options.eps), len(batch))


class SFTAR(ConversationObjective):
    """Next-token cross-entropy over the answers; no options."""

    name, causal, exact, decoder = "sft_ar", True, True, "ar"
    sft_bases = ("ar",)

    def loss(self, model, batch: Batch, sp: Specials, generator=None) -> LossOutput:
        tokens, learned = batch.tokens, batch.loss_mask
        scored = learned[:, 1:]  # input position j predicts token j + 1
        nll, _ = ar_token_nll(model, tokens, scored=scored)  # right padding: no scored position sees it
        return LossOutput(nll.sum(), scored)

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        """The learned targets: the answer tokens after each sequence's first."""
        return int(batch.loss_mask[:, 1:].sum())
