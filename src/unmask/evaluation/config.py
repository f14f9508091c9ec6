"""LikelihoodConfig: how MDM continuations are scored (torch-free, so the CLI builds its options fast)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from unmask.config import MAX_MC_PASSES, check

Estimator = Literal["stratified", "random_t", "chain_l2r", "chain_confidence"]
ESTIMATORS = ("stratified", "random_t", "chain_l2r", "chain_confidence")


@dataclass
class LikelihoodConfig:
    """How MDM continuations are scored (AR runs are always exact); see unmask.evaluation.conditional."""

    estimator: Estimator = "stratified"
    """MDM estimator: 'stratified' (LLaDA count estimator), 'random_t' (plain ELBO), 'chain_l2r', 'chain_confidence'."""
    mc_samples: int = 128
    """Monte Carlo samples per continuation (stratified, random_t); stratified uses 1 for single-token answers."""
    cfg_scale: float = 0.0
    """Unsupervised classifier-free guidance w (MDM): logits = u + (w+1)(c − u); 0 = off."""
    seed: int = 0
    """Seed of the MDM noise (combined with the tokens of each request)."""
    eps: float = 1e-3
    """random_t: mask probability p = (1 − eps) t + eps, as in training."""
    max_batch_tokens: int = 16_384
    """Memory budget: tokens per forward pass."""

    def __post_init__(self) -> None:
        check(
            self.estimator in ESTIMATORS,
            f"likelihood.estimator={self.estimator!r}: must be one of {', '.join(ESTIMATORS)}",
        )
        check(
            1 <= self.mc_samples <= MAX_MC_PASSES,
            f"likelihood.mc_samples={self.mc_samples}: must be in [1, {MAX_MC_PASSES}]",
        )
        check(0 <= self.cfg_scale < math.inf, f"likelihood.cfg_scale={self.cfg_scale}: must be a finite number >= 0")
        check(0 <= self.seed < 2**63, f"likelihood.seed={self.seed}: must be in [0, 2**63)")
        check(0.0 < self.eps < 1.0, f"likelihood.eps={self.eps}: must be in (0, 1)")
        check(self.max_batch_tokens >= 1, f"likelihood.max_batch_tokens={self.max_batch_tokens}: must be >= 1")
