"""The one Transformer used by every objective.

Decoder-only, pre-norm RMSNorm, SwiGLU MLP, rotary position embeddings, no biases,
tied input/output embeddings, PyTorch SDPA attention. AR and MDM differ only in
`causal` (the study's control: never fork this file).

Open checkpoints (unmask.hub) need a few options, all off by default: grouped-query attention, biases, an
untied output head, Llama 3's RoPE scaling, and GPT-2's learned positions, LayerNorm and GELU MLP.

Shapes: B batch, T sequence, D d_model, H heads, Dh head_dim, V vocab.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from unmask.config import SIZES, ConfigError, ModelConfig, from_dict, to_dict  # noqa: F401  (SIZES: re-exported)


def count_params(cfg: ModelConfig) -> int:
    """Closed-form parameter count."""
    d, h, dh, bias = cfg.d_model, cfg.mlp_width, cfg.head_dim, cfg.bias
    q, kv = cfg.n_head * dh, cfg.kv_heads * dh
    attention = d * (q + 2 * kv) + q * d + (q + 2 * kv) * (bias or cfg.qkv_bias) + d * bias
    n_in = 2 if cfg.mlp == "swiglu" else 1  # SwiGLU's gate and up, or GELU's up
    mlp = (n_in + 1) * d * h + (n_in * h + d) * bias
    norm = d * (1 + (cfg.norm == "layernorm" and bias))  # a gain (and a LayerNorm's bias)
    per_block = attention + mlp + 2 * norm
    per_block += 2 * dh if cfg.qk_norm else 0  # the q and k RMSNorms (one head_dim gain each)
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)  # input (+ an untied output head)
    embeddings += cfg.seq_len * d if cfg.positions == "learned" else 0
    head = d + 1 if cfg.energy_head else 0  # the energy head's weight and bias
    return embeddings + cfg.n_layer * per_block + norm + head  # + final norm


def flops_per_token(cfg: ModelConfig, head_fraction: float = 1.0) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward): 6 per weight (the tied output embedding is a
    matmul, its lookup is not, so 6·count_params) plus 12·n_layer·T·d_model for the attention scores and their
    weighted sum (PaLM's count: causal masking not subtracted, the same for every objective).

    head_fraction: the share of positions projected to the vocabulary (MDM projects only its masked positions,
    on average half: 0.5 gives the FLOPs it executes)."""
    head = 6 * cfg.vocab_size * cfg.d_model
    return 6 * count_params(cfg) - head * (1 - head_fraction) + 12 * cfg.n_layer * cfg.seq_len * cfg.d_model


def select_positions(h: torch.Tensor, output_mask: torch.Tensor) -> torch.Tensor:
    """Rows (M, ...) of h (B, T, ...) at `output_mask`: a (B, T) bool mask (M read from its values: a host-device
    sync on GPUs) or (M,) flat indices b·T + t (M known from their shape). Row-major either way."""
    if output_mask.dtype == torch.bool:
        return h[output_mask]
    return h.flatten(0, 1).index_select(0, output_mask)


class _CPURMSNorm(torch.autograd.Function):
    """RMSNorm y = x·r·w, r = 1/√(mean(x²) + eps), with a fused backward on the CPU, where torch has no
    fused RMSNorm backward and differentiates rms_norm op by op (pow, mean, rsqrt, div, ~12 kernels).

    LayerNorm's backward kernel, given mean 0 and r, returns dw = Σ g·x·r and dx = r·(gw − mean(gw) −
    x̂·mean(gw·x̂)), x̂ = x·r. RMSNorm subtracts no mean, so its dx lacks the −r·mean(gw) term: it is
    added back, mean(gw) as one matrix-vector product. 2.5-3x faster than autograd's backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)  # rstd (..., 1)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        D = x.shape[-1]
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        dx, dw, _ = torch.ops.aten.native_layer_norm_backward(
            grad, x, [D], torch.zeros_like(rstd), rstd, weight, None, mask
        )
        if dx is not None:
            gw_mean = (grad.reshape(-1, D) @ weight).view(rstd.shape) / D  # (..., 1) mean(g·w)
            dx.add_(rstd * gw_mean)
        return dx, dw, None


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The residual stream's norm: RMSNorm, or LayerNorm (GPT-2, with a bias when cfg.bias)."""
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
    return RMSNorm(cfg.d_model, cfg.norm_eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fp32_weights = self.weight.dtype == torch.float32  # a bf16 model (an imported run) differentiates op by op
        if x.device.type == "cpu" and fp32_weights and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _CPURMSNorm.apply(x, self.weight, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # fused on GPUs; inductor fuses it when compiled


def rope_table(seq_len: int, head_dim: int, base: float, scaling: dict[str, float] | None = None) -> torch.Tensor:
    """Rotations e^{i·pos·θ_k} as (T, Dh/2, 2) float32 (cos, sin) pairs: a complex table read as real
    numbers (computed in float64), so torch.compile, which cannot generate complex kernels, can fuse it.

    scaling: Llama 3's frequency scaling (ModelConfig.rope_scaling), or None/{} for plain RoPE."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if scaling:
        inv_freq = llama3_frequencies(inv_freq, **scaling)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # (T, Dh/2)
    return torch.stack([angles.cos(), angles.sin()], -1).float()


def llama3_frequencies(
    inv_freq: torch.Tensor,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: float,
) -> torch.Tensor:
    """Llama 3.1's RoPE scaling (its published rope_type "llama3"): wavelengths longer than the original context
    / low_freq_factor are stretched by `factor`, those shorter than context / high_freq_factor kept, and the band
    between interpolated smoothly."""
    wavelength = 2 * math.pi / inv_freq
    context = original_max_position_embeddings
    smooth = (context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelength > context / low_freq_factor, inv_freq / factor, inv_freq)
    medium = (wavelength >= context / high_freq_factor) & (wavelength <= context / low_freq_factor)
    return torch.where(medium, smoothed, scaled)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of x (..., T, Dh) by rotation (T, Dh/2, 2) or (B, 1, T, Dh/2, 2) (cos, sin).

    Eager: one complex multiply, about twice as fast on the CPU as the real form (4 muls + stack);
    compiled: the real form, which inductor fuses into one kernel.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., T, Dh/2, 2)
    if torch.compiler.is_compiling():
        a, b, cos, sin = pairs[..., 0], pairs[..., 1], rotation[..., 0], rotation[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(pairs) * torch.view_as_complex(rotation)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        q, kv = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.qkv = nn.Linear(cfg.d_model, q + 2 * kv, bias=cfg.bias or cfg.qkv_bias)  # rows: q, then k, then v
        self.proj = nn.Linear(q, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        # QK-norm (OLMo 2, Gemma 3 style, per head): the logits q·k/√Dh are O(1) whatever the init,
        # so RoPE's relative-position structure reaches the softmax from the first step.
        self.q_norm = RMSNorm(self.head_dim) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if cfg.qk_norm else None

    def qkv_heads(self, x, rope_q, rope_k):
        """Queries (B, H, T, Dh), keys and values (B, Hkv, T, Dh) of x (B, T, D); queries and keys normed if
        qk_norm, then rotated (unless positions are learned: rope None)."""
        B, T, D = x.shape
        Dh, Hkv = self.head_dim, self.n_kv_head
        q, k, v = self.qkv(x).split([self.n_head * Dh, Hkv * Dh, Hkv * Dh], -1)
        q, k, v = (t.unflatten(-1, (-1, Dh)).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, Dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope_k is None:
            return q, k, v
        return apply_rope(q, rope_q), apply_rope(k, rope_k), v

    def forward(self, x, rope_q, rope_k, is_causal: bool, attn_mask, past=None):
        """Output (B, T, D) and this call's own (k, v), each (B, Hkv, T, Dh), keys rotated.

        past: cached (k, v) of earlier tokens, (B, Hkv, Tp, Dh) each, attended to before the own keys.
        """
        B, T, D = x.shape
        q, k, v = self.qkv_heads(x, rope_q, rope_k)  # (B, H, T, Dh), (B, Hkv, T, Dh) x 2
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        if self.n_kv_head != self.n_head:  # grouped-query attention: each key/value head serves H / Hkv queries
            group = self.n_head // self.n_kv_head
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        y = F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).flatten(2)), (k, v)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) · up(x)), gate and up as one matrix (rows: gate, then up)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_width
        self.gate_up = nn.Linear(cfg.d_model, 2 * hidden, bias=cfg.bias)
        self.down = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class GeluMLP(nn.Module):
    """GPT-2's MLP: down(gelu(up(x))), GELU in its tanh approximation ("gelu_new")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_width, bias=cfg.bias)
        self.down = nn.Linear(cfg.mlp_width, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm, self.attn = make_norm(cfg), Attention(cfg)
        self.mlp_norm, self.mlp = make_norm(cfg), (GeluMLP if cfg.mlp == "gelu" else MLP)(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope_q, rope_k, is_causal, attn_mask, past=None):
        y, kv = self.attn(self.attn_norm(x), rope_q, rope_k, is_causal, attn_mask, past)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.mlp_norm(x))), kv


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = False
        """Recompute each block's activations in backward instead of storing them (set by the runtime)."""
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = make_norm(cfg)
        if cfg.energy_head:  # EDLM's energy model: see `energy`
            self.energy_head = nn.Linear(cfg.d_model, 1)
        if not cfg.tie_embeddings:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.positions == "learned":
            self.pos_embed = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.register_buffer("rope", self.rope_rotations(), persistent=False)
        self.reset_parameters()

    def rope_rotations(self) -> torch.Tensor | None:
        """The RoPE table of `_rope` (None with learned positions)."""
        cfg = self.cfg
        if cfg.positions != "rope":
            return None
        return rope_table(cfg.seq_len, cfg.head_dim, cfg.rope_base, cfg.rope_scaling)

    @property
    def output_weight(self) -> torch.Tensor:
        """The output projection (V, D): the input embedding when tied."""
        return self.embed.weight if self.cfg.tie_embeddings else self.head.weight

    def reset_parameters(self) -> None:
        # 0.02 (GPT-2) at every size by default; init_std is a config field because the MDM/AR
        # verdict at small scale depends on it (see docs/study.md).
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # Output projections scaled down with depth (GPT-2), so the residual stream stays O(1).
                scale = 1 / math.sqrt(2 * self.cfg.n_layer) if name.endswith(("proj.weight", "down.weight")) else 1
                nn.init.normal_(p, std=std * scale)
        for module in self.blocks.modules():  # the biases of the open-model options (GPT-2, Qwen2) start at 0
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _rope(self, pos: torch.Tensor | None, T: int, offset: int = 0) -> torch.Tensor | None:
        if self.rope is None:
            return None  # learned positions: added to the embeddings in `_hidden`
        if pos is None:
            return self.rope[offset : offset + T]  # (T, Dh/2, 2), broadcast over B, H
        return self.rope[pos].unsqueeze(1)  # (B, 1, T, Dh/2, 2)

    def _attn_mask(self, T: int, Tp: int, key_padding_mask: torch.Tensor | None, device) -> torch.Tensor | None:
        """Boolean mask, broadcastable to (B, H, T, Tp + T), of the keys each query sees (True); None = all.

        Query i sits at key index Tp + i. Causal: keys j <= Tp + i. Padding keys are hidden, but
        a causal query always sees its own key, so a padding query (left padding) never has an empty
        row, whose softmax is NaN in some SDPA kernels; real queries are unaffected (their key is real).
        """
        if key_padding_mask is None and (not self.cfg.causal or T == 1):
            return None  # bidirectional, or one new token after a cache: every key is visible
        if not self.cfg.causal:
            return key_padding_mask[:, None, None, :]  # (B, 1, 1, Tp + T)
        query_at = torch.arange(T, device=device)[:, None] + Tp  # (T, 1)
        keys = torch.arange(Tp + T, device=device)[None, :]  # (1, Tp + T)
        if key_padding_mask is None:
            return (keys <= query_at)[None, None]  # (1, 1, T, Tp + T)
        return (key_padding_mask[:, None, None, :] & (keys <= query_at)) | (keys == query_at)  # (B, 1, T, Tp + T)

    def _local_prior(self, allowed, is_causal: bool, T: int, Tp: int, pos, key_pos, device) -> torch.Tensor:
        """Float mask (B or 1, H, T, Tp + T) in the weights' dtype (built in float32): head 0 biased to the keys one
        position away, -inf where not allowed."""
        query_at = pos if pos is not None else torch.arange(Tp, Tp + T, device=device)[None]  # (B or 1, T)
        if key_pos is None:
            key_pos = pos if (pos is not None and Tp == 0) else torch.arange(Tp + T, device=device)[None]
        near = (query_at[:, :, None] - key_pos[:, None, :]).abs() == 1  # (B or 1, T, S)
        head0 = torch.where(near, 0.0, -self.cfg.local_prior)
        bias = torch.zeros(head0.shape[0], self.cfg.n_head, T, Tp + T, device=device)
        bias[:, 0] = head0
        if is_causal:  # the causal kernel's mask, written out
            allowed = torch.ones(T, Tp + T, dtype=torch.bool, device=device).tril(Tp)[None, None]
        bias = bias if allowed is None else bias.masked_fill(~allowed, float("-inf"))
        return bias.to(self.embed.weight.dtype)  # SDPA wants a float mask in the queries' dtype (a no-op in float32)

    def forward(
        self,
        idx: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        output_mask: torch.Tensor | None = None,
        past_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        return_kv: bool = False,
        key_pos: torch.Tensor | None = None,
        energy_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits (B, T, V) for tokens idx (B, T); (M, V) at the M positions of `output_mask` if given.

        pos: position of each token (B, T) for RoPE, default 0..T-1 (Tp..Tp+T-1 after a cache).
        query_pos: position rotated into the queries instead of `pos`; ar_orderings
            gives the position of the token to predict here (see objectives.py).
        key_padding_mask: (B, T) True for real tokens, (B, Tp + T) over all keys with past_kv;
            padding is never attended to.
        output_mask: (B, T) bool positions whose logits are needed (MDM: the masked ones), or their (M,) flat
            indices b·T + t, row-major (no host-device sync); the output projection, the largest matmul at
            small sizes, then skips the rest.
        past_kv: per layer the (k, v) of earlier tokens, (B, H, Tp, Dh) each, keys already
            rotated, as returned by `return_kv` (callers may slice or concatenate them along
            dim 2). idx then attends to [past keys, own keys]: all of them when bidirectional,
            every past key and own keys j <= i when causal.
        return_kv: also return the per-layer (k, v) of the idx tokens only, (B, H, T, Dh) each.
        key_pos: (B, Tp + T) positions of all keys, for `local_prior` only; default `pos` without a cache,
            else 0..Tp+T-1 (pass it when cached keys are reordered or padded).
        energy_mask: (B, T) bool, an energy model (cfg.energy_head) only: return the energies E(idx, x_t) (B,)
            instead of logits, x_t being idx with these positions masked (see `energy`).
        """
        h, kv = self._hidden(idx, pos, query_pos, key_padding_mask, past_kv, key_pos)
        if self.cfg.shift_logits:  # Dream: token j's prediction sits at position j - 1 (token 0's at 0)
            if past_kv is not None:  # the first new token's would sit in the cache, which keeps no hidden states
                raise ConfigError("this run (Dream's shifted logits) decodes without a KV cache; pass "
                                  "--sampler.cache.kv none")  # fmt: skip
            h = torch.cat([h[:, :1], h[:, :-1]], 1)
        if energy_mask is not None:
            return self.energy(h, energy_mask)
        if output_mask is not None:
            h = select_positions(h, output_mask)  # (M, D)
        logits = F.linear(h, self.output_weight)  # (B, T, V) or (M, V)
        return (logits, kv) if return_kv else logits

    def _hidden(self, idx, pos=None, query_pos=None, key_padding_mask=None, past_kv=None, key_pos=None):
        """The normed final hidden state (B, T, D) and the per-layer (k, v) of `forward`'s arguments."""
        B, T = idx.shape
        Tp = 0 if past_kv is None else past_kv[0][0].shape[2]
        rope_k = self._rope(pos, T, Tp)
        rope_q = rope_k if query_pos is None else self._rope(query_pos, T)
        if Tp == 0 and key_padding_mask is None:
            attn_mask, is_causal = None, self.cfg.causal  # training path: SDPA's own causal kernel
        else:
            attn_mask, is_causal = self._attn_mask(T, Tp, key_padding_mask, idx.device), False
        if self.cfg.local_prior:
            attn_mask, is_causal = self._local_prior(attn_mask, is_causal, T, Tp, pos, key_pos, idx.device), False
        x = self.embed(idx)
        if self.cfg.positions == "learned":
            if query_pos is not None:
                raise ConfigError("query_pos (ar_orderings) needs rotary positions; this model's are learned")
            x = x + self.pos_embed(torch.arange(Tp, Tp + T, device=idx.device) if pos is None else pos)
        kv = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for layer, block in enumerate(self.blocks):
            args = (x, rope_q, rope_k, is_causal, attn_mask, None if past_kv is None else past_kv[layer])
            # Activation checkpointing: keep only each block's input; its activations are recomputed in backward.
            x, layer_kv = checkpoint(block, *args, use_reentrant=False) if recompute else block(*args)
            kv.append(layer_kv)
        return self.norm(x), kv

    def energy(self, h: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """EDLM's energy E(x0, x_t) (B,), float32, lower = more likely, from the final hidden state h (B, T, D) of
        clean sequences x0 and the positions `masked` (B, T) bool that are masks in x_t (x_t = x0 with them masked).
        Call it as model(x0, energy_mask=masked), so wrappers (DDP, compile) see a forward.

        E = w · mean_{i masked in x_t} h_i(x0) + b, h from the bidirectional trunk reading x0 whole. The pair
        (x0, masked set) determines x_t, so E is a function of both without a new input embedding: the trunk
        starts as the MDM's (its features of a clean sequence) and only the positions the denoiser filled are
        pooled. The unmasked ones are the same in every candidate of a sampler step and in data and sample of
        an NCE pair, so they carry no contrast of their own; they still reach the pooled positions through
        attention. A mean (not a sum) keeps E's scale independent of how many positions are masked; the head's
        weight sets the scale. A row with nothing masked pools nothing: E = b.
        """
        if self.cfg.causal or not self.cfg.energy_head:
            raise ConfigError("an energy needs a bidirectional model with energy_head (an 'energy' run)")
        w = masked.to(h.dtype)  # (B, T)
        pooled = (h * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1)  # (B, D)
        return self.energy_head(pooled).squeeze(-1).float()  # (B,)


def save_model(model: Transformer, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights as safetensors (atomically) and the model config beside them; `state`: the model's
    weights when they are gathered elsewhere (from FSDP2 shards)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = _unwrap(model).state_dict() if state is None else state
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(state, str(tmp))
    tmp.replace(path)
    config_path = path.parent / "model_config.json"
    if not config_path.exists():
        config_path.write_text(json.dumps(to_dict(_unwrap(model).cfg), indent=2))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a torn or foreign file is one ConfigError naming it."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ConfigError(f"{path} is not readable safetensors ({reason}); it is damaged") from None


def load_weights(
    model: Transformer, path: Path, state: dict[str, torch.Tensor] | None = None, assign: bool = False
) -> None:
    """Load safetensors weights (or their already read `state`) into `model` (assign: the tensors become its
    parameters, no copy); a torn or foreign file is one ConfigError naming it."""
    try:
        model.load_state_dict(read_weights(path) if state is None else state, assign=assign)
    except RuntimeError:
        raise ConfigError(f"{path} does not match the model's config (other shapes or names); it is damaged") from None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes a model computes in, by name (`--dtype`)."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype of DTYPES from its name or itself; None or 'auto' = None (the weights file's own dtype)."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype={str(dtype).removeprefix('torch.')!r}: choose one of auto, {', '.join(DTYPES)}")


def file_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The one float dtype a weights file holds (unmask writes one); float32 when it mixes several."""
    found = {t.dtype for t in state.values() if t.is_floating_point()}
    return found.pop() if len(found) == 1 else torch.float32


def model_with_weights(cfg: ModelConfig, path: Path, dtype: str | torch.dtype | None = None) -> Transformer:
    """A Transformer of `cfg` holding the weights at `path`, in `dtype` (None: the file's own, bf16 stays bf16).
    The file's parameter count is checked against the config before the model is built: a damaged config
    (n_layer = 10**12) is refused, not allocated.

    The file's tensors become the parameters (no second copy, no float32 copy of a bf16 file); a cast converts
    them one at a time. Buffers stay float32 (the RoPE table: `apply_rope` rotates in float32 and casts back)."""
    dtype = resolve_dtype(dtype)
    state = read_weights(path)
    n_file, n_cfg = sum(t.numel() for t in state.values()), count_params(cfg)
    if n_file != n_cfg:
        raise ConfigError(
            f"{path} holds {n_file:,} parameters but the model config describes {n_cfg:,} (n_layer, d_model, "
            f"vocab_size); the weights or the config are damaged"
        )
    with torch.device("meta"):  # no random init of weights about to be replaced, and no second copy of them
        model = Transformer(cfg)
    dtype = dtype or file_dtype(state)
    for name in list(state):  # one tensor at a time: the file's and the cast copy never both held whole
        state[name] = state.pop(name).to(dtype)  # a no-op in the file's own dtype (float32 runs: as before)
    load_weights(model, path, state, assign=True)
    model.rope = model.rope_rotations()  # the one buffer not in the file, built for real
    return model


def load_model(path: Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> Transformer:
    """Weights at `path` with the model_config.json beside them, in eval mode, in `dtype` (None: the file's)."""
    path = Path(path)
    config_path = path.parent / "model_config.json"
    try:
        values = json.loads(config_path.read_text())
        cfg = from_dict(ModelConfig, {**values, "size": None})
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{config_path} is missing or invalid ({type(e).__name__}); it is damaged") from None
    return model_with_weights(cfg, path, dtype).to(device).eval()


def _unwrap(model: nn.Module) -> Transformer:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module
