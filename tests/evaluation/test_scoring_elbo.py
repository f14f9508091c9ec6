"""Zero-shot scoring and validation estimate one ELBO, with the MDM objective's noise.

Both MC estimators of conditional scoring draw their masks and weights with the objective's functions
(`count_masks`, `mask_rate`); the count estimator is the one validation uses (`elbo_pass_sums`). Scoring
an answer a after a one-token context c is then validation's ELBO of the sequence [c, a]: equal for a
one-token answer (one mask, weight 1), and for longer answers both converge to the exact ELBO,
E_l E_S (|a|/l) Σ_{i∈S} −log p(a_i | c, a outside S), enumerated here over every count l and set S.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.evaluation.test_evaluation import MASK, PAD, score, small_mdm
from unmask.objectives import Specials
from unmask.objectives.mdm import count_masks, elbo_pass_sums

SPECIALS = Specials(mask_id=MASK, pad_id=PAD)


@torch.no_grad()
def validation_elbo(model, sequence: list[int], copies: int, passes: int, seed: int = 0) -> tuple[float, float]:
    """(mean, standard error) over passes of validation's ELBO (nats per sequence) of `sequence` given its first
    token, from a batch of `copies` copies of it (the count l stratified across them)."""
    batch = torch.tensor([sequence] * copies)
    sums = elbo_pass_sums(model, [batch], passes, torch.Generator().manual_seed(seed), SPECIALS).double() / copies
    return float(sums.mean()), float(sums.std() / math.sqrt(passes)) if passes > 1 else 0.0


@torch.no_grad()
def exact_elbo(model, ctx: list[int], ans: list[int]) -> float:
    """The count estimator's expectation, every count l ∈ 1..L (probability 1/L) and set S of l answer positions."""
    L, total = len(ans), 0.0
    for count in range(1, L + 1):
        sets = list(itertools.combinations(range(L), count))
        for S in sets:
            x_t = torch.tensor([ctx + [MASK if i in S else a for i, a in enumerate(ans)]])
            logits = model(x_t)[0, len(ctx) :].double()
            logits[:, MASK] = float("-inf")
            nll = -logits.log_softmax(-1)[list(S), [ans[i] for i in S]].sum()
            total += float(nll) * (L / count) / (L * len(sets))
    return total


def test_a_one_token_answer_scores_what_validation_gives_its_sequence():
    model = small_mdm()
    for ctx, ans in [([3], [5]), ([6], [4]), ([7], [7])]:
        scored = -score(model, ctx, ans, estimator="stratified", mc_samples=16).logprob
        validated, _ = validation_elbo(model, ctx + ans, copies=1, passes=1)
        assert scored == validated == pytest.approx(exact_elbo(model, ctx, ans), abs=1e-6)


@pytest.mark.parametrize("estimator", ["stratified", "random_t"])
def test_scoring_and_validation_converge_to_the_same_exact_elbo(estimator):
    model = small_mdm()
    ctx, ans = [3], [4, 6, 5]
    exact = exact_elbo(model, ctx, ans)
    scored = score(model, ctx, ans, estimator=estimator, mc_samples=3000)
    validated, stderr = validation_elbo(model, ctx + ans, copies=30, passes=100)
    assert -scored.logprob == pytest.approx(exact, abs=4 * scored.stderr)
    assert validated == pytest.approx(exact, abs=4 * stderr)


def test_count_masks_masks_exactly_l_positions_stratified_over_the_draws():
    L, n = 4, 8
    keys = torch.rand(n, L, generator=torch.Generator().manual_seed(0))
    masked, weight = count_masks(L, torch.tensor(0.3, dtype=torch.float64), keys)
    counts = masked.sum(1)
    assert sorted(counts.tolist()) == [1, 1, 2, 2, 3, 3, 4, 4]  # every count l ∈ 1..L equally often
    assert torch.equal(weight, L / counts.double())  # each draw weighs its masked CEs by L/l
