"""The loss head: per-token cross-entropy, eager and compiled (the GPU training path) alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.objectives.base import _compiled_cross_entropy, token_cross_entropy


def logits_and_targets(n: int, vocab: int = 11, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, vocab, generator=g, requires_grad=True), torch.randint(2, vocab, (n,), generator=g)


def test_the_excluded_class_gets_no_probability_mass():
    logits, targets = logits_and_targets(5)
    got = token_cross_entropy(torch.nn.Identity(), logits.detach().clone(), targets, excluded_id=1)
    renormalised = logits.detach().clone()
    renormalised[:, 1] = float("-inf")
    assert torch.equal(got, F.cross_entropy(renormalised, targets, reduction="none"))
    plain = token_cross_entropy(torch.nn.Identity(), logits, targets)
    assert torch.equal(plain, F.cross_entropy(logits, targets, reduction="none"))
    assert (got < plain).all()  # the mass of class 1 goes to the others, the target's among them


@pytest.mark.slow
@pytest.mark.parametrize("excluded_id", [None, 1])
def test_the_compiled_head_equals_the_eager_one_for_every_batch_shape(excluded_id):
    """GPU runs that compile take the compiled head; the number of scored positions varies from step to step
    (MDM), so one dynamic-shape graph must serve them all, with the eager values and gradients."""
    compiled = _compiled_cross_entropy()
    for n in (7, 13):  # two shapes: the second must not need another graph to be right
        logits, targets = logits_and_targets(n, seed=n)
        eager_logits = logits.detach().clone().requires_grad_()
        want = token_cross_entropy(torch.nn.Identity(), eager_logits * 1, targets, excluded_id=excluded_id)
        got = compiled(logits, targets, torch.float32, excluded_id)
        torch.testing.assert_close(got, want)
        (want * torch.arange(n)).sum().backward()
        (got * torch.arange(n)).sum().backward()
        torch.testing.assert_close(logits.grad, eager_logits.grad)
