"""The samplers' per-step hook (`on_step`): it sees every step as it happens, and it can stop decoding."""

from __future__ import annotations

import pytest
import torch

from unmask.config import ModelConfig
from unmask.model import Transformer
from unmask.sampling import SamplerConfig, sample_ar, sample_mdm

MASK = 31


def tiny(causal: bool) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(size="tiny", vocab_size=32, seq_len=24, causal=causal)).eval()


@pytest.mark.parametrize("method", ["low_confidence", "threshold"])
def test_mdm_hook_sees_each_step_with_its_committed_tokens(method):
    seen = []
    out = sample_mdm(
        tiny(False), torch.tensor([[1, 2, 3]] * 2), 8, MASK, SamplerConfig.from_flat(method=method),
        on_step=lambda rows, x: seen.append((rows, x.clone())),
    )  # fmt: skip
    assert [rows for rows, _ in seen] == out.history
    for rows, x in seen:  # the canvas after the step holds the tokens committed at it, as they end
        for b, pos in enumerate(rows):
            assert all(x[b, p] != MASK and x[b, p] == out.tokens[b, p] for p in pos)
    assert (seen[-1][1] == out.tokens).all()


def test_ar_hook_sees_each_token_and_may_stop_decoding():
    seen = []

    def hook(rows, x):
        seen.append((rows, x[:, -1].tolist()))
        if len(seen) == 3:
            raise KeyboardInterrupt  # any exception stops the sampler: the server's cancel

    with pytest.raises(KeyboardInterrupt):
        sample_ar(tiny(True), torch.tensor([[1, 2]]), 10, on_step=hook)
    assert [rows for rows, _ in seen] == [[[2]], [[3]], [[4]]]
    full = sample_ar(tiny(True), torch.tensor([[1, 2]]), 10)
    assert [tok for _, (tok,) in seen] == full.tokens[0, 2:5].tolist()
