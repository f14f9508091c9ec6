"""The autoregressive family: next-token prediction, and AR over N fixed token orderings.

`ar_token_nll` is the one AR log-likelihood of the package: the training loss, validation,
conditional scoring, generative perplexity and EDLM's energy all call it.
"""

from __future__ import annotations

import torch

from unmask.config import ArConfig, OrderingsConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.base import LossOutput, Objective, Specials, padding, token_cross_entropy
from unmask.runtime import model_device, to_device


def ar_token_nll(
    model: torch.nn.Module,
    x: torch.Tensor,
    scored: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
    query_pos: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    inputs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """−log p(x[:, j+1] | x[:, ≤j]) and its logits, read causally from inputs x[:, :-1].

    x: (B, T) tokens. scored: (B, T-1) input positions whose next token is scored; None = all,
    then the results keep their (B, T-1) shape, else (M,) and (M, V) at the M scored positions
    (row-major), and the output projection skips the rest. pos / query_pos / key_padding_mask:
    as Transformer.forward, over the T-1 inputs. dtype: of the softmax (float64 for energies). inputs: (B, T)
    tokens read instead of x (training with corrupted inputs; the targets stay x's).
    """
    read = x if inputs is None else inputs
    logits = model(read[:, :-1], pos=pos, query_pos=query_pos, key_padding_mask=key_padding_mask, output_mask=scored)
    targets = x[:, 1:] if scored is None else x[:, 1:][scored]
    nll = token_cross_entropy(model, logits.flatten(0, -2), targets.flatten(), dtype)
    return nll.view(targets.shape), logits


def left_to_right(x: torch.Tensor, query_is_target: bool) -> dict:
    """Keyword arguments reading x (B, T) left to right; an ordering-trained model's queries carry the next position."""
    if not query_is_target:
        return {}
    pos = torch.arange(x.shape[1] - 1, device=x.device).expand(len(x), -1)
    return {"pos": pos, "query_pos": pos + 1}


def _summed(nll: torch.Tensor, real: torch.Tensor) -> LossOutput:
    """Σ NLL over real targets (padding contributes zero), normalised by their count."""
    return LossOutput(nll.masked_fill(~real[:, 1:], 0).sum(), real[:, 1:])


def ar_loss(
    model: torch.nn.Module, x: torch.Tensor, sp: Specials, generator=None, input_noise: float = 0.0, kind: str = "mask"
) -> LossOutput:
    """Next-token cross-entropy: predict x[:, 1:] from x[:, :-1] under a causal mask.

    Whether x holds padding is read where x lives (training: the host), then x moves to the model's device.
    input_noise > 0 (training only): that share of the real input tokens is corrupted (corrupt_inputs)."""
    real, kpm = padding(x, sp.pad_id)
    device = model_device(model)
    inputs = None if not input_noise else to_device(corrupt_inputs(x, real, input_noise, kind, sp, generator), device)
    if kpm is None:  # a full batch: every target scored, SDPA's causal kernel
        nll, _ = ar_token_nll(model, to_device(x, device), inputs=inputs)  # (B, T-1)
        return LossOutput(nll.sum(), real[:, 1:])
    kpm = to_device(kpm, device)
    nll, _ = ar_token_nll(model, to_device(x, device), key_padding_mask=kpm[:, :-1], inputs=inputs)
    return LossOutput(nll.masked_fill(~kpm[:, 1:], 0).sum(), real[:, 1:])


def corrupt_inputs(
    x: torch.Tensor, real: torch.Tensor, rate: float, kind: str, sp: Specials, generator: torch.Generator | None
) -> torch.Tensor:
    """x with each real token replaced, with probability `rate`, by the mask id ('mask') or by a token drawn from
    the batch's real tokens, i.e. from its unigram distribution ('random'): AR's input-noise regularisation
    (arXiv 2510.04071). Only what the model reads changes; the targets are x's."""
    hit = (torch.rand(x.shape, generator=generator, device=x.device) < rate) & real
    if kind == "mask":
        return x.masked_fill(hit, sp.mask_id)
    pool = x[real]
    pick = torch.randint(len(pool), x.shape, generator=generator, device=x.device)
    return torch.where(hit, pool[pick], x)


def make_orderings(n: int, seq_len: int, seed: int) -> torch.Tensor:
    """(n, T): the identity and n-1 fixed random permutations that keep token 0 first."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.arange(seq_len)]
    for _ in range(n - 1):
        rows.append(torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(seq_len - 1, generator=g)]))
    return torch.stack(rows)


def ar_orderings_loss(
    model: torch.nn.Module, x: torch.Tensor, sp: Specials, generator=None, orderings: torch.Tensor | None = None
) -> LossOutput:
    """AR over N fixed token orderings (2507.15857, ablation).

    Each sequence draws one ordering σ; the model reads x_σ(0..T-2) causally and
    predicts x_σ(1..T-1). Keys carry their own position σ(j) through RoPE.
    The target position is made known by rotating each *query* with the position
    of the token it must predict, σ(i+1): attention scores then depend on the
    distance from the target to every token already read. This adds no
    parameters, so the model is the same Transformer as for `ar` and `mdm`.
    """
    B, T = x.shape
    assert orderings is not None and orderings.shape[1] == T, "orderings must be (N, T)"
    pick = torch.randint(len(orderings), (B,), generator=generator, device=x.device)
    perm = orderings.to(x.device)[pick]  # (B, T)
    xp = x.gather(1, perm)
    real, kpm = padding(xp, sp.pad_id)
    nll, _ = ar_token_nll(
        model, xp, pos=perm[:, :-1], query_pos=perm[:, 1:], key_padding_mask=None if kpm is None else kpm[:, :-1]
    )
    return _summed(nll, real)


def _ar_targets(x: torch.Tensor, pad_id: int) -> int:
    """Every real token but the first of each sequence (which is never padding)."""
    return int((x != pad_id).sum()) - x.shape[0]


class AR(Objective):
    """Next-token prediction; options: train.ar (input noise)."""

    name, causal, exact, decoder = "ar", True, True, "ar"
    host_batches = True
    scores_first_token = False

    def __init__(self, options: ArConfig | None = None):
        self.options = options or ArConfig()

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> AR:
        return cls(cfg.ar)

    def loss(self, model, batch: Batch, sp, generator=None) -> LossOutput:
        if not self.options.input_noise:
            return ar_loss(model, batch.tokens, sp, generator)
        return ar_loss(model, batch.tokens, sp, generator, self.options.input_noise, self.options.input_noise_kind)

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        return _ar_targets(batch.tokens, pad_id)

    def validation_passes(self, model, batches, passes, generator, sp, max_batch_tokens) -> torch.Tensor:
        """The exact NLL: one pass reading clean inputs whatever the training noise."""

        def clean(model, batch: Batch, sp, generator=None) -> LossOutput:
            return ar_loss(model, batch.tokens, sp, generator)

        return self.loss_pass(clean, model, batches, generator, sp)[None]


class AROrderings(Objective):
    """AR over N fixed token orderings; options: train.orderings, and the run's seed (it fixes the orderings)."""

    name, causal, exact, decoder = "ar_orderings", True, True, "ar"
    query_is_target = True
    scores_first_token = False

    def __init__(self, options: OrderingsConfig | None = None, seed: int = 0):
        self.options, self.seed = options or OrderingsConfig(), seed
        self._orderings: dict[int, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> AROrderings:
        return cls(cfg.orderings, cfg.seed)

    def orderings(self, seq_len: int) -> torch.Tensor:
        """(n, seq_len): the run's orderings, built once per length."""
        if seq_len not in self._orderings:
            self._orderings[seq_len] = make_orderings(self.options.n, seq_len, self.seed)
        return self._orderings[seq_len]

    def loss(self, model, batch: Batch, sp, generator=None) -> LossOutput:
        x = batch.tokens
        return ar_orderings_loss(model, x, sp, generator, self.orderings(x.shape[1]))

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        return _ar_targets(batch.tokens, pad_id)

    def validation_passes(self, model, batches, passes, generator, sp, max_batch_tokens) -> torch.Tensor:
        """The exact NLL, read left to right: one pass in the identity ordering."""
        identity = self.orderings(batches[0].tokens.shape[1])[:1]

        def left_to_right(model, batch: Batch, sp, generator=None) -> LossOutput:
            return ar_orderings_loss(model, batch.tokens, sp, generator, identity)

        return self.loss_pass(left_to_right, model, batches, generator, sp)[None]
