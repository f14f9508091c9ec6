"""The Objective class: everything the rest of unmask needs to know about a training objective.

Training, validation, evaluation and sampling read its attributes and call its methods instead of comparing
objective names, so a new objective is one small subclass in one module, registered with `register`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from unmask.config import ConfigError, TrainConfig
from unmask.data.batch import Batch


@dataclass
class LossOutput:
    loss_sum: torch.Tensor
    """Sum over tokens of the (weighted) negative log-likelihood, float32 scalar."""
    scored: torch.Tensor | int
    """The tokens the sum is normalised by: a bool mask, counted only when asked (on a GPU, counting waits for
    the device: the training loop counts on its CPU copy instead), or their number."""

    @property
    def n_tokens(self) -> int:
        return self.scored if isinstance(self.scored, int) else int(self.scored.sum())

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_sum / max(self.n_tokens, 1)


@dataclass(frozen=True)
class Specials:
    mask_id: int
    pad_id: int
    eod_id: int | None = None
    """End-of-text: fine-tuning objectives pad answers with it; pre-training never needs it."""


LossFn = Callable[[torch.nn.Module, Batch, Specials, "torch.Generator | None"], LossOutput]
"""loss(model, batch, specials, generator) -> LossOutput."""


class Objective:
    """A training objective: the class says what it is (attention, decoder, likelihood or bound), an instance
    holds its own options (`from_config` picks them out of the run's TrainConfig) and computes.

    Subclasses set the class attributes and define `loss` and `n_targets`; the rest has defaults.
    `unmask.objectives.get_objective(name)` gives an instance with default options, enough for readers of
    the class-level facts; `objective_for(cfg)` gives a run's configured one.
    """

    name: ClassVar[str]
    causal: ClassVar[bool]
    """Causal attention (the AR family) or bidirectional (MDM): the model's one switch."""
    exact: ClassVar[bool]
    """Validation gives the exact NLL (one deterministic pass) or an upper bound on it (MC passes)."""
    decoder: ClassVar[Literal["ar", "mdm"]]
    """Which sampler decodes a run: left to right with a KV cache ('ar') or by unmasking ('mdm')."""
    query_is_target: ClassVar[bool] = False
    """The queries carry the position of the token to predict (ar_orderings); decoders pass it on."""
    validation: ClassVar[Literal["tokens", "own_loss"]] = "tokens"
    """What validation_loss scores: 'tokens', every real token but each sequence's first, the same for every
    objective (the study's protocol); or 'own_loss', the training loss normalised by n_targets, for batches that
    are not plain sequences (fine-tuning's held-out conversations) or a loss that is no likelihood (R2FT, NCE)."""
    scores_first_token: ClassVar[bool] = True
    """'tokens' validation: the estimator (`validation_passes`) also scores each sequence's first token, as K passes
    of a training loss over every real token do; AR and MDM's estimators take it as context."""
    from_ar: ClassVar[bool] = False
    """Starts from an AR run's weights (AR -> diffusion adaptation, `unmask finetune adapt`): the attention turns
    bidirectional and the logits keep the AR model's shift (ModelConfig.shift_logits, Dream's recipe)."""
    energy: ClassVar[bool] = False
    """The model ends in a scalar energy head (EDLM's E(x0, x_t), ModelConfig.energy_head): its runs weight an
    MDM's samples (`unmask sample --energy_run`) and are never decoded themselves. Its loss samples from the base
    run (train.init_from) all along, so a run needs one and resumes only while it is unchanged."""
    loss_name: ClassVar[str | None] = None
    """What the validation loss is, when it is not a likelihood (default: NLL or ELBO, from `exact`)."""
    conversations: ClassVar[bool] = False
    """The run trains on an instruction folder's templated conversations (batches with a loss mask: unmask finetune
    prepare), not on a token data folder's sequences (unmask prepare)."""
    host_batches: ClassVar[bool] = False
    """The training loss takes its batch and generator on the host and moves to the model's device only what the
    forward needs: its noise, masks and the positions it scores, whose number sets tensor shapes, are known without
    waiting for the device (no host-device sync in a step). Otherwise the loop moves the batch first and the
    generator is the device's."""

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Objective:
        """The objective of a run, given its own options group of `cfg` (none by default)."""
        return cls()

    def loss(
        self, model: torch.nn.Module, batch: Batch, sp: Specials, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The training loss of a batch: its tokens, with pad_id as padding, and for conversations its loss mask."""
        raise NotImplementedError

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        """Tokens a batch's loss is normalised by, known before the forward pass (so gradient accumulation can
        normalise each micro-batch by the whole step's count)."""
        raise NotImplementedError

    def real_tokens(self, batch: Batch, pad_id: int) -> int:
        """The tokens a batch holds, counted as seen: those != pad_id."""
        return int((batch.tokens != pad_id).sum())

    def validation_passes(
        self, model: torch.nn.Module, batches: list, passes: int, generator: torch.Generator, sp: Specials,
        max_batch_tokens: int,
    ) -> torch.Tensor:  # fmt: skip
        """The validation estimator: (K,) summed loss of each of K passes over `batches` (on the CPU): by
        default K passes of the training loss, or one for an exact objective (its loss draws no noise)."""
        if self.exact:
            return self.loss_pass(self.loss, model, batches, generator, sp)[None]
        return torch.stack([self.loss_pass(self.loss, model, batches, generator, sp) for _ in range(passes)])

    @staticmethod
    def loss_pass(loss: LossFn, model: torch.nn.Module, batches: list, generator, sp: Specials) -> torch.Tensor:
        """One pass of `loss` over `batches`, each moved to the model's device: its summed loss."""
        device = next(model.parameters()).device
        return sum(loss(model, batch.to(device), sp, generator).loss_sum for batch in batches)

    def check_base(self, base) -> None:
        """Refuse, in one line, a base run (an unmask.run.Run, train.init_from) this objective cannot start from;
        base None: a run from scratch. By default the base must share the attention direction and read left to
        right (an ar_orderings model's queries mean something else)."""
        if base is None:
            return
        if base.objective.causal != self.causal or base.objective.query_is_target:
            want = "a left-to-right AR" if self.causal else "an MDM (bidirectional)"
            raise ConfigError(
                f"train.objective={self.name} fine-tunes {want} run, but {base.path} is a "
                f"{base.objective.name} run; pick a base run of that kind"
            )

    @property
    def bound_name(self) -> str:
        if self.loss_name:
            return self.loss_name
        return "NLL" if self.exact else "ELBO (upper bound on NLL)"

    def noise_device(self, device: torch.device) -> torch.device:
        """Where the training loss's generator draws: the host for host_batches objectives, else the device."""
        return torch.device("cpu") if self.host_batches else device

    def context_limit(self, seq_len: int) -> int:
        """Tokens one scoring forward can cover: an AR model reads seq_len inputs and predicts one more,
        unless its queries sit one position ahead (query_is_target); a bidirectional model reads seq_len."""
        return seq_len + 1 if self.decoder == "ar" and not self.query_is_target else seq_len

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def padding(x: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(real-token mask, key padding mask or None when the batch has no padding)."""
    real = x != pad_id
    # one bool per micro-batch, so full batches keep the fast SDPA path: free on the host, a sync on a device
    return real, (None if bool(real.all()) else real)


def token_cross_entropy(
    model: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype = torch.float32,
    excluded_id: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Per-token cross-entropy (N,) of logits (N, V) in `dtype`, the class excluded_id given no mass.

    Eager: the logits are copied to `dtype` and torch's softmax kernels run on the copy. Under a compiled model on
    a GPU the loss head is compiled too, so that inductor's fused log-softmax reads the bf16 logits once instead
    of materialising fp32 copies and their gradients: at 125M x 1024 tokens on an H200 the eager head was ~10 ms
    of AR's 41 ms step (softmax forward and backward, two fp32 copies), the gap to the reference GPT.
    """
    if logits.is_cuda and hasattr(model, "_orig_mod"):
        return _compiled_cross_entropy()(logits, targets, dtype, excluded_id)
    logits = logits.to(dtype)
    if excluded_id is not None:
        logits[:, excluded_id] = float("-inf")
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


@functools.cache
def _compiled_cross_entropy() -> Callable:
    return torch.compile(_out_of_place_cross_entropy, dynamic=True)  # built on first use: importing dynamo costs


def _out_of_place_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype, excluded_id: int | None
) -> torch.Tensor:
    logits = logits.to(dtype)
    if excluded_id is not None:  # out of place: the logits are a graph input
        excluded = torch.arange(logits.shape[-1], device=logits.device) == excluded_id
        logits = logits.masked_fill(excluded, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none")
