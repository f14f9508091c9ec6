"""EDLM's NCE loss: its sign (data down, model samples up) and its value."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.finetune.energy import nce_loss


def test_nce_pushes_the_datas_energy_down_and_the_samples_up():
    data, samples = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    loss = nce_loss(data, samples)
    assert loss.item() == pytest.approx(2 * math.log(2))  # an energy that tells nothing apart
    loss.backward()
    assert (data.grad > 0).all() and (samples.grad < 0).all()  # descent lowers E(data), raises E(samples)


def test_nce_is_low_when_the_energy_separates_data_from_samples():
    separating = nce_loss(torch.full((4,), -5.0), torch.full((4,), 5.0))
    inverted = nce_loss(torch.full((4,), 5.0), torch.full((4,), -5.0))
    assert separating.item() < 0.02 < 10.0 < inverted.item()
