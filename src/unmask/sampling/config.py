"""SamplerConfig: every decoding option of `unmask sample`, grouped by family (CLI and Python API).

    SamplerConfig                  temperature, top_k, top_p (shared with AR decoding), cfg_scale
      .commit  CommitConfig        which predictions are committed: method, steps, blocks, threshold
      .cache   CacheConfig         Fast-dLLM KV cache, MDLM's no-change cache
      .conv    ConvConfig          convolutional decoding (2509.15188)
      .energy  EnergyConfig        EDLM importance sampling with an AR energy

Flat names from before the grouping (`method`, `block_length`, `cache`, `conv_kernel`, `edlm_*`, ...)
still work through `SamplerConfig.from_flat` (and, on the command line, `--sampler.method` etc.,
rewritten with a note); `FLAT_NAMES` is the one table of them. Contradictory settings fail here,
before a model is loaded, with one line that names the option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from unmask.config import check, from_dict

METHODS = ("ancestral", "low_confidence", "random", "threshold")
MAX_STEPS = 2**20
MAX_LOGITS = 2**32
"""The most logits (rows x positions x vocabulary) one forward pass of a request may produce (16 GiB of float32)."""
STEPS_PER_TOKEN = 16
"""A generation gets at most this many denoising steps per masked token (more only repeats empty steps)."""


@dataclass
class CommitConfig:
    """Which predictions a step commits (the MDM method)."""

    method: Literal["ancestral", "low_confidence", "random", "threshold"] = "low_confidence"
    """ancestral (MDLM), low_confidence (LLaDA), random remasking, threshold (Fast-dLLM parallel)."""
    steps: int | None = None
    """Denoising steps over the whole generation; None = one token per step. Not used by threshold."""
    confidence: Literal["prob", "margin", "entropy"] = "prob"
    """Confidence of a prediction: prob of the chosen token, top-1 minus top-2 prob, or exp(-entropy)."""
    block_length: int | None = None
    """Semi-autoregressive blocks of this many tokens, decoded left to right; None = one block."""
    threshold: float = 0.9
    """threshold: commit every masked token of the block whose confidence exceeds this (at least one per step)."""

    def __post_init__(self) -> None:
        check(self.method in METHODS, f"method={self.method!r}: choose one of {', '.join(METHODS)}")
        check(
            self.steps is None or 1 <= self.steps <= MAX_STEPS,
            f"steps={self.steps}: must be in [1, {MAX_STEPS}] (or None)",
        )
        check(
            self.steps is None or self.method != "threshold",
            "steps: not used by method threshold (it commits every token above --threshold); leave it unset",
        )
        check(self.block_length is None or self.block_length >= 1, f"block_length={self.block_length}: must be >= 1")
        check(0 < self.threshold <= 1, f"threshold={self.threshold}: must be in (0, 1]")


@dataclass
class CacheConfig:
    """What a step may reuse from earlier steps."""

    kv: Literal["none", "prefix", "dual"] = "none"
    """Fast-dLLM approximate KV cache, refreshed at each block: of the prefix, or of prefix and suffix (dual)."""
    skip_unchanged: bool = True
    """Reuse the last model output when no token changed in a step (MDLM's no-change cache; exact)."""


@dataclass
class ConvConfig:
    """Convolutional decoding: scale each position's score by g(c · committed tokens within the kernel)."""

    enabled: bool = False
    """Turn convolutional decoding on."""
    g: Literal["tanh", "linear", "none"] = "tanh"
    """Gate g(c*u): tanh(c*u), linear c*u/kernel, or none (s = 1, an ablation that equals no conv)."""
    kernel: int = 33
    """Window K (odd): unmasked positions counted within K//2 on each side."""
    scale: float = 1.0
    """Scale c: 1 makes tanh a near 0/1 gate (decode outward from committed text); smaller = graded."""

    def __post_init__(self) -> None:
        check(self.kernel >= 1 and self.kernel % 2 == 1, f"conv_kernel={self.kernel}: must be odd >= 1")
        check(0 < self.scale < math.inf, f"conv_scale={self.scale}: must be a finite number > 0")


@dataclass
class EnergyConfig:
    """EDLM: importance sampling of the ancestral x0 with an AR energy (`--energy_run`)."""

    candidates: int = 2
    """Candidate sequences drawn per step inside the window."""
    t_start: float = 1.0
    """Window: importance sampling at steps whose time t satisfies t_end <= t <= t_start."""
    t_end: float = 0.8
    """Window end (t goes from 1 to 0 during sampling)."""
    temperature: float = 1.0
    """Weights softmax(-E / temperature) over the candidates."""

    def __post_init__(self) -> None:
        check(2 <= self.candidates <= 1024, f"edlm_candidates={self.candidates}: must be in [2, 1024]")
        check(
            0 <= self.t_end <= self.t_start <= 1,
            f"edlm_t_end={self.t_end}, edlm_t_start={self.t_start}: need 0 <= t_end <= t_start <= 1",
        )
        check(0 < self.temperature < math.inf, f"edlm_temperature={self.temperature}: must be a finite number > 0")


# Flat name (before the grouping, and lm-eval's model_args) → (group, field); group None = SamplerConfig itself.
FLAT_NAMES: dict[str, tuple[str | None, str]] = {
    "temperature": (None, "temperature"),
    "top_k": (None, "top_k"),
    "top_p": (None, "top_p"),
    "cfg_scale": (None, "cfg_scale"),
    "method": ("commit", "method"),
    "steps": ("commit", "steps"),
    "confidence": ("commit", "confidence"),
    "block_length": ("commit", "block_length"),
    "threshold": ("commit", "threshold"),
    "cache": ("cache", "kv"),
    "skip_unchanged": ("cache", "skip_unchanged"),
    "conv": ("conv", "enabled"),
    "conv_g": ("conv", "g"),
    "conv_kernel": ("conv", "kernel"),
    "conv_scale": ("conv", "scale"),
    "edlm_candidates": ("energy", "candidates"),
    "edlm_t_start": ("energy", "t_start"),
    "edlm_t_end": ("energy", "t_end"),
    "edlm_temperature": ("energy", "temperature"),
}
AR_OPTIONS = ("temperature", "top_k", "top_p")
"""The options that apply to AR runs."""


@dataclass
class SamplerConfig:
    """How to decode: the token distribution (AR and MDM), and the MDM families of options."""

    temperature: float = 0.0
    """Sampling temperature of each token (float64 Gumbel-max); 0 = argmax."""
    top_k: int = 0
    """Keep only the k most likely tokens before sampling; 0 = all."""
    top_p: float = 1.0
    """Keep the smallest set of tokens with probability >= top_p (nucleus); 1 = all."""
    cfg_scale: float = 0.0
    """Unsupervised classifier-free guidance w: logits u + (1+w)(c - u), u = prompt replaced by masks; 0 = off."""
    commit: CommitConfig = field(default_factory=CommitConfig)
    """Which predictions are committed at each step (method, steps, blocks, threshold)."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """KV and no-change caches."""
    conv: ConvConfig = field(default_factory=ConvConfig)
    """Convolutional decoding."""
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    """EDLM with an AR energy run."""

    def __post_init__(self) -> None:
        check(0 <= self.temperature < math.inf, f"temperature={self.temperature}: must be a finite number >= 0")
        check(self.top_k >= 0, f"top_k={self.top_k}: must be >= 0 (0 = off)")
        check(0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1]")
        check(0 <= self.cfg_scale < math.inf, f"cfg_scale={self.cfg_scale}: must be a finite number >= 0 (0 = off)")
        check(
            self.cfg_scale == 0 or self.cache.kv == "none",
            f"cfg_scale={self.cfg_scale} with cache={self.cache.kv}: guidance needs full passes; use cache none",
        )

    @classmethod
    def from_flat(cls, **options: Any) -> SamplerConfig:
        """From the flat names of FLAT_NAMES, e.g. from_flat(method="threshold", block_length=32, cache="dual")."""
        unknown = sorted(set(options) - set(FLAT_NAMES))
        check(not unknown, f"unknown sampler option(s) {unknown}; choose from {', '.join(FLAT_NAMES)}")
        groups: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in options.items():
            group, key = FLAT_NAMES[name]
            (top if group is None else groups.setdefault(group, {}))[key] = value
        nested = {g: from_dict(GROUPS[g], values) for g, values in groups.items()}  # types checked: one clear line
        return from_dict(cls, {**top, **nested})

    def flat(self) -> dict[str, Any]:
        """Every option under its flat name (the inverse of from_flat)."""
        return {name: getattr(self if g is None else getattr(self, g), key) for name, (g, key) in FLAT_NAMES.items()}

    def mdm_only_options_set(self) -> list[str]:
        """Flat names of the options that differ from their defaults and apply to MDM runs only."""
        default, mine = SamplerConfig().flat(), self.flat()
        return sorted(k for k, v in mine.items() if v != default[k] and k not in AR_OPTIONS)

    def check_energy(self) -> None:
        """EDLM's extra constraints, checked when an energy run is given."""
        method = self.commit.method
        check(method == "ancestral", f"an energy run (EDLM) needs method ancestral, not {method}")
        check(self.commit.block_length is None, "an energy run (EDLM) scores whole sequences: leave block_length unset")
        check(self.temperature > 0, "an energy run (EDLM) needs temperature > 0 (argmax candidates are all equal)")

    def check_fits(
        self, seq_len: int, vocab_size: int, rows: int = 1, positions: int | None = None, energy: bool = False
    ) -> None:
        """The bounds that follow from the model, checked before anything is allocated: a block or a conv window
        no longer than the sequence allows, and the logits of one forward pass over `rows` sequences of
        `positions` tokens (default seq_len; times the EDLM candidates with an energy run) within MAX_LOGITS."""
        c, conv = self.commit, self.conv
        check(
            c.block_length is None or c.block_length <= seq_len,
            f"block_length={c.block_length}: must be <= the model's seq_len {seq_len}",
        )
        widest = 2 * seq_len - 1  # centred on any position, this window already covers the whole sequence
        check(
            not conv.enabled or conv.kernel <= widest,
            f"conv_kernel={conv.kernel}: must be <= {widest} (2 x seq_len {seq_len} - 1 covers the whole sequence)",
        )
        candidates = self.energy.candidates if energy else 1
        positions = seq_len if positions is None else positions
        logits = rows * candidates * positions * vocab_size
        check(
            logits <= MAX_LOGITS,
            f"{rows} sequence(s)" + (f" x {candidates} EDLM candidates" if energy else "")
            + f" x {positions} positions x vocabulary {vocab_size} = {logits:,} logits per forward pass: over "
            f"{MAX_LOGITS:,}; ask for fewer samples",
        )  # fmt: skip

    def blocks(self, gen_len: int, n_masked: int) -> tuple[int, int]:
        """(number of blocks, steps per block) for a generation of gen_len appended tokens.

        n_masked: the most masked positions of any sequence (the default step count: one per step).
        """
        c = self.commit
        if c.block_length is None:
            n_blocks = 1
        else:
            check(gen_len > 0, "block_length: needs an appended generation (--length > 0)")
            check(
                gen_len % c.block_length == 0,
                f"block_length={c.block_length} must divide the generation length {gen_len}",
            )
            n_blocks = gen_len // c.block_length
        if c.method == "threshold":
            return n_blocks, 0
        steps = c.steps or -(-max(n_masked, 1) // n_blocks) * n_blocks
        limit = STEPS_PER_TOKEN * max(n_masked, 1)
        check(steps <= limit, f"steps={steps}: at most {limit} ({STEPS_PER_TOKEN} per masked token) for this request")
        check(steps % n_blocks == 0, f"steps={steps} must be a multiple of the number of blocks {n_blocks}")
        return n_blocks, steps // n_blocks


GROUPS = {"commit": CommitConfig, "cache": CacheConfig, "conv": ConvConfig, "energy": EnergyConfig}
