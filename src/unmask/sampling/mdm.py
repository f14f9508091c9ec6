"""Masked-diffusion decoding with low-confidence remasking (LLaDA).

Start from an all-mask region; at each of S steps predict every masked position,
and commit the k_s most confident predictions (confidence = the probability of
the chosen token). k_s spreads the M masked tokens evenly over the steps (the
remainder goes to the first steps). Committed tokens never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unmask.sampling.gumbel import sample_categorical


@dataclass
class SampleOutput:
    tokens: torch.Tensor
    """(B, P + L) prompt followed by the generated tokens."""
    history: list[list[list[int]]] = field(default_factory=list)
    """Per step, per sequence: the positions committed at that step."""
    forward_passes: int = 0


def commit_schedule(n_masked: int, steps: int) -> list[int]:
    """Tokens committed at each step: ~M/S each, the remainder to the first steps."""
    base, extra = divmod(n_masked, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


@torch.no_grad()
def generate_mdm(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    gen_len: int,
    steps: int,
    mask_id: int,
    temperature: float = 0.0,
    banned_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Generate gen_len tokens after prompts (B, P) in `steps` denoising steps."""
    if not 1 <= steps <= gen_len:
        raise ValueError(f"steps={steps} must be in [1, gen_len={gen_len}]")
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_len), mask_id, dtype=prompt.dtype, device=prompt.device)], dim=1)
    out = SampleOutput(tokens=x)
    for k in commit_schedule(gen_len, steps):
        masked = x == mask_id  # (B, T)
        logits = model(x).float()  # (B, T, V)
        logits[..., [mask_id, *banned_ids]] = float("-inf")  # the mask token is never emitted
        x0 = sample_categorical(logits, temperature, generator)  # (B, T)
        confidence = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
        confidence = confidence.masked_fill(~masked, float("-inf"))
        chosen = confidence.topk(k, dim=-1).indices  # (B, k)
        x = x.scatter(1, chosen, x0.gather(1, chosen))
        out.history.append(chosen.tolist())
        out.forward_passes += 1
    out.tokens = x
    return out
