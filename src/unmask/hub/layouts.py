"""The published layouts unmask reads and writes: their config.json keys and parameter names, each tied to
the one Transformer of unmask.model.

A `Piece` pairs one unmask tensor with the Hugging Face tensors it is made of, and the two ways between them.
RoPE: the published Llama, Qwen2 and LLaDA code rotates the two halves of each head (i, i + Dh/2), unmask
rotates consecutive pairs (2i, 2i + 1); the rows of every head's query and key are reordered on the way in
(`interleave`) and back on the way out (`halves`), which leaves every dot product, and so the logits, as they
were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unmask.config import LLAMA3_ROPE_SCALING, ConfigError, ModelConfig


@dataclass(frozen=True)
class Piece:
    unmask: str
    """The unmask parameter name."""
    hf: tuple[str, ...]
    """The Hugging Face tensors it is made of."""
    join: Callable[[list[torch.Tensor]], torch.Tensor] = lambda parts: parts[0]
    """Hugging Face tensors -> the unmask tensor."""
    split: Callable[[torch.Tensor], list[torch.Tensor]] = lambda t: [t]
    """The unmask tensor -> the Hugging Face tensors, in the order of `hf`."""


def interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from halves order (i, i + Dh/2) to pairs order (2i, 2i + 1); dim 0 is heads·Dh."""
    return w.unflatten(0, (heads, 2, -1)).transpose(1, 2).flatten(0, 2)


def halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of `interleave`."""
    return w.unflatten(0, (heads, -1, 2)).transpose(1, 2).flatten(0, 2)


def transposed(unmask: str, hf: str) -> Piece:
    """GPT-2's Conv1D stores (in, out), a Linear (out, in)."""
    return Piece(unmask, (hf,), lambda p: p[0].t(), lambda t: [t.t()])


def fused_qkv(unmask: str, hf: tuple[str, str, str], cfg: ModelConfig) -> Piece:
    """unmask's one qkv matrix (or bias) from separate q, k, v projections in halves RoPE order."""
    H, Hkv, Dh = cfg.n_head, cfg.kv_heads, cfg.head_dim

    def join(parts):
        q, k, v = parts
        return torch.cat([interleave(q, H), interleave(k, Hkv), v])

    def split(t):
        q, k, v = t.split([H * Dh, Hkv * Dh, Hkv * Dh])
        return [halves(q, H), halves(k, Hkv), v]

    return Piece(unmask, hf, join, split)


def fused_gate_up(unmask: str, hf: tuple[str, str]) -> Piece:
    return Piece(unmask, hf, lambda p: torch.cat(p), lambda t: list(t.chunk(2)))


# ---- Llama, Qwen2 (AR) and LLaDA (MDM): one structure under two sets of names -------------------------------

LLAMA_NAMES = {
    "embed": "model.embed_tokens",
    "block": "model.layers.{i}.",
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
    "norm": "model.norm",
    "head": "lm_head",
}
LLADA_NAMES = {  # LLaDA's published modeling code (an OLMo fork) names its "llama" block's parts so
    "embed": "model.transformer.wte",
    "block": "model.transformer.blocks.{i}.",
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "attn_out",
    "gate": "ff_proj",  # act(ff_proj(x)) * up_proj(x)
    "up": "up_proj",
    "down": "ff_out",
    "attn_norm": "attn_norm",
    "mlp_norm": "ff_norm",
    "norm": "model.transformer.ln_f",
    "head": "model.transformer.ff_out",
}


def rotary_pieces(cfg: ModelConfig, names: dict[str, str]) -> list[Piece]:
    pieces = [Piece("embed.weight", (names["embed"] + ".weight",))]
    for i in range(cfg.n_layer):
        hf = lambda part, kind="weight": names["block"].format(i=i) + names[part] + "." + kind  # noqa: B023
        b = f"blocks.{i}."
        pieces += [
            Piece(b + "attn_norm.weight", (hf("attn_norm"),)),
            fused_qkv(b + "attn.qkv.weight", (hf("q"), hf("k"), hf("v")), cfg),
            *(
                [fused_qkv(b + "attn.qkv.bias", (hf("q", "bias"), hf("k", "bias"), hf("v", "bias")), cfg)]
                if cfg.qkv_bias
                else []
            ),  # fmt: skip
            Piece(b + "attn.proj.weight", (hf("o"),)),
            Piece(b + "mlp_norm.weight", (hf("mlp_norm"),)),
            fused_gate_up(b + "mlp.gate_up.weight", (hf("gate"), hf("up"))),
            Piece(b + "mlp.down.weight", (hf("down"),)),
        ]
    pieces.append(Piece("norm.weight", (names["norm"] + ".weight",)))
    if not cfg.tie_embeddings:
        pieces.append(Piece("head.weight", (names["head"] + ".weight",)))
    return pieces


def gpt2_pieces(cfg: ModelConfig) -> list[Piece]:
    pieces = [
        Piece("embed.weight", ("transformer.wte.weight",)),
        Piece("pos_embed.weight", ("transformer.wpe.weight",)),
    ]
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        pieces += [
            Piece(b + "attn_norm.weight", (h + "ln_1.weight",)),
            Piece(b + "attn_norm.bias", (h + "ln_1.bias",)),
            transposed(b + "attn.qkv.weight", h + "attn.c_attn.weight"),  # rows q, k, v in both
            Piece(b + "attn.qkv.bias", (h + "attn.c_attn.bias",)),
            transposed(b + "attn.proj.weight", h + "attn.c_proj.weight"),
            Piece(b + "attn.proj.bias", (h + "attn.c_proj.bias",)),
            Piece(b + "mlp_norm.weight", (h + "ln_2.weight",)),
            Piece(b + "mlp_norm.bias", (h + "ln_2.bias",)),
            transposed(b + "mlp.up.weight", h + "mlp.c_fc.weight"),
            Piece(b + "mlp.up.bias", (h + "mlp.c_fc.bias",)),
            transposed(b + "mlp.down.weight", h + "mlp.c_proj.weight"),
            Piece(b + "mlp.down.bias", (h + "mlp.c_proj.bias",)),
        ]
    return pieces + [Piece("norm.weight", ("transformer.ln_f.weight",)), Piece("norm.bias", ("transformer.ln_f.bias",))]


# ---- config.json <-> ModelConfig ----------------------------------------------------------------------------


def need(hf: dict, key: str, kind: type = int):
    value = hf.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ConfigError(f"config.json: '{key}' is {value!r}, expected {kind.__name__}; the config is damaged")
    return value


def refuse(unsupported: bool, message: str) -> None:
    if unsupported:
        raise ConfigError(f"config.json: {message}; unmask cannot express this checkpoint exactly")


def llama_config(hf: dict, qkv_bias: bool) -> ModelConfig:
    """Llama (qkv_bias False) or Qwen2 (True) config.json keys as a ModelConfig."""
    d, heads = need(hf, "hidden_size"), need(hf, "num_attention_heads")
    refuse(hf.get("hidden_act", "silu") != "silu", f"hidden_act {hf.get('hidden_act')!r} (only 'silu')")
    refuse(bool(hf.get("attention_bias") or hf.get("mlp_bias")), "attention_bias/mlp_bias (Llama without biases only)")
    refuse(hf.get("head_dim") not in (None, d // heads), f"head_dim {hf.get('head_dim')} != hidden_size / heads")
    refuse(bool(hf.get("use_sliding_window")), "use_sliding_window (sliding-window attention)")
    return ModelConfig(
        n_layer=need(hf, "num_hidden_layers"),
        d_model=d,
        n_head=heads,
        n_kv_head=hf.get("num_key_value_heads") if hf.get("num_key_value_heads") not in (None, heads) else None,
        d_mlp=need(hf, "intermediate_size"),
        vocab_size=need(hf, "vocab_size"),
        seq_len=need(hf, "max_position_embeddings"),
        rope_base=rope_theta(hf),
        rope_scaling=rope_scaling(hf.get("rope_scaling") or hf.get("rope_parameters")),
        norm_eps=need(hf, "rms_norm_eps", float),
        qkv_bias=qkv_bias,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        causal=True,
    )


def rope_theta(hf: dict) -> float:
    """RoPE's base: 'rope_theta' (published checkpoints, transformers 4) or inside 'rope_parameters' (5)."""
    params = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
    theta = hf.get("rope_theta", params.get("rope_theta", 10_000.0))
    refuse(not isinstance(theta, (int, float)) or not 0 < theta < float("inf"), f"rope_theta {theta!r}")
    return float(theta)


def rope_scaling(scaling) -> dict[str, float]:
    """Llama 3's scaling from 'rope_scaling' (or transformers 5's 'rope_parameters'); {} for plain RoPE."""
    if scaling is None:
        return {}
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else scaling
    refuse(kind not in ("llama3", "default"), f"rope_scaling {kind!r} (only Llama 3's 'llama3')")
    return {} if kind == "default" else {k: float(need(scaling, k, float)) for k in LLAMA3_ROPE_SCALING}


def llama_hf_config(cfg: ModelConfig, ids: dict) -> dict:
    """The config.json of LlamaForCausalLM (Qwen2ForCausalLM when the run has q/k/v biases)."""
    qwen2 = cfg.qkv_bias
    hf = {
        "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen2 else "llama",
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_width,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.seq_len,
        "rope_theta": cfg.rope_base,
        "rms_norm_eps": cfg.norm_eps,
        "hidden_act": "silu",
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": None,
        "eos_token_id": ids["eod_id"],
        "pad_token_id": ids["pad_id"],
        "torch_dtype": "float32",
    }
    if cfg.rope_scaling:
        hf["rope_scaling"] = {"rope_type": "llama3", **cfg.rope_scaling}
    return hf


def llada_config(hf: dict) -> ModelConfig:
    """LLaDA's config.json (model_type 'llada', its OLMo-style keys) as a bidirectional ModelConfig."""
    refuse(hf.get("block_type", "llama") != "llama", f"block_type {hf.get('block_type')!r} (only 'llama')")
    refuse(hf.get("activation_type", "silu") not in ("silu", "swiglu"), "activation_type (only silu)")
    refuse(hf.get("layer_norm_type", "rms") != "rms", "layer_norm_type (only 'rms')")
    refuse(bool(hf.get("include_bias") or hf.get("include_qkv_bias")), "include_bias (no biases only)")
    refuse(bool(hf.get("attention_layer_norm") or hf.get("alibi")), "attention_layer_norm/alibi")
    refuse(bool(hf.get("scale_logits") or hf.get("input_emb_norm")), "scale_logits/input_emb_norm")
    heads = need(hf, "n_heads")
    kv = hf.get("n_kv_heads") or heads
    return ModelConfig(
        n_layer=need(hf, "n_layers"),
        d_model=need(hf, "d_model"),
        n_head=heads,
        n_kv_head=kv if kv != heads else None,
        d_mlp=need(hf, "mlp_hidden_size"),
        vocab_size=hf.get("embedding_size") or need(hf, "vocab_size"),  # rows: the padded size when given
        seq_len=need(hf, "max_sequence_length"),
        rope_base=rope_theta(hf),
        norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(hf.get("weight_tying", False)),
        causal=False,
    )


def llada_hf_config(cfg: ModelConfig, ids: dict) -> dict:
    """LLaDA's config.json for an unmask MDM run (its keys as published; the auto_map that points at LLaDA's
    own modeling code is left out: no code travels with the folder)."""
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "block_type": "llama",
        "activation_type": "silu",
        "layer_norm_type": "rms",
        "d_model": cfg.d_model,
        "n_heads": cfg.n_head,
        "n_kv_heads": cfg.kv_heads,
        "n_layers": cfg.n_layer,
        "mlp_hidden_size": cfg.mlp_width,
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.vocab_size,
        "max_sequence_length": cfg.seq_len,
        "rope": True,
        "rope_theta": cfg.rope_base,
        "rms_norm_eps": cfg.norm_eps,
        "weight_tying": cfg.tie_embeddings,
        "include_bias": False,
        "include_qkv_bias": False,
        "eos_token_id": ids["eod_id"],
        "pad_token_id": ids["pad_id"],
        "mask_token_id": ids["mask_id"],
    }


def dream_config(hf: dict) -> ModelConfig:
    """Dream's config.json (Qwen2's keys, model_type 'Dream'): Qwen2's structure read bidirectionally, with the
    shifted logits it kept from the AR model it was adapted from."""
    return dataclasses.replace(llama_config(hf, qkv_bias=True), causal=False, shift_logits=True)


def dream_hf_config(cfg: ModelConfig, ids: dict) -> dict:
    """Dream's config.json for an unmask run (the auto_map to Dream's own modeling code is left out)."""
    hf = llama_hf_config(dataclasses.replace(cfg, qkv_bias=True), ids)
    return {**hf, "architectures": ["DreamModel"], "model_type": "Dream", "mask_token_id": ids["mask_id"]}


def gpt2_config(hf: dict) -> ModelConfig:
    refuse(hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"), "activation_function")
    refuse(bool(hf.get("scale_attn_by_inverse_layer_idx")), "scale_attn_by_inverse_layer_idx")
    refuse(hf.get("scale_attn_weights", True) is not True, "scale_attn_weights false")
    refuse(hf.get("tie_word_embeddings", True) is not True, "untied GPT-2 embeddings")
    d = need(hf, "n_embd")
    return ModelConfig(
        n_layer=need(hf, "n_layer"),
        d_model=d,
        n_head=need(hf, "n_head"),
        d_mlp=hf.get("n_inner") or 4 * d,
        vocab_size=need(hf, "vocab_size"),
        seq_len=need(hf, "n_positions"),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        mlp="gelu",
        norm="layernorm",
        positions="learned",
        bias=True,
        causal=True,
    )


def gpt2_hf_config(cfg: ModelConfig, ids: dict) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.mlp_width,
        "n_positions": cfg.seq_len,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": cfg.norm_eps,
        "activation_function": "gelu_new",
        "tie_word_embeddings": True,
        "eos_token_id": ids["eod_id"],
        "pad_token_id": ids["pad_id"],
    }


@dataclass(frozen=True)
class Layout:
    name: str
    objective: str
    """The unmask objective an imported run gets: 'ar' or 'mdm'."""
    model_config: Callable[[dict], ModelConfig]
    """config.json -> ModelConfig."""
    hf_config: Callable[[ModelConfig, dict], dict]
    """(ModelConfig, special ids) -> config.json."""
    pieces: Callable[[ModelConfig], list[Piece]]


LAYOUTS = {
    "llama": Layout("llama", "ar", lambda hf: llama_config(hf, False), llama_hf_config,
                    lambda c: rotary_pieces(c, LLAMA_NAMES)),
    "qwen2": Layout("qwen2", "ar", lambda hf: llama_config(hf, True), llama_hf_config,
                    lambda c: rotary_pieces(c, LLAMA_NAMES)),
    "gpt2": Layout("gpt2", "ar", gpt2_config, gpt2_hf_config, gpt2_pieces),
    "llada": Layout("llada", "mdm", llada_config, llada_hf_config, lambda c: rotary_pieces(c, LLADA_NAMES)),
    "dream": Layout("dream", "mdm", dream_config, dream_hf_config, lambda c: rotary_pieces(c, LLAMA_NAMES)),
}  # fmt: skip
"""model_type (config.json) -> its layout."""
