"""The reference that `unmask bench train --against reference` times: a minimal nanoGPT-style GPT.

Plain GPT-2 at the same shape as an unmask size: LayerNorm (no bias), a 4x GELU MLP (the same
non-embedding parameters as unmask's 8/3·d SwiGLU), learned positions, tied embeddings, SDPA
attention, no biases. Not used for training anything: it is the yardstick.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_layer: int, n_head: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d_model, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln(x), self.tok.weight)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the T - 1 predicted positions (nanoGPT's step)."""
        logits = self.forward(x[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())


def reference_optimizer(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float):
    """nanoGPT's configure_optimizers: AdamW with decay on matrices only, fused on CUDA only. On the CPU, foreach
    (what this yardstick has always been timed with; nanoGPT's own CPU default, the per-tensor loop, is slower)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type == "cuda" for p in model.parameters())
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused, foreach=not fused)


def non_embedding_params(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("tok.", "pos.", "embed.")))
