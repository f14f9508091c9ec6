"""R2FT on instruction batches (tokens, learned flags as the loss mask): the prompt and the answer before the cut
reach the model as they are, everything after the cut is masks, the winner and rejected targets follow the authors'
rule (checked on the tensors over many seeds), and the loss prefers the winner, on a real denoiser too."""

from __future__ import annotations

import pytest
import torch

from unmask.config import ConfigError, ModelConfig, R2ftConfig, TrainConfig
from unmask.model import Transformer, select_positions
from unmask.objectives import Batch, Specials, objective_for
from unmask.objectives.r2ft import continuation_logp, r2ft_batch, r2ft_loss

V, MASK, EOS, PAD = 64, 1, 2, 3
SP = Specials(mask_id=MASK, pad_id=PAD, eod_id=EOS)
T = 40


def batch(copies: int = 1) -> Batch:
    """Three conversations as an instruction folder stores them, `copies` times; the last has two turns (cut in
    the last answer)."""
    rows = [
        ([10, 11, 12, 13, *range(20, 35), EOS], [0] * 4 + [1] * 16),
        ([10, 11, 20, 21, EOS], [0] * 2 + [1] * 3),
        ([10, 11, 40, 41, EOS, 12, 13, *range(50, 60), EOS], [0, 0, 1, 1, 1, 0, 0] + [1] * 11),
    ]
    tokens, learned = torch.full((len(rows), T), PAD), torch.zeros(len(rows), T, dtype=torch.bool)  # (B, T) each
    for b, (ids, flags) in enumerate(rows):
        tokens[b, : len(ids)], learned[b, : len(ids)] = torch.tensor(ids), torch.tensor(flags, dtype=torch.bool)
    return Batch(tokens.repeat(copies, 1), learned.repeat(copies, 1))


ANSWER = [(4, 19), (2, 4), (7, 17)]  # (first answer position, its end-of-text) of each row of batch()


@pytest.mark.parametrize("filler", [False, True])
def test_the_batch_follows_the_rule_on_every_seed(filler):
    x = batch()
    tokens = x.tokens.masked_fill(x.tokens == PAD, EOS)  # the winner: padding as end-of-text
    kwargs = dict(filler_tokens=torch.tensor([5, 6]), filler_weights=torch.tensor([3.0, 1.0]), filler_rate=0.5)
    cuts, phrases = set(), set()
    for seed in range(300):
        b = r2ft_batch(x, SP, torch.Generator().manual_seed(seed), max_phrase=14, **(kwargs if filler else {}))
        assert len(b.rejected) == 1 + filler
        assert torch.equal(b.winner, tokens)
        for r, (start, eos) in enumerate(ANSWER):
            c, k = int(b.cut[r]), int(b.phrase[r])
            cuts.add((r, c))
            phrases.add((r, k))
            assert start + 1 <= c <= eos  # inside the answer, at least one answer token before it
            assert torch.equal(b.inputs[r, :c], tokens[r, :c])  # the prompt and the text before the cut as they are
            assert (b.inputs[r, c:] == MASK).all()  # then masks only, to the end of the window
            assert torch.equal(b.region[r], torch.arange(T) >= c)
            assert 1 <= k <= min(14, c - start)
            rejected = b.rejected[0][r]
            assert torch.equal(rejected[:c], tokens[r, :c])
            tail = rejected[c:]
            assert int((tail == EOS).sum()) >= 1
            phrase = tokens[r, c - k : c]
            tiled = phrase.repeat(T // k + 1)[: T - c]
            differs = (tail != tiled).nonzero().flatten()
            assert len(differs) <= 1 and all(tail[i] == EOS for i in differs)  # the tiling, one position → EOS
            if filler:
                f = b.rejected[1][r]
                assert torch.equal(f[:c], tokens[r, :c])
                swapped = f != tokens[r]
                assert set(f[swapped].tolist()) <= {5, 6}
    # every cut and phrase length the rule allows is drawn
    assert cuts == {(r, c) for r, (start, eos) in enumerate(ANSWER) for c in range(start + 1, eos + 1)}
    assert phrases == {(r, k) for r, (start, eos) in enumerate(ANSWER) for k in range(1, min(14, eos - start) + 1)}


def test_the_filler_substitutes_frequent_tokens_at_its_rate_in_proportion_to_their_counts():
    x = batch(copies=200)
    b = r2ft_batch(
        x, SP, torch.Generator().manual_seed(0), filler_tokens=torch.tensor([5, 6]),
        filler_weights=torch.tensor([3.0, 1.0]), filler_rate=0.2,
    )  # fmt: skip
    f = b.rejected[1]
    swapped = (f != b.winner) & b.region
    assert not ((f != b.winner) & ~b.region).any()
    assert swapped.sum() / b.region.sum() == pytest.approx(0.2, abs=0.015)
    assert (f[swapped] == 5).float().mean() == pytest.approx(0.75, abs=0.03)


def test_the_same_generator_seed_gives_the_same_batch():
    x = batch()
    a, b = (r2ft_batch(x, SP, torch.Generator().manual_seed(7), filler_rate=0.3, filler_tokens=torch.tensor([5]),
                       filler_weights=torch.tensor([1.0])) for _ in range(2))  # fmt: skip
    assert torch.equal(a.inputs, b.inputs) and all(
        torch.equal(p, q) for p, q in zip(a.rejected, b.rejected, strict=True)
    )


class Fixed(torch.nn.Module):
    """Logits that favour token 5 at every position."""

    def forward(self, x, output_mask=None, **kwargs):
        logits = torch.zeros(*x.shape, V)
        logits[..., 5] = 3.0
        return select_positions(logits, output_mask)


def test_continuation_logp_is_the_mean_over_each_rows_region_for_each_target():
    targets = torch.tensor([[9, 5, 5, 5], [9, 9, 5, 6]])
    region = torch.tensor([[False, True, True, True], [False, False, True, True]])
    inputs = targets.masked_fill(region, MASK)
    logp = continuation_logp(Fixed(), inputs, region, [targets, torch.full_like(targets, 5)], MASK)
    z = torch.logsumexp(torch.tensor([3.0] + [0.0] * (V - 2)), 0).item()  # the mask token excluded
    assert logp.shape == (2, 2)
    assert logp[0].tolist() == pytest.approx([3.0 - z, ((3.0 - z) + (0.0 - z)) / 2], rel=1e-6)
    assert logp[1].tolist() == pytest.approx([3.0 - z, 3.0 - z], rel=1e-6)


def test_the_loss_prefers_the_winner_and_keeps_an_sft_term():
    w, l_ = torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -0.5])
    loss = r2ft_loss(w, l_)
    assert loss[0] < loss[1]  # a rejected continuation the model finds likely costs more
    w.requires_grad_(True)
    r2ft_loss(w, l_).sum().backward()
    assert (w.grad < 0).all()  # raising the winner's likelihood always lowers the loss
    assert r2ft_loss(torch.tensor([0.0]), torch.tensor([0.0]), beta_a=0.0).item() == pytest.approx(0.6931, abs=1e-4)
    assert r2ft_loss(torch.tensor([-2.0]), torch.tensor([-50.0]), beta_a=0.1).item() == pytest.approx(0.2, abs=1e-3)
    two = r2ft_loss(torch.tensor([-1.0]), torch.tensor([[-3.0], [-0.5]]))  # two rejected: their terms averaged
    assert two.item() == pytest.approx((r2ft_loss(w[:1], l_[:1]) + r2ft_loss(w[1:], l_[1:])).item() / 2, abs=1e-6)
    # γ asks for a margin; β_l = 0 leaves the winner's terms only
    assert r2ft_loss(w, l_, gamma=1.0)[0] > r2ft_loss(w, l_)[0]


def test_the_objectives_gradient_raises_the_winners_margin_on_a_real_denoiser():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=V, seq_len=T, causal=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = batch()
    loss_fn = objective_for(TrainConfig(objective="r2ft")).loss

    def margin() -> float:
        with torch.no_grad():
            total = 0.0
            for seed in range(8):
                b = r2ft_batch(x, SP, torch.Generator().manual_seed(1000 + seed))
                lp = continuation_logp(model, b.inputs, b.region, [b.winner, *b.rejected], MASK)
                total += (lp[0] - lp[1]).mean().item()
            return total / 8

    before = margin()
    for step in range(30):
        loss_fn(model, x, SP, torch.Generator().manual_seed(step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert margin() > before + 1.0


def test_the_filler_without_its_tokens_is_refused_and_bad_weights_get_one_line():
    with pytest.raises(ConfigError, match="r2ft.filler_tokens"):
        objective_for(TrainConfig(objective="r2ft", r2ft=R2ftConfig(filler_rate=0.1)))
    for bad, match in [
        (dict(beta_w=-1.0), "train.r2ft.beta_w=-1.0: must be a finite number >= 0"),
        (dict(gamma=float("nan")), "train.r2ft.gamma=nan"),
        (dict(max_phrase=0), "train.r2ft.max_phrase=0"),
        (dict(filler_rate=1.5), "train.r2ft.filler_rate=1.5: must be in"),
        (dict(filler_tokens=[4, 5], filler_counts=[1]), "one count per"),
    ]:
        with pytest.raises(ConfigError, match=match):
            R2ftConfig(**bad)
