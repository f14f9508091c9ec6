"""A minimal reference GPT training loop (nanoGPT style), to put `unmask bench train` in context.

Same size and settings as the demo model: 3 layers, d_model 96, 4 heads, vocabulary
1024, sequences of 64, batch 16, AdamW (0.9, 0.95), weight decay 0.1, grad clip 1.0,
fp32 on CPU. Architecture is plain GPT-2: LayerNorm, GELU MLP (4x), learned
positions, tied embeddings, SDPA attention, no biases.

    python benchmarks/reference_gpt.py            # reference tokens/s
    python benchmarks/reference_gpt.py --compare  # and unmask's AR/MDM, with the ratio
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

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

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, d: int, n_layer: int, n_head: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln(x), self.tok.weight)


def bench_reference(steps: int = 30, warmup: int = 5, batch: int = 16, seq_len: int = 64, vocab: int = 1024) -> float:
    torch.manual_seed(0)
    model = GPT(vocab, seq_len, d=96, n_layer=3, n_head=4)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=2e-3, betas=(0.9, 0.95)
    )
    x = torch.randint(0, vocab, (batch, seq_len))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / steps
    return batch * seq_len / seconds


def bench_unmask(steps: int, threads: int) -> dict:
    """unmask's AR and MDM steps, in a fresh process (its allocator tuning is process-wide)."""
    code = (
        "import json, torch; from unmask.bench import bench_train; "
        f"r = bench_train({steps}, {threads}, 'demo', 16, 64, 1024); print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="alternate reference/unmask this many times")
    parser.add_argument("--compare", action="store_true", help="also time unmask's AR and MDM steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref, ours = [], {"ar": [], "mdm": []}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        ref.append(bench_reference(args.steps))
        if args.compare:
            result = bench_unmask(args.steps, args.threads)
            for k in ours:
                ours[k].append(result[k]["tokens_per_s"])
    best_ref = max(ref)
    print(f"reference GPT: {best_ref:,.0f} tokens/s (best of {args.repeats}, {args.threads} thread(s))")
    if args.compare:
        for k, v in ours.items():
            print(f"unmask {k:3s}:   {max(v):,.0f} tokens/s = {max(v) / best_ref:.2f}x the reference")


if __name__ == "__main__":
    main()
