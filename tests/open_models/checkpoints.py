"""Tiny random checkpoints written in the published formats (parameter names, shapes, config keys), and the
reference forward passes the imports are compared with. Nothing is downloaded: every file is made here."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

VOCAB = 96
"""Embedding rows of every tiny checkpoint; the tokenizer has fewer tokens, so unmask's <|mask|> and <|pad|>
find spare rows (as in Qwen2's and LLaDA's published embeddings)."""
WORDS = "the a of and to in is was it that he she her his had with for as at by on not be but".split()


def write_tokenizer(folder: Path, extra: tuple[str, ...] = ()) -> None:
    """A word-level tokenizer.json: <unk>, <|endoftext|>, the words and any `extra` special tokens."""
    vocab = {t: i for i, t in enumerate(["<unk>", "<|endoftext|>", *WORDS, *extra])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def hf_model(kind: str, **overrides):
    """A tiny random transformers model of `kind` (llama, qwen2, gpt2) in float32, eager attention."""
    import transformers as tf

    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=64, eos_token_id=1, bos_token_id=None, pad_token_id=None)  # fmt: skip
    if kind == "llama":
        config = tf.LlamaConfig(**{**small, "num_key_value_heads": 2, "rope_theta": 5000.0, **overrides})
        model = tf.LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = tf.Qwen2Config(**{**small, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, **overrides})
        model = tf.Qwen2ForCausalLM(config)
    else:
        config = tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, eos_token_id=1,
                               bos_token_id=1, **overrides)  # fmt: skip
        model = tf.GPT2LMHeadModel(config)
    with torch.no_grad():  # transformers zeroes biases and keeps norms at 1: random ones test the mapping
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def write_hf(kind: str, folder: Path, max_shard_size: str | None = None, **overrides):
    """The transformers model of `hf_model` saved with save_pretrained (safetensors) plus a tokenizer.json."""
    model = hf_model(kind, **overrides)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    write_tokenizer(folder)
    return model


# ---- LLaDA ---------------------------------------------------------------------------------------------------
# LLaDA's published modeling code (modeling_llada.py, an OLMo fork) is not a transformers class, so its forward
# is written out here from that code's structure as we know it (no reference file was at hand when writing it):
# wte -> per block: x + attn_out(attention(rotary(q_proj, k_proj)(attn_norm(x)), v_proj)), then
# x + ff_out(silu(ff_proj(h)) * up_proj(h)), h = ff_norm(x) -> ln_f -> ff_out (untied). RMSNorm in float32,
# RoPE rotating the halves of each head (rotate_half), no causal mask.

LLADA_CONFIG = {
    "architectures": ["LLaDAModelLM"], "model_type": "llada", "block_type": "llama", "activation_type": "silu",
    "layer_norm_type": "rms", "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 48,
    "mlp_ratio": 4, "vocab_size": VOCAB, "embedding_size": VOCAB, "max_sequence_length": 64, "rope": True,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "weight_tying": False, "include_bias": False,
    "include_qkv_bias": False, "alibi": False, "attention_layer_norm": False, "scale_logits": False,
    "input_emb_norm": False, "eos_token_id": 1, "pad_token_id": 1, "mask_token_id": VOCAB - 3,
}  # fmt: skip


def llada_weights(cfg: dict = LLADA_CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, h, V = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    kv = cfg["n_kv_heads"] * d // cfg["n_heads"]
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    w = {"model.transformer.wte.weight": rand(V, d), "model.transformer.ln_f.weight": 1 + rand(d),
         "model.transformer.ff_out.weight": rand(V, d)}  # fmt: skip
    for i in range(cfg["n_layers"]):
        b = f"model.transformer.blocks.{i}."
        shapes = {"attn_norm": (d,), "ff_norm": (d,), "q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d),
                  "attn_out": (d, d), "ff_proj": (h, d), "up_proj": (h, d), "ff_out": (d, h)}  # fmt: skip
        w |= {f"{b}{name}.weight": rand(*shape) + (len(shape) == 1) for name, shape in shapes.items()}
    return w


def write_llada(folder: Path, cfg: dict = LLADA_CONFIG) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    weights = llada_weights(cfg)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(folder)
    return weights


def llada_reference(w: dict[str, torch.Tensor], cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """LLaDA's forward (logits (B, T, V)) in the structure of its published code."""
    d, H = cfg["d_model"], cfg["n_heads"]
    Hkv, Dh, eps = cfg["n_kv_heads"], d // H, cfg["rms_norm_eps"]
    B, T = idx.shape

    def rms(x, weight):
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / cfg["rope_theta"] ** (torch.arange(0, Dh, 2).float() / Dh)
    freqs = torch.einsum("i , j -> i j", torch.arange(T).float(), inv_freq)
    positions = torch.cat((freqs, freqs), dim=-1)
    cos, sin = positions.cos()[None, None], positions.sin()[None, None]

    def rotate_half(x):
        x1, x2 = x.view(B, -1, T, 2, Dh // 2).unbind(dim=-2)
        return torch.cat((-x2, x1), dim=-1)

    x = w["model.transformer.wte.weight"][idx]
    for i in range(cfg["n_layers"]):
        b = f"model.transformer.blocks.{i}."
        h = rms(x, w[b + "attn_norm.weight"])
        q = (h @ w[b + "q_proj.weight"].T).view(B, T, H, Dh).transpose(1, 2)
        k = (h @ w[b + "k_proj.weight"].T).view(B, T, Hkv, Dh).transpose(1, 2)
        v = (h @ w[b + "v_proj.weight"].T).view(B, T, Hkv, Dh).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # no causal mask
        x = x + att.transpose(1, 2).reshape(B, T, d) @ w[b + "attn_out.weight"].T
        h = rms(x, w[b + "ff_norm.weight"])
        x = x + (F.silu(h @ w[b + "ff_proj.weight"].T) * (h @ w[b + "up_proj.weight"].T)) @ w[b + "ff_out.weight"].T
    return rms(x, w["model.transformer.ln_f.weight"]) @ w["model.transformer.ff_out.weight"].T


# ---- Dream ---------------------------------------------------------------------------------------------------
# Dream (Dream-org's Dream-v0 7B) is Qwen2.5 adapted into an MDM: Qwen2's parameters and config keys under
# model_type "Dream", attention without a causal mask, and the AR model's shift kept: the logits at position i
# predict token i + 1, which its generation code applies as cat([logits[:, :1], logits[:, :-1]], 1). The reference
# is transformers' own Qwen2 given an all-visible 4-D attention mask, then that shift.


def write_dream(folder: Path, mask_token_id: int = VOCAB - 3):
    """A tiny random Qwen2 saved with Dream's config.json keys; returns the transformers model."""
    model = write_hf("qwen2", folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "Dream", "architectures": ["DreamModel"], "mask_token_id": mask_token_id}
    (folder / "config.json").write_text(json.dumps(config))
    return model


def dream_reference(model, idx: torch.Tensor) -> torch.Tensor:
    """Dream's logits for idx (B, T): the Qwen2 read bidirectionally, then shifted by one position."""
    B, T = idx.shape
    logits = model(idx, attention_mask=torch.ones(B, 1, T, T, dtype=torch.bool)).logits
    return torch.cat([logits[:, :1], logits[:, :-1]], 1)


def write_sparse(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> None:
    """A safetensors file with the header of these tensors and a hole for their data: the size of a real
    checkpoint on no disk, for code that reads headers only."""
    header, offset = {}, 0
    itemsize = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    for name, shape in shapes.items():
        size = itemsize * int(torch.Size(shape).numel())
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
