"""EDLM's energy model trained by noise-contrastive estimation (Xu et al. 2024, arXiv 2410.21357, §3.2).

The sampler's denoiser becomes p(x0 | x_t) ∝ p_θ(x0 | x_t) · exp(−E(x0, x_t)), so E only has to learn what
the factorised denoiser p_θ gets wrong about whole sequences. NCE with p_θ itself as the noise distribution
does exactly that: at its optimum −E(x0, x_t) = log p_data(x0 | x_t) − log p_θ(x0 | x_t) (+ const). A batch
x (B, T) of the base run's own pre-training sequences gives, per row b:

    1. t_b ~ U[nce.t_min, nce.t_max]: the sampler's importance-sampling window (sampling.EnergyConfig)
    2. x_t,b: each real token of x_b masked with probability t_b                    (B, T) bool `masked`
    3. x0'_b ~ p_θ(· | x_t,b): one forward of the FROZEN base MDM (train.init_from, never trained), each
       masked position drawn independently (float64 multinomial, temperature 1, mask/pad never drawn)
    4. E(x_b, x_t,b) and E(x0'_b, x_t,b) from one forward of the energy model over the 2B rows [x; x0']
    5. L_b = −log σ(−E(data)) − log σ(E(sample))          (lower E = more likely: data down, samples up)

All noise comes from the loss's generator (seeded per micro-batch by the loop). Row b's sample is drawn
from row b's own x_t and scored against row b's data only: rows are never mixed. The loss is the mean over
sequences (n_targets = B), so validation reports the mean NCE loss per sequence.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from unmask.config import ConfigError, NceConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.objectives.base import LossOutput, Objective, Specials, padding


def nce_loss(energy_data: torch.Tensor, energy_samples: torch.Tensor) -> torch.Tensor:
    """Mean NCE loss over a batch of data energies (B,) and model-sample energies (B,)."""
    return nce_terms(energy_data, energy_samples).mean()


def nce_terms(energy_data: torch.Tensor, energy_samples: torch.Tensor) -> torch.Tensor:
    """Per-row NCE loss (B,): −log σ(−E(data)) − log σ(E(sample)). Energies in, never log-probabilities."""
    return -F.logsigmoid(-energy_data) - F.logsigmoid(energy_samples)


def noise_levels(B: int, options: NceConfig, generator, device) -> torch.Tensor:
    """t_b ~ U[nce.t_min, nce.t_max] (B,), stratified over the batch like pre-training's levels."""
    u = torch.rand((), generator=generator, device=device)
    strata = (u + torch.arange(B, device=device) / B) % 1.0
    return options.t_min + (options.t_max - options.t_min) * strata


@torch.no_grad()
def model_samples(
    denoiser: torch.nn.Module, x0: torch.Tensor, masked: torch.Tensor, sp: Specials, key_padding_mask, generator
) -> torch.Tensor:
    """x0' (B, T): x0 with every `masked` position redrawn, independently, from the denoiser given x_t.

    x_t is x0 with `masked` set to the mask id; one forward; float64 probabilities, mask and pad banned."""
    x_t = x0.masked_fill(masked, sp.mask_id)
    logits = denoiser(x_t, key_padding_mask=key_padding_mask, output_mask=masked).double()  # (M, V), row-major
    logits[:, [sp.mask_id, sp.pad_id]] = float("-inf")
    draws = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)  # (M,)
    return x0.masked_scatter(masked, draws)


def frozen_base(path: str | Path, device) -> torch.nn.Module:
    """The base MDM's last weights, in eval mode, with gradients off: the noise distribution of NCE."""
    from unmask.model import load_model

    model = load_model(Path(path) / "last.safetensors", device)
    return model.requires_grad_(False)


class Energy(Objective):
    """EDLM's energy model by NCE; options: train.nce, and the base run (train.init_from) whose samples are the
    noise."""

    name, causal, exact, decoder = "energy", False, False, "mdm"
    validation = "own_loss"  # the mean NCE loss per sequence: 2 ln 2 ≈ 1.386 is chance
    energy = True
    loss_name = "NCE loss"

    def __init__(self, options: NceConfig | None = None, base: str | None = None):
        self.options, self.base = options or NceConfig(), base
        self._frozen: dict = {}  # the base model per device, loaded on first use

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Energy:
        return cls(cfg.nce, cfg.init_from)

    def loss(self, model, batch: Batch, sp: Specials, generator=None) -> LossOutput:
        x = batch.tokens
        if not self.base:
            raise ConfigError("train.objective=energy needs train.init_from: the MDM run whose samples are NCE's noise")
        B = len(x)
        if x.device not in self._frozen:
            self._frozen[x.device] = frozen_base(self.base, x.device)
        real, key_padding = padding(x, sp.pad_id)  # (B, T)
        t = noise_levels(B, self.options, generator, x.device)  # (B,)
        masked = (torch.rand(x.shape, generator=generator, device=x.device) < t[:, None]) & real  # (B, T)
        samples = model_samples(self._frozen[x.device], x, masked, sp, key_padding, generator)  # (B, T)
        both_padding = None if key_padding is None else key_padding.repeat(2, 1)
        energies = model(torch.cat([x, samples]), key_padding_mask=both_padding, energy_mask=masked.repeat(2, 1))
        return LossOutput(nce_terms(energies[:B], energies[B:]).sum(), B)  # rows 0..B-1 data, B..2B-1 samples

    def n_targets(self, batch: Batch, pad_id: int) -> int:
        """Each sequence weighs the same: the mean NCE loss over the batch."""
        return len(batch)

    def check_base(self, base) -> None:
        if base is None:
            raise ConfigError(f"train.objective={self.name} needs train.init_from: the MDM run it contrasts with")
        if base.objective.decoder != "mdm" or base.objective.energy:
            raise ConfigError(
                f"run {base.path} was trained with {base.objective.name}; an energy model starts from an MDM run"
            )
