"""R2FT: the rejected continuations follow the authors' rule, and the loss prefers the winner."""

from __future__ import annotations

import random

import pytest
import torch

from unmask.finetune.r2ft import continuation_logp, high_prior_filler, r2ft_loss, repeated_phrase

EOS, MASK, V = 2, 1, 16


@pytest.mark.parametrize("seed", range(20))
def test_the_rejected_continuation_tiles_a_short_phrase_with_one_end_of_text(seed):
    rng = random.Random(seed)
    prefix, span = list(range(100, 140)), rng.randint(30, 49)
    rejected = repeated_phrase(prefix, span, EOS, rng)
    assert len(rejected) == span and rejected.count(EOS) == 1
    eos_at = rejected.index(EOS)
    tilings = [k for k in range(1, 15) if all(t == prefix[-k:][i % k] for i, t in enumerate(rejected) if i != eos_at)]
    assert tilings  # the last k tokens before the cut, k in 1..14, tiled from the start of the span


def test_a_one_token_prefix_repeats_that_token():
    assert sorted(set(repeated_phrase([7], 30, EOS, random.Random(0)))) == [EOS, 7]
    with pytest.raises(ValueError, match="non-empty prefix"):
        repeated_phrase([], 30, EOS, random.Random(0))


def test_high_prior_filler_substitutes_at_its_rate():
    rng = random.Random(0)
    continuation = [50] * 10_000
    filled = high_prior_filler(continuation, [3, 4], [3.0, 1.0], 0.2, rng)
    replaced = [t for t in filled if t != 50]
    assert len(replaced) / len(filled) == pytest.approx(0.2, abs=0.015)
    assert replaced.count(3) / len(replaced) == pytest.approx(0.75, abs=0.03)  # in proportion to the counts


class Fixed(torch.nn.Module):
    """Logits that favour token 5 at every position."""

    def forward(self, x, output_mask=None, **kwargs):
        logits = torch.zeros(*x.shape, V)
        logits[..., 5] = 3.0
        return logits[output_mask]


def test_continuation_logp_is_the_mean_over_each_rows_region():
    targets = torch.tensor([[9, 5, 5, 5], [9, 9, 5, 6]])
    region = torch.tensor([[False, True, True, True], [False, False, True, True]])
    inputs = targets.masked_fill(region, MASK)
    logp = continuation_logp(Fixed(), inputs, region, targets, MASK)
    z = torch.logsumexp(torch.tensor([3.0] + [0.0] * (V - 2)), 0)  # the mask token excluded
    assert logp.tolist() == pytest.approx([3.0 - z.item(), ((3.0 - z) + (0.0 - z)).item() / 2], rel=1e-6)


def test_the_loss_prefers_the_winner_and_keeps_an_sft_term():
    w, l_ = torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -0.5])
    loss = r2ft_loss(w, l_)
    assert loss[0] < loss[1]  # a rejected continuation the model finds likely costs more
    w.requires_grad_(True)
    r2ft_loss(w, l_).sum().backward()
    assert (w.grad < 0).all()  # raising the winner's likelihood always lowers the loss
    assert r2ft_loss(torch.tensor([0.0]), torch.tensor([0.0]), beta_a=0.0).item() == pytest.approx(0.6931, abs=1e-4)
    assert r2ft_loss(torch.tensor([-2.0]), torch.tensor([-50.0]), beta_a=0.1).item() == pytest.approx(0.2, abs=1e-3)


def test_with_a_real_denoiser_the_loss_trains_the_winner_up_and_the_repetition_down():
    from unmask.config import ModelConfig
    from unmask.model import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=V, seq_len=12, causal=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    prefix = torch.tensor([[7, 8, 9, 10, 11, 12]])
    winner = torch.tensor([[13, 14, 15, 3, 4, EOS]])
    rejected = torch.tensor([repeated_phrase(prefix[0].tolist(), 6, EOS, random.Random(1))])
    region = torch.cat([torch.zeros(1, 6, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)], 1)
    inputs = torch.cat([prefix, torch.full((1, 6), MASK)], 1)  # the prefix, then masks only

    def margins() -> float:
        with torch.no_grad():
            w = continuation_logp(model, inputs, region, torch.cat([prefix, winner], 1), MASK)
            r = continuation_logp(model, inputs, region, torch.cat([prefix, rejected], 1), MASK)
        return (w - r).item()

    before = margins()
    for _ in range(20):
        w = continuation_logp(model, inputs, region, torch.cat([prefix, winner], 1), MASK)
        r = continuation_logp(model, inputs, region, torch.cat([prefix, rejected], 1), MASK)
        r2ft_loss(w, r).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert margins() > before + 1.0
