"""Sample-quality metrics on hand-made tokens with hand-computed values; gen-PPL under exactly known judges."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unmask.config import ConfigError, ModelConfig
from unmask.evaluation.metrics import (
    distinct_n,
    eos_rate,
    generative_perplexity,
    repetition_rate,
    text_quality,
    truncate_at_eos,
    unigram_entropy,
)
from unmask.model import Transformer, select_positions

SAMPLES = [[1, 2, 1, 2, 1], [3, 3, 3]]


def test_unigram_entropy_is_the_mean_of_each_samples_entropy():
    # sample 1: counts 3, 2 of 5 -> -(.6 ln .6 + .4 ln .4) = 0.67301; sample 2: one token -> 0
    assert unigram_entropy(SAMPLES) == pytest.approx((-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) + 0) / 2)
    assert unigram_entropy([[], [4, 5]]) == pytest.approx(math.log(2))  # empty samples do not count
    assert math.isnan(unigram_entropy([[]]))


def test_repetition_rate_counts_ngrams_seen_earlier_in_the_same_sample():
    # bigrams (1,2) (2,1) (1,2)* (2,1)* and (3,3) (3,3)*: 3 repeats of 6
    assert repetition_rate(SAMPLES, 2) == pytest.approx(3 / 6)
    assert repetition_rate(SAMPLES, 4) == 0.0  # (1,2,1,2) (2,1,2,1); the second sample has no 4-gram
    assert repetition_rate([[7, 8], [7, 8]], 2) == 0.0  # the same bigram in another sample is not a repeat
    assert math.isnan(repetition_rate([[1, 2, 3]], 4))


def test_distinct_n_pools_every_sample():
    assert distinct_n(SAMPLES, 1) == pytest.approx(3 / 8)  # {1, 2, 3} of 8 tokens
    assert distinct_n(SAMPLES, 2) == pytest.approx(3 / 6)  # {(1,2), (2,1), (3,3)} of 6 bigrams
    assert distinct_n([[1, 2], [2, 1]], 2) == 1.0  # (2, 1) would only exist across the boundary


def test_samples_end_at_the_first_eos_and_eos_rate_counts_every_eos():
    generated = torch.tensor([[5, 0, 6, 0], [7, 8, 9, 4]])
    assert truncate_at_eos(generated, 0) == [[5], [7, 8, 9, 4]]
    assert eos_rate(generated, 0) == 2 / 8


def test_text_quality_reads_the_tokens_after_the_prompt():
    samples = torch.tensor([[9, 1, 2, 1, 2, 1, 0, 3], [9, 3, 3, 3, 0, 0, 0, 0]])  # prompt [9], EOS = 0
    q = text_quality(samples, eod_id=0, prompt_len=1)
    assert q["samples"] == 2 and q["gen_len"] == 7 and q["mean_length"] == 4.0
    assert q["rep_2"] == pytest.approx(0.5) and q["distinct_1"] == pytest.approx(3 / 8)
    assert q["eos_rate"] == pytest.approx(5 / 14) and "gen_ppl" not in q


class Bigram(nn.Module):
    """A judge whose next-token distribution depends only on the current token: log p(b | a) = table[a, b]."""

    def __init__(self, vocab: int = 6, seq_len: int = 16, seed: int = 0):
        super().__init__()
        logits = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed))
        self.table = nn.Parameter(logits.log_softmax(-1))
        self.cfg = SimpleNamespace(causal=True, vocab_size=vocab, seq_len=seq_len)

    def forward(self, idx, output_mask=None, **kwargs):
        logits = self.table[idx]  # (B, T, V)
        return (
            logits if output_mask is None else select_positions(logits, output_mask)
        )  # (M, V), as Transformer.forward


def test_generative_perplexity_is_exact_under_a_bigram_judge():
    judge, eod = Bigram(), 0
    samples = torch.tensor([[4, 1, 2, 0, 5, 5], [3, 2, 2, 1, 3, 4]])  # prompt [4] / [3]
    lp = judge.table.detach()
    # row 0 is scored up to and including its first EOS (1, 2, 0); row 1 entirely (2, 2, 1, 3, 4)
    nll = -(lp[4, 1] + lp[1, 2] + lp[2, 0]) - (lp[3, 2] + lp[2, 2] + lp[2, 1] + lp[1, 3] + lp[3, 4])
    expected = math.exp(float(nll) / 8)
    for batch_size in (1, 2):
        assert generative_perplexity(judge, samples, 1, eod, batch_size=batch_size) == pytest.approx(expected)
    # no prompt: the first token is predicted from an EOS
    no_prompt = -(lp[0, 1] + lp[1, 2] + lp[2, 0])
    assert generative_perplexity(judge, samples[:1, 1:], 0, eod) == pytest.approx(math.exp(float(no_prompt) / 3))


def test_uniform_judge_has_the_vocabulary_size_as_perplexity():
    judge = Bigram(vocab=6)
    with torch.no_grad():
        judge.table.zero_()
    assert generative_perplexity(judge, torch.tensor([[1, 2, 3, 4]]), 2, eod_id=0) == pytest.approx(6.0)
    assert text_quality(torch.tensor([[1, 2, 3, 4]]), 0, judge, prompt_len=2)["gen_ppl"] == pytest.approx(6.0)


def test_batched_gen_ppl_with_ragged_prompts_equals_each_sample_alone():
    """A real causal Transformer: left padding, right-side EOS truncation and batching change nothing."""
    torch.manual_seed(0)
    judge = Transformer(ModelConfig(size="tiny", vocab_size=24, seq_len=16, causal=True)).eval().requires_grad_(False)
    for p in judge.parameters():
        p.mul_(10)  # far from the near-uniform initialisation, so every context matters
    pad, eod = 2, 0
    rows = [([5, 6], [7, 8, 0, 9]), ([10, 11, 12, 13], [14, 15, 16, 17])]  # (prompt, generated)
    samples = torch.tensor([[pad, pad, 5, 6, 7, 8, 0, 9], [10, 11, 12, 13, 14, 15, 16, 17]])
    mask = torch.tensor([[False, False, True, True], [True] * 4])
    batched = generative_perplexity(judge, samples, 4, eod, prompt_mask=mask)
    total = 0.0
    for prompt, gen in rows:
        one = torch.tensor([prompt + gen])
        scored = gen.index(eod) + 1 if eod in gen else len(gen)
        total += math.log(generative_perplexity(judge, one, len(prompt), eod)) * scored
    assert batched == pytest.approx(math.exp(total / 7), rel=1e-5)
    logits = judge(torch.tensor([[5, 6, 7, 8]])).log_softmax(-1)[0]  # and by hand for the first sample
    by_hand = -(logits[1, 7] + logits[2, 8] + logits[3, 0])
    assert generative_perplexity(judge, torch.tensor([[5, 6, 7, 8, 0, 9]]), 2, eod) == pytest.approx(
        math.exp(float(by_hand) / 3), rel=1e-5
    )


def test_judge_mismatches_fail_with_one_line():
    with pytest.raises(ConfigError, match="vocabulary"):
        generative_perplexity(Bigram(vocab=6), torch.tensor([[1, 7]]), 1, 0)
    with pytest.raises(ConfigError, match="seq_len"):
        generative_perplexity(Bigram(seq_len=4), torch.tensor([[1, 2, 3, 4, 5, 1]]), 1, 0)
    mdm = Transformer(ModelConfig(size="tiny", vocab_size=24, seq_len=16, causal=False))
    with pytest.raises(ConfigError, match="AR run"):
        generative_perplexity(mdm, torch.tensor([[1, 2]]), 1, 0)
