"""Rejective fine-tuning (R2FT, arXiv 2509.15188) of an SFT'd MDM: the batch rule and the preference loss.

A batch is an instruction batch, its loss mask the learned flags (see unmask.objectives.sft). Per conversation, with the
loss's generator (seeded per micro-batch, so a run is reproducible and resumable):

  1. the answer is the last run of learned positions (its text and end-of-text); padding becomes
     learned end-of-text, as in LLaDA SFT;
  2. a cut c is drawn uniformly inside it, c ∈ [start + 1, eos]: at least one answer token before c;
  3. the model input is the sequence up to c followed by masks only, over the whole region [c, T):
     the far positions of a long decoding window, not random masking;
  4. the winner is the true continuation (the rest of the answer, then end-of-text to T);
  5. the rejected continuation is the authors' repeated phrase: the last k ∈ [1, min(max_phrase, c − start)]
     answer tokens before c tiled over the region, one position of it (uniform) replaced by end-of-text;
  6. optionally a second rejected continuation, the high-prior filler: the winner with each token replaced,
     with probability filler_rate, by a frequent token drawn in proportion to its count.

Both continuations share the input, so one forward scores them all. With mean log-probabilities over
the region (the factorised MDM likelihood of a continuation given the prefix), the loss is reference-free:

    L = mean_r [ −log σ(β_w · lp(winner) − β_l · lp(rejected_r) − γ) ] − β_a · lp(winner)

averaged over conversations; β_w = β_l = 1, β_a = 0.1, γ = 0 by default (the authors' scripts).

Validation is this same loss on the held-out conversations with a fixed seed (validation_loss, own_loss), not
the SFT ELBO: it is what the run optimises, so best.safetensors is the best R2FT model; the ELBO cannot
see the margin against repetition (a model that spreads mass onto tiled phrases can keep its ELBO), and
the β_a term already tracks the winner's likelihood. It is not a likelihood, so it is reported by its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unmask.config import ConfigError, R2ftConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.base import LossOutput, Specials
from unmask.objectives.sft import ConversationObjective, with_eos_padding


@dataclass
class R2FTBatch:
    """The R2FT view of an instruction batch; all (B, T)."""

    inputs: torch.Tensor
    """The sequence up to the cut, then mask tokens only."""
    region: torch.Tensor
    """bool: the positions after the cut (masked in inputs, scored)."""
    winner: torch.Tensor
    """The true sequence, padding as end-of-text."""
    rejected: list[torch.Tensor]
    """The rejected sequences: the repeated phrase, then the filler when it is on; equal to winner before the cut."""
    cut: torch.Tensor
    """(B,) c, the first masked position."""
    phrase: torch.Tensor
    """(B,) k, the length of the repeated phrase."""


def answer_span(learned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, eos) (B,) of each row's last answer: its first learned position and its last (the end-of-text)."""
    T = learned.shape[1]
    idx = torch.arange(T, device=learned.device).expand_as(learned)
    if not learned.any(1).all():
        raise ConfigError("an R2FT conversation has no answer (no learned token): prepare the data again")
    eos = torch.where(learned, idx, -1).amax(1)  # (B,)
    start = torch.where(~learned & (idx <= eos[:, None]), idx, -1).amax(1) + 1  # after the last gap before it
    return start, eos


def r2ft_batch(
    batch: Batch,
    sp: Specials,
    generator: torch.Generator | None = None,
    max_phrase: int = 14,
    filler_tokens: torch.Tensor | None = None,
    filler_weights: torch.Tensor | None = None,
    filler_rate: float = 0.0,
) -> R2FTBatch:
    """Steps 1-6 of the module docstring on an instruction batch."""
    raw_tokens, raw_learned = batch.tokens, batch.loss_mask
    start, eos = answer_span(raw_learned)  # (B,): before padding is flagged learned
    tokens, _ = with_eos_padding(raw_tokens, raw_learned, sp)  # (B, T): padding → end-of-text
    B, T = tokens.shape
    dev = tokens.device
    idx = torch.arange(T, device=dev)

    # 2. the cut: uniform over [start + 1, eos]
    u = torch.rand(B, 3, generator=generator, device=dev)
    choices = (eos - start).clamp_min(1)  # (B,): an answer holds at least one token and its end-of-text
    cut = (start + 1 + (u[:, 0] * choices).long().clamp_max(choices - 1)).clamp_max(T - 1)
    region = idx >= cut[:, None]  # (B, T)
    inputs = tokens.masked_fill(region, sp.mask_id)

    # 5. the repeated phrase: k ∈ [1, min(max_phrase, c − start)], tiled from c, one end-of-text inside
    most = (cut - start).clamp(1, max_phrase)
    k = 1 + (u[:, 1] * most).long().clamp_max(most - 1)  # (B,)
    offset = (idx[None, :] - cut[:, None]).clamp_min(0) % k[:, None]  # (B, T)
    source = torch.where(region, cut[:, None] - k[:, None] + offset, idx[None, :])
    repeated = tokens.gather(1, source)
    eos_at = cut + (u[:, 2] * (T - cut)).long().clamp_max(T - 1 - cut)  # (B,), in [c, T)
    repeated[torch.arange(B, device=dev), eos_at] = sp.eod_id
    rejected = [repeated]

    # 6. the high-prior filler (optional)
    if filler_rate > 0:
        if filler_tokens is None or filler_weights is None or len(filler_tokens) == 0:
            raise ConfigError("train.r2ft.filler_rate > 0 needs train.r2ft.filler_tokens (and their counts)")
        swap = (torch.rand(B, T, generator=generator, device=dev) < filler_rate) & region
        draws = torch.multinomial(filler_weights.to(dev), B * T, replacement=True, generator=generator)
        rejected.append(torch.where(swap, filler_tokens.to(dev)[draws].view(B, T), tokens))
    return R2FTBatch(inputs, region, tokens, rejected, cut, k)


def continuation_logp(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    region: torch.Tensor,
    targets: list[torch.Tensor],
    mask_id: int,
) -> torch.Tensor:
    """Mean log p(targets) (N, B) over each row's region under the denoiser, from one forward of `inputs`
    (the prefix, then masks over the region): the factorised MDM likelihood of each continuation.

    inputs: (B, T) token ids; region: (B, T) bool, the continuation's positions (masked in inputs);
    targets: N sequences (B, T) read over the region.
    """
    logits = model(inputs, output_mask=region).float()  # (M, V) at the region's positions, row-major
    logits[:, mask_id] = float("-inf")  # the data never holds the mask token
    logp = logits.log_softmax(-1)  # (M, V)
    rows = region.nonzero()[:, 0]  # (M,)
    picked = torch.stack([logp.gather(-1, t[region][:, None]).squeeze(-1) for t in targets])  # (N, M)
    sums = torch.zeros(len(targets), len(inputs), device=inputs.device).index_add_(1, rows, picked)
    return sums / region.sum(1).clamp_min(1)


def r2ft_loss(
    logp_winner: torch.Tensor,
    logp_rejected: torch.Tensor,
    beta_w: float = 1.0,
    beta_l: float = 1.0,
    beta_a: float = 0.1,
    gamma: float = 0.0,
) -> torch.Tensor:
    """The per-example loss (B,) from mean log-probabilities: winner (B,), rejected (B,) or (N, B) (averaged over N)."""
    margin = beta_w * logp_winner - beta_l * logp_rejected - gamma  # (B,) or (N, B)
    preference = -F.logsigmoid(margin)
    if preference.dim() == 2:
        preference = preference.mean(0)
    return preference - beta_a * logp_winner


class R2FT(ConversationObjective):
    """Rejective fine-tuning of an SFT'd MDM; options: train.r2ft."""

    name, causal, exact, decoder = "r2ft", False, False, "mdm"
    loss_name = "R2FT preference loss (not a likelihood)"

    def __init__(self, options: R2ftConfig | None = None):
        o = self.options = options or R2ftConfig()
        if o.filler_rate > 0 and not o.filler_tokens:
            raise ConfigError(
                "train.r2ft.filler_rate > 0 needs train.r2ft.filler_tokens and filler_counts: "
                "unmask finetune r2ft counts them from the data"
            )
        self.filler_tokens = torch.tensor(o.filler_tokens, dtype=torch.long)
        self.filler_weights = torch.tensor(o.filler_counts, dtype=torch.float)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> R2FT:
        return cls(cfg.r2ft)

    def loss(self, model, batch: Batch, sp: Specials, generator=None) -> LossOutput:
        o = self.options
        b = r2ft_batch(batch, sp, generator, o.max_phrase, self.filler_tokens, self.filler_weights, o.filler_rate)
        logp = continuation_logp(model, b.inputs, b.region, [b.winner, *b.rejected], sp.mask_id)  # (1 + N, B)
        per_row = r2ft_loss(logp[0], logp[1:], o.beta_w, o.beta_l, o.beta_a, o.gamma)
        return LossOutput(per_row.sum(), len(batch))

    def check_base(self, base) -> None:
        if base is None or base.objective.name == "sft_mdm":
            return
        fix = (
            "R2FT fine-tunes a masked diffusion model: SFT an 'mdm' base with unmask finetune sft, then start from that"
            if base.objective.causal
            else f"fine-tune it first with unmask finetune sft {base.path} --data DIR, then start R2FT from that run"
        )
        raise ConfigError(
            f"run {base.path} was trained with {base.objective.name}; R2FT starts from an sft_mdm run: {fix}"
        )
