"""Typed configs shared by the CLI and the Python API.

Each dataclass groups one concern; every field carries a one-line docstring that
`unmask CMD --help` shows. `__post_init__` rejects impossible values by naming the
field and what is allowed, so a typo in a YAML file fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MAX_SEQ_LEN = 2**20
"""The longest sequence a data folder or model may declare (a typo must not allocate the machine away)."""
MAX_LAYERS = 1024
"""More blocks than any published model has (the largest have ~128): a config past it is damaged, and building
it (even on the meta device) would hang the import or load that reads it."""
MAX_MC_PASSES = 2**16
"""The most Monte Carlo passes / samples an estimate may ask for (likewise)."""

# name: (n_layer, d_model, n_head). The names of the paper-scale rows are total
# parameters with the GPT-2 vocabulary padded to 50304 (tested in tests/test_model.py).
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 64, 4),  # CPU tests
    "demo": (3, 96, 4),  # 0.43M at vocab 1024: the CPU demo
    "demo4x": (4, 160, 4),  # 1.23M non-embedding parameters, 3.7x the demo's 0.33M: the studies' second CPU size
    "7M": (3, 128, 4),
    "30M": (6, 384, 6),  # 11M at vocab 1024: the second size of `unmask bench train --against reference`
    "14M": (8, 192, 4),
    "35M": (6, 448, 7),
    "85M": (10, 640, 10),
    "125M": (12, 768, 12),  # GPT-2 small: the MFU target of `unmask bench train --device cuda`
    "170M": (12, 896, 14),
    "350M": (24, 1024, 16),
    "700M": (22, 1536, 16),
    "1.5B": (22, 2304, 18),
    "2.5B": (30, 2560, 20),
}


class UnmaskError(Exception):
    """A user-facing failure, shown as one line by the CLI (never a traceback)."""


class ConfigError(UnmaskError, ValueError):
    """A configuration or input error: nothing was done (CLI exit code 2)."""


class WriteError(UnmaskError):
    """The operating system refused to write a file (disk full, no permission, ...); nothing half-written was
    left behind (CLI exit code 1: the command failed, the input was fine)."""


def os_reason(e: BaseException | None) -> str | None:
    """The operating system's own words for a failed read or write ("No space left on device"), found in the
    exception, its causes or its message (torch's zip writer and safetensors wrap the OSError); None if none."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and isinstance(e.errno, int) and e.errno > 0:
            return os.strerror(e.errno)
        found = re.search(r"(?:os error|errno) (\d+)", str(e), re.IGNORECASE)
        if found and 0 < int(found[1]) < 4096:
            return os.strerror(int(found[1]))
        e = e.__cause__ or e.__context__
    return None


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """Corpus → tokenizer → token shards with an exact unique-token budget."""

    inputs: list[str] = field(default_factory=list)
    """Text/JSONL/parquet files or folders, or HF datasets saved on disk; empty = embedded Jane Austen corpus."""
    text_field: str = "text"
    """Field holding the document text in JSONL, parquet and HF datasets."""
    doc_split: str = "auto"
    """Plain text into documents: 'auto' (blank lines for a single file, else 'file'), 'file' (one document per
    file), 'blank' (blank lines), or a separator line. Validation draws whole documents, so it needs several."""
    tokenizer: str | None = None
    """Existing tokenizer.json to load (a mask token is added if missing); None = train a byte-level BPE."""
    vocab_size: int = 1024
    """Vocabulary size of the trained BPE, special tokens included."""
    tokenizer_train_bytes: int | None = None
    """Train the BPE on the first this many bytes of training text; None = on the text the U unique tokens
    cover (the tokenizer counts against the data budget), at most 64 MB."""
    unique_tokens: int = 25_000
    """U: exact number of unique training tokens (documents in order, the last one truncated)."""
    val_tokens: int = 16_384
    """Exact number of validation tokens (fewer only if the corpus runs out)."""
    val_fraction: float = 0.1
    """Each document goes to validation with this probability (seeded), the rest to training."""
    seq_len: int = 64
    """Length of the fixed training sequences the token stream is chunked into."""
    seed: int = 0
    """Seed of the train/validation assignment."""

    def __post_init__(self) -> None:
        check(
            260 <= self.vocab_size <= 2**24,
            f"data.vocab_size={self.vocab_size}: must be in [260, 2**24] (256 bytes + specials; uint32 shards)",
        )
        check(
            self.tokenizer_train_bytes is None or self.tokenizer_train_bytes > 0,
            f"data.tokenizer_train_bytes={self.tokenizer_train_bytes}: must be > 0 (the BPE needs text to learn from)",
        )
        check(0 <= self.seed < 2**63, f"data.seed={self.seed}: must be in [0, 2**63)")
        check(bool(self.text_field), "data.text_field: must name a field, e.g. 'text'")
        check(self.unique_tokens > 0, f"data.unique_tokens={self.unique_tokens}: must be > 0")
        check(self.val_tokens >= 0, f"data.val_tokens={self.val_tokens}: must be >= 0")
        check(0.0 <= self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction}: must be in [0, 1)")
        check(
            self.val_fraction > 0 or self.val_tokens == 0,
            "data.val_fraction=0 puts no document in validation: set data.val_tokens=0 too",
        )
        check(2 <= self.seq_len <= MAX_SEQ_LEN, f"data.seq_len={self.seq_len}: must be in [2, {MAX_SEQ_LEN}]")
        check(
            self.doc_split != "" and "\n" not in self.doc_split,
            "data.doc_split: must be 'auto', 'file', 'blank' or a non-empty separator line (no newline inside)",
        )


@dataclass
class ModelConfig:
    """The one Transformer shared by AR and MDM (only `causal` differs)."""

    size: str | None = None
    """A row of unmask.config.SIZES; when set it overrides n_layer, d_model and n_head."""
    n_layer: int = 3
    """Number of Transformer blocks."""
    d_model: int = 96
    """Residual stream width."""
    n_head: int = 4
    """Attention heads (d_model must divide evenly)."""
    vocab_size: int = 1024
    """Embedding rows; set from the data (tokenizer size rounded up to a multiple of 64)."""
    seq_len: int = 64
    """Longest sequence the RoPE table covers; set from the data."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches."""
    init_std: float = 0.02
    """Std of the normal initialisation of weight matrices (residual projections also / sqrt(2 n_layer))."""
    rope_base: float = 10_000.0
    """RoPE frequency base."""
    local_prior: float = 0.0
    """A fixed attention prior on head 0 of every layer: bias 0 on the two adjacent positions, -local_prior on
    every other key (so a masked position can read its neighbours from step 0; see docs/study.md); 0 = off."""
    qk_norm: bool = False
    """RMSNorm on each head's queries and keys before RoPE (logits O(1) at any init); false = the original model."""
    n_kv_head: int | None = None
    """Key/value heads shared by groups of query heads (grouped-query attention: Llama 3, Qwen2); None = n_head."""
    d_mlp: int | None = None
    """MLP hidden width; None = 8/3·d_model rounded up to 32 (SwiGLU) or 4·d_model (GELU)."""
    mlp: str = "swiglu"
    """'swiglu' (gate, up, down) or 'gelu' (up, tanh-approximated GELU, down: GPT-2)."""
    norm: str = "rmsnorm"
    """'rmsnorm' or 'layernorm' (GPT-2; with a bias when `bias`)."""
    norm_eps: float = 1e-6
    """The epsilon of every RMSNorm/LayerNorm of the residual stream (open checkpoints use 1e-5 or 1e-6)."""
    positions: str = "rope"
    """'rope' (rotary, base rope_base) or 'learned' (an embedding row per position, seq_len rows: GPT-2)."""
    rope_scaling: dict[str, float] = field(default_factory=dict)
    """Llama 3's RoPE frequency scaling: keys factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings; {} = none."""
    bias: bool = False
    """Biases on every linear layer of the blocks (GPT-2)."""
    qkv_bias: bool = False
    """Biases on the query, key and value projections only (Qwen2, Dream)."""
    tie_embeddings: bool = True
    """The output projection is the input embedding; false = its own `head` matrix (Llama, LLaDA)."""
    shift_logits: bool = False
    """Dream's convention (an MDM adapted from an AR model): the output at position i predicts token i + 1, so the
    logits of token j are read at j - 1 (token 0's at its own position). Decoded without a KV cache."""
    causal: bool = True
    """Causal attention (AR) or bidirectional (MDM); set from the objective."""
    energy_head: bool = False
    """A scalar head on the pooled final hidden state (EDLM's energy E(x0, x_t)); set from the objective."""

    def __post_init__(self) -> None:
        if self.size is not None:
            check(self.size in SIZES, f"model.size={self.size!r}: must be one of {sorted(SIZES)} or null")
            self.n_layer, self.d_model, self.n_head = SIZES[self.size]
        check(self.n_layer > 0 and self.d_model > 0 and self.n_head > 0, "model: n_layer, d_model, n_head must be > 0")
        check(
            self.n_layer <= MAX_LAYERS, f"model.n_layer={self.n_layer}: must be <= {MAX_LAYERS}; the config is damaged"
        )
        check(1 <= self.vocab_size <= 2**32, f"model.vocab_size={self.vocab_size}: must be in [1, 2**32]")
        check(1 <= self.seq_len <= MAX_SEQ_LEN, f"model.seq_len={self.seq_len}: must be in [1, {MAX_SEQ_LEN}]")
        check(
            self.d_model % self.n_head == 0,
            f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}",
        )
        check((self.d_model // self.n_head) % 2 == 0, "model: head_dim = d_model / n_head must be even for RoPE")
        kv = self.n_kv_head
        check(
            kv is None or (kv > 0 and self.n_head % kv == 0),
            f"model.n_kv_head={kv}: must divide model.n_head={self.n_head} (or null = n_head)",
        )
        check(self.d_mlp is None or self.d_mlp > 0, f"model.d_mlp={self.d_mlp}: must be > 0 (or null)")
        check(self.mlp in ("swiglu", "gelu"), f"model.mlp={self.mlp!r}: must be 'swiglu' or 'gelu'")
        check(self.norm in ("rmsnorm", "layernorm"), f"model.norm={self.norm!r}: must be 'rmsnorm' or 'layernorm'")
        check(0 < self.norm_eps < 1, f"model.norm_eps={self.norm_eps}: must be in (0, 1)")
        check(self.positions in ("rope", "learned"), f"model.positions={self.positions!r}: must be 'rope' or 'learned'")
        scaling = sorted(self.rope_scaling)
        check(
            scaling in ([], sorted(LLAMA3_ROPE_SCALING)),
            f"model.rope_scaling={self.rope_scaling}: must be {{}} or Llama 3's {{{', '.join(LLAMA3_ROPE_SCALING)}}}",
        )
        check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout}: must be in [0, 1)")
        check(0 < self.init_std < math.inf, f"model.init_std={self.init_std}: must be a finite number > 0")
        check(0 < self.rope_base < math.inf, f"model.rope_base={self.rope_base}: must be a finite number > 0")
        check(0 <= self.local_prior < math.inf, f"model.local_prior={self.local_prior}: must be a finite number >= 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head without grouped-query attention."""
        return self.n_kv_head or self.n_head

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width: d_mlp, else SwiGLU's 8/3·d_model rounded up to 32 (the parameters of a 4x GELU
        MLP) or GELU's 4·d_model."""
        if self.d_mlp is not None:
            return self.d_mlp
        return 4 * self.d_model if self.mlp == "gelu" else 32 * math.ceil(8 * self.d_model / 3 / 32)


LLAMA3_ROPE_SCALING = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
"""The keys of ModelConfig.rope_scaling (Llama 3.1's "rope_type": "llama3")."""


USER_MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("size", "vocab_size", "seq_len", "causal")
)
"""Model fields a user chooses, derived from the dataclass so a new field is never forgotten: a resume must
keep them and a study compares them (size is a shorthand for the shape; vocab_size, seq_len and causal come
from the data and the objective)."""


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 2e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio."""
    warmup_frac: float = 0.01
    """Fraction of all steps spent in linear warm-up."""
    warmup_steps: int = 0
    """Linear warm-up steps, when > 0 (instead of warmup_frac): WSD branches share their trunk's warm-up."""
    schedule: str = "cosine"
    """'cosine': one cosine from the peak to lr·min_lr_ratio over the whole run (the study's protocol: one
    schedule per run). 'wsd': warm-up, stable at the peak, then the same cosine over the last decay_frac of the
    run — a run of E epochs is then a longer run's stable phase plus its own decay, so one trunk with decay
    branches (unmask.training.fork) gives every epoch count (labelled: not the cosine protocol)."""
    decay_frac: float = 0.2
    """WSD: the share of the run's steps in the final decay."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (embeddings included), not on norm weights or biases."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    max_bad_steps: int = 20
    """Stop the run after this many steps in a row with a non-finite loss or gradient (each is skipped)."""

    def __post_init__(self) -> None:
        check(0 < self.lr < math.inf, f"train.optim.lr={self.lr}: must be a finite number > 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, f"train.optim.min_lr_ratio={self.min_lr_ratio}: must be in [0, 1]")
        check(0.0 <= self.warmup_frac < 1.0, f"train.optim.warmup_frac={self.warmup_frac}: must be in [0, 1)")
        check(self.warmup_steps >= 0, f"train.optim.warmup_steps={self.warmup_steps}: must be >= 0 (0 = warmup_frac)")
        check(self.schedule in ("cosine", "wsd"), f"train.optim.schedule={self.schedule!r}: must be 'cosine' or 'wsd'")
        check(0.0 < self.decay_frac <= 1.0, f"train.optim.decay_frac={self.decay_frac}: must be in (0, 1]")
        check(self.grad_clip >= 0, f"train.optim.grad_clip={self.grad_clip}: must be >= 0 (0 = off)")
        check(self.weight_decay >= 0, f"train.optim.weight_decay={self.weight_decay}: must be >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.optim.beta1, train.optim.beta2: must be in [0, 1)")
        check(self.max_bad_steps >= 1, f"train.optim.max_bad_steps={self.max_bad_steps}: must be >= 1")


@dataclass
class EvalConfig:
    """Validation during training and the run's final result."""

    every: int = 0
    """Validate every this many steps (0 = about 20 times per run); always at the end."""
    mc_passes: int = 4
    """MDM: Monte Carlo passes of the validation ELBO during training (fixed seed)."""
    final_mc_passes: int = 32
    """MDM: Monte Carlo passes of the final ELBO logged as final_val_loss, the run's result (4 passes: ±0.1 nats)."""
    batch_size: int = 64
    """Sequences per validation forward pass."""

    def __post_init__(self) -> None:
        for name in ("mc_passes", "final_mc_passes"):
            passes = getattr(self, name)
            check(1 <= passes <= MAX_MC_PASSES, f"train.eval.{name}={passes}: must be in [1, {MAX_MC_PASSES}]")
        check(self.every >= 0, f"train.eval.every={self.every}: must be >= 0 (0 = about 20 per run)")
        check(self.batch_size >= 1, f"train.eval.batch_size={self.batch_size}: must be >= 1")


@dataclass
class CheckpointConfig:
    """Resumable checkpoints."""

    every: int = 0
    """Save a resumable checkpoint every this many steps (0 = at each validation)."""
    keep: int = 3
    """Keep the newest K checkpoints; an older one is used if the newest turns out corrupt."""
    stop_at_step: int | None = None
    """Stop after this step with a resumable checkpoint; the schedule still spans the whole run."""

    def __post_init__(self) -> None:
        check(self.every >= 0, f"train.checkpoint.every={self.every}: must be >= 0")
        check(self.keep >= 1, f"train.checkpoint.keep={self.keep}: must be >= 1")
        check(
            self.stop_at_step is None or self.stop_at_step >= 1,
            f"train.checkpoint.stop_at_step={self.stop_at_step}: must be >= 1 or null",
        )


@dataclass
class RuntimeConfig:
    """Where and how the run executes; none of it changes what the run is (free to change on resume)."""

    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ..."""
    threads: int = 0
    """CPU threads of this process (torch.set_num_threads); 0 = torch's default. Parallel runs want 1 each."""
    compile: bool | None = None
    """torch.compile the model; None = on CUDA only."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory for ~1/3 more compute."""
    parallel: str = "ddp"
    """Under torchrun (WORLD_SIZE > 1): 'ddp' (a replica per process) or 'fsdp' (FSDP2: parameters, gradients
    and AdamW state sharded). Each process trains on its own micro-batches of every global batch."""

    def __post_init__(self) -> None:
        check(
            0 <= self.threads <= 4096,
            f"train.runtime.threads={self.threads}: must be in [0, 4096] (0 = torch's default)",
        )
        check(self.parallel in ("ddp", "fsdp"), f"train.runtime.parallel={self.parallel!r}: must be 'ddp' or 'fsdp'")


@dataclass
class MdmConfig:
    """Objective mdm (and its fine-tuning and adaptation variants): the noise of the training ELBO."""

    eps: float = 1e-3
    """Mask probability p = (1 - eps) t + eps keeps 1/p bounded."""
    t_min: float = 0.0
    """Training: t ~ U(t_min, 1) instead of U(0, 1) — a truncated ELBO (labelled; validation is always the full
    one); 0 = off."""
    t_beta: list[float] = field(default_factory=list)
    """Training: [a, b] draws t from Beta(a, b) (mid-range mask rates for a, b > 1) with the importance weight
    1/m(t) that keeps the loss an unbiased ELBO (m: the mixture below); [] = uniform t."""
    t_beta_mix: float = 0.1
    """Training with t_beta: the share of uniform t mixed into the Beta, which bounds the importance weight
    (Beta alone gives the ELBO estimate an infinite variance: its density vanishes at t = 0 and 1)."""

    def __post_init__(self) -> None:
        check(0.0 < self.eps < 1.0, f"train.mdm.eps={self.eps}: must be in (0, 1)")
        check(0.0 <= self.t_min < 1.0, f"train.mdm.t_min={self.t_min}: must be in [0, 1)")
        check(
            len(self.t_beta) in (0, 2) and all(0 < v < math.inf for v in self.t_beta),
            f"train.mdm.t_beta={self.t_beta}: must be [] (uniform t) or [a, b] with finite a, b > 0",
        )
        check(0.0 < self.t_beta_mix <= 1.0, f"train.mdm.t_beta_mix={self.t_beta_mix}: must be in (0, 1]")
        check(
            not (self.t_beta and self.t_min),
            "train.mdm.t_beta and train.mdm.t_min: choose one t-sampling (Beta or clipped), not both",
        )


@dataclass
class OrderingsConfig:
    """Objective ar_orderings."""

    n: int = 4
    """Identity + (n - 1) fixed random permutations."""

    def __post_init__(self) -> None:
        check(self.n >= 1, f"train.orderings.n={self.n}: must be >= 1")


@dataclass
class NceConfig:
    """Objective energy (EDLM-NCE): the noise levels t ~ U[t_min, t_max] of the x_t the frozen MDM samples from."""

    t_min: float = 0.8
    """The window's lower end; the default is the sampler's importance-sampling window (sampling.EnergyConfig:
    t_end 0.8 .. t_start 1.0)."""
    t_max: float = 1.0
    """The window's upper end (1 = everything masked)."""

    def __post_init__(self) -> None:
        check(
            0.0 < self.t_min <= self.t_max <= 1.0,
            f"train.nce.t_min={self.t_min}, t_max={self.t_max}: must satisfy 0 < min <= max <= 1",
        )


@dataclass
class R2ftConfig:
    """Objective r2ft: the preference loss against repetition."""

    beta_w: float = 1.0
    """β_w, the weight of the winner's mean log-probability inside the preference term."""
    beta_l: float = 1.0
    """β_l, the weight of the rejected continuation's mean log-probability inside the preference term."""
    beta_a: float = 0.1
    """β_a, the weight of the SFT term (−mean log-probability of the winner)."""
    gamma: float = 0.0
    """γ, the margin the preference term asks for."""
    max_phrase: int = 14
    """The repeated phrase is the last 1..this many answer tokens before the cut."""
    filler_rate: float = 0.0
    """The high-prior filler (a second rejected continuation) swaps in frequent tokens at this rate; 0 = off."""
    filler_tokens: list[int] = field(default_factory=list)
    """The frequent tokens the filler draws from (unmask finetune r2ft counts them in the training answers)."""
    filler_counts: list[int] = field(default_factory=list)
    """Their counts, one per token: the filler draws in proportion to them."""

    def __post_init__(self) -> None:
        for name in ("beta_w", "beta_l", "beta_a"):
            beta = getattr(self, name)
            check(0 <= beta < math.inf, f"train.r2ft.{name}={beta}: must be a finite number >= 0")
        check(math.isfinite(self.gamma), f"train.r2ft.gamma={self.gamma}: must be a finite number")
        check(self.max_phrase >= 1, f"train.r2ft.max_phrase={self.max_phrase}: must be >= 1")
        check(0 <= self.filler_rate <= 1, f"train.r2ft.filler_rate={self.filler_rate}: must be in [0, 1]")
        check(
            len(self.filler_tokens) == len(self.filler_counts),
            f"train.r2ft.filler_counts: must hold one count per filler_tokens entry "
            f"({len(self.filler_counts)} for {len(self.filler_tokens)})",
        )
        check(
            all(0 <= t < 2**32 for t in self.filler_tokens) and all(0 < n < 2**53 for n in self.filler_counts),
            "train.r2ft.filler_tokens, filler_counts: token ids must be in [0, 2**32), counts in [1, 2**53)",
        )


@dataclass
class ArConfig:
    """Objective ar: input noise, a regularisation (arXiv 2510.04071)."""

    input_noise: float = 0.0
    """The share of input tokens corrupted in training (the targets stay clean); validation always reads clean
    inputs. 0 = off."""
    input_noise_kind: str = "mask"
    """'mask' (the mask id) or 'random' (a token drawn from the batch: its unigram distribution)."""

    def __post_init__(self) -> None:
        check(0.0 <= self.input_noise < 1.0, f"train.ar.input_noise={self.input_noise}: must be in [0, 1)")
        check(
            self.input_noise_kind in ("mask", "random"),
            f"train.ar.input_noise_kind={self.input_noise_kind!r}: must be 'mask' or 'random'",
        )


TRAIN_GROUPS: dict[str, type] = {
    "optim": OptimConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
    "runtime": RuntimeConfig,
    "mdm": MdmConfig,
    "orderings": OrderingsConfig,
    "nce": NceConfig,
    "r2ft": R2ftConfig,
    "ar": ArConfig,
}
"""TrainConfig's groups: field name → dataclass."""

# The flat names of before the grouping (one release with a warning; still the short names that a study's
# tuning axes and run names use, and that config_hash hashes) → (group, field).
TRAIN_FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{name: ("optim", name) for name in (f.name for f in dataclasses.fields(OptimConfig))},
    "eval_every": ("eval", "every"),
    "eval_mc_passes": ("eval", "mc_passes"),
    "final_mc_passes": ("eval", "final_mc_passes"),
    "eval_batch_size": ("eval", "batch_size"),
    "checkpoint_every": ("checkpoint", "every"),
    "keep_checkpoints": ("checkpoint", "keep"),
    "stop_at_step": ("checkpoint", "stop_at_step"),
    **{name: ("runtime", name) for name in (f.name for f in dataclasses.fields(RuntimeConfig))},
    **{f"mdm_{f.name}": ("mdm", f.name) for f in dataclasses.fields(MdmConfig)},
    "n_orderings": ("orderings", "n"),
    **{f"nce_{f.name}": ("nce", f.name) for f in dataclasses.fields(NceConfig)},
    **{f"r2ft_{f.name}": ("r2ft", f.name) for f in dataclasses.fields(R2ftConfig)},
    **{f"ar_{f.name}": ("ar", f.name) for f in dataclasses.fields(ArConfig)},
}


@dataclass
class TrainConfig:
    """One run: objective, epochs over U, batch and seed; the rest grouped by concern.

        TrainConfig             objective, epochs, batch_size, micro_batch_size, seed, init_from
          .optim       OptimConfig       AdamW and the schedule (lr, warmup, cosine or WSD, weight decay, ...)
          .eval        EvalConfig        validation: how often, Monte Carlo passes, the final estimate
          .checkpoint  CheckpointConfig  resumable checkpoints, stop_at_step
          .runtime     RuntimeConfig     device, threads, compile, activation checkpointing, DDP/FSDP
          .mdm .orderings .nce .r2ft .ar  each objective's own options

    The flat names of before the grouping (`lr`, `eval_mc_passes`, `mdm_t_beta`, ...: TRAIN_FLAT_NAMES) still
    work for one release, with a warning: on the command line (`--train.lr`), in YAML and JSON files, and as
    attributes; `from_flat` and `flat` convert without one.
    """

    objective: str = "mdm"
    """Training objective: 'ar', 'mdm', 'ar_orderings' or another name registered in unmask.objectives."""
    epochs: int = 1
    """E: passes over the U unique tokens, each a fresh shuffle; the run sees exactly E·U tokens."""
    batch_size: int = 16
    """Sequences per optimiser step."""
    micro_batch_size: int | None = None
    """Sequences per forward pass (gradient accumulation); None = batch_size."""
    seed: int = 0
    """Seed of initialisation, shuffling and noise."""
    init_from: str | None = None
    """Fine-tuning: the run whose last weights (and model config) start this one; its tokenizer must be a prefix
    of the data's (the chat tokens appended), and the new embedding rows start at the mean of the old ones."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and the learning-rate schedule."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation during training and the final result."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Resumable checkpoints."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Device, threads and parallelism (free to change on resume)."""
    mdm: MdmConfig = field(default_factory=MdmConfig)
    """Objective mdm: t-sampling of the training ELBO."""
    orderings: OrderingsConfig = field(default_factory=OrderingsConfig)
    """Objective ar_orderings."""
    nce: NceConfig = field(default_factory=NceConfig)
    """Objective energy (EDLM-NCE)."""
    r2ft: R2ftConfig = field(default_factory=R2ftConfig)
    """Objective r2ft."""
    ar: ArConfig = field(default_factory=ArConfig)
    """Objective ar: input noise."""

    def __post_init__(self) -> None:
        # The name is checked against the objective registry (a layer above) when the run starts.
        check(bool(self.objective), "train.objective: must name an objective, e.g. 'ar' or 'mdm'")
        check(0 <= self.seed < 2**63, f"train.seed={self.seed}: must be in [0, 2**63)")
        check(self.epochs >= 1, f"train.epochs={self.epochs}: must be >= 1")
        check(1 <= self.batch_size < 2**63, f"train.batch_size={self.batch_size}: must be in [1, 2**63)")
        mb = self.micro_batch_size
        check(
            mb is None or (mb >= 1 and self.batch_size % mb == 0),
            f"train.micro_batch_size={mb}: must divide train.batch_size={self.batch_size}",
        )

    @classmethod
    def from_flat(cls, **options: Any) -> TrainConfig:
        """From flat names: top-level fields and TRAIN_FLAT_NAMES, e.g. from_flat(epochs=4, lr=1e-3)."""
        return cls().with_flat(**options)

    def with_flat(self, **changes: Any) -> TrainConfig:
        """A copy with fields changed by their flat names (a study's tuning axes), e.g. with_flat(weight_decay=1)."""
        top = {f.name for f in dataclasses.fields(self) if f.name not in TRAIN_GROUPS}
        unknown = sorted(set(changes) - top - set(TRAIN_FLAT_NAMES))
        check(not unknown, f"unknown train option(s) {unknown}; choose from {sorted(top | set(TRAIN_FLAT_NAMES))}")
        groups: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if name in TRAIN_FLAT_NAMES:
                group, key = TRAIN_FLAT_NAMES[name]
                groups.setdefault(group, {})[key] = value
        nested = {g: dataclasses.replace(getattr(self, g), **values) for g, values in groups.items()}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in top}, **nested)

    def flat(self) -> dict[str, Any]:
        """Every setting under its flat name (the inverse of from_flat): what config_hash and resume compare."""
        top = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in TRAIN_GROUPS}
        return top | {name: getattr(getattr(self, g), key) for name, (g, key) in TRAIN_FLAT_NAMES.items()}

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a flat name of before the grouping.
        if name in TRAIN_FLAT_NAMES and "optim" in self.__dict__:
            group, key = TRAIN_FLAT_NAMES[name]
            warn_flat_name(old=f"TrainConfig.{name}", new=f"TrainConfig.{group}.{key}")
            return getattr(getattr(self, group), key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def train_option(flat_name: str) -> str:
    """The dotted name of a train setting given by its flat name: lr → optim.lr, seed → seed."""
    group, key = TRAIN_FLAT_NAMES.get(flat_name, (None, flat_name))
    return f"{group}.{key}" if group else key


class FlatNameWarning(FutureWarning):
    """A train setting given by its flat name of before the grouping (`lr` for `optim.lr`)."""


def warn_flat_name(old: str, new: str, where: str = "") -> None:
    import warnings

    message = f"{where}{old} is now {new}; the flat name works until the next release"
    warnings.warn(message, FlatNameWarning, stacklevel=3)


def regroup_train(values: dict, where: str = "", warn: bool = True) -> dict:
    """A train mapping (YAML, JSON, a run's config.json) with flat names moved into their groups; `where`
    prefixes the warning (a file's name)."""
    out = {k: v for k, v in values.items() if k not in TRAIN_FLAT_NAMES}
    for name, value in values.items():
        if name in TRAIN_FLAT_NAMES:
            group, key = TRAIN_FLAT_NAMES[name]
            if warn:
                warn_flat_name(old=f"train.{name}", new=f"train.{group}.{key}", where=where)
            section = out.setdefault(group, {})
            check(isinstance(section, dict), f"{where}train.{group}: expected a mapping, got {section!r}")
            check(key not in section, f"{where}train.{name} and train.{group}.{key} both given; keep the second")
            section[key] = value
    return out


SFT_DEFAULTS = TrainConfig(epochs=3, batch_size=32, optim=OptimConfig(lr=1e-3, warmup_frac=0.05))
"""`unmask finetune sft`: a few epochs over the conversations at half pre-training's peak rate."""
R2FT_DEFAULTS = TrainConfig(epochs=1, batch_size=32, optim=OptimConfig(lr=2e-4, warmup_frac=0.05))
"""`unmask finetune r2ft`: one gentle epoch from the SFT run."""
ADAPT_DEFAULTS = TrainConfig(objective="mdm_adapt", epochs=16, optim=OptimConfig(warmup_frac=0.05))
"""`unmask finetune adapt`: MDM pre-training's settings over the base's data, a short warm-up (the weights are
trained already)."""
ENERGY_DEFAULTS = TrainConfig(
    epochs=8, batch_size=16, optim=OptimConfig(lr=3e-4, warmup_frac=0.05), eval=EvalConfig(final_mc_passes=8)
)
"""`unmask finetune energy`: a few epochs over the base's data at a low rate (the trunk starts as the MDM's);
each validation pass samples from the frozen MDM, so the final estimate takes 8 passes, not 32."""


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, values: dict, warn_flat: bool = True) -> Any:
    """Build a config dataclass from plain data (a YAML/JSON file), naming any unknown key or wrong type;
    nested groups (TrainConfig.optim, ...) from nested mappings.

    Typos and hand-edited files must not pass silently, nor fail later with a raw TypeError. A train mapping
    may use the flat names of before the grouping (with a warning, unless `warn_flat` is off: a run directory
    written by an earlier version is not the user's to rewrite).
    """
    check(isinstance(values, dict), f"{cls.__name__}: expected a mapping of keys to values, got {values!r}")
    if cls is TrainConfig:
        values = regroup_train(values, warn=warn_flat)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    check(not unknown, f"unknown {cls.__name__} key(s) {unknown}; allowed: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            values[key] = from_dict(hints[key], value)
            continue
        check(
            _is_instance(value, hints[key]),
            f"{cls.__name__}.{key}={value!r}: expected {_type_name(hints[key])}",
        )
    return cls(**values)


def _is_instance(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_is_instance(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _is_instance(k, args[0]) and _is_instance(v, args[1]) for k, v in value.items()
        )
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:  # JSON/YAML write 1e3 as int sometimes; bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string under it, as `unmask CMD --help` shows it), read from the source."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        node.target.id: doc.value.value
        for node, doc in zip(body, body[1:], strict=False)  # a field, then the statement after it
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)
    }


def check_output_file(option: str, path: str | None, make_parents: bool = False) -> None:
    """Fail before any work when the file `option` names could not be written at the end: a folder is
    there, a file stands where a folder should, or (unless the command creates it) its folder is missing."""
    if path is None:
        return
    target = Path(path).absolute()
    if target.is_dir():
        raise ConfigError(f"{option} {path} is a folder; pass a file name")
    existing = next(p for p in target.parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a folder; choose another path")
    if existing != target.parent and not make_parents:
        raise ConfigError(f"{option} {path}: folder {target.parent} does not exist; create it or choose another path")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{option} {path}: {existing} is not writable; choose another path")
