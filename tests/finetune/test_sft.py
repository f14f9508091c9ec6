"""SFT objectives on instruction batches (tokens, learned flags as the loss mask): the prompt is never masked and
never scored (checked on the tensors the model receives), MDM answers are padded with learned end-of-text, and
each MDM conversation is normalised by its answer length."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.config import TrainConfig
from unmask.model import select_positions
from unmask.objectives import Batch, Specials, get_objective, objective_for

V, MASK, EOS, PAD = 32, 1, 2, 3
SP = Specials(mask_id=MASK, pad_id=PAD, eod_id=EOS)


def as_bool_mask(output_mask: torch.Tensor, shape) -> torch.Tensor:
    """The (B, T) bool form of an output_mask given as a mask or as flat indices."""
    if output_mask.dtype == torch.bool:
        return output_mask.clone()
    return torch.zeros(shape, dtype=torch.bool).flatten().index_fill(0, output_mask, True).view(shape)


class Spy(torch.nn.Module):
    """Uniform logits; records what the loss feeds the model."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, key_padding_mask=None, output_mask=None, **kwargs):
        self.calls.append((x.clone(), None if output_mask is None else as_bool_mask(output_mask, x.shape)))
        logits = torch.zeros(*x.shape, V) + self.scale
        return logits if output_mask is None else select_positions(logits, output_mask)


def batch() -> Batch:
    """Two conversations as an instruction folder stores them: right-padded with PAD, learned flags beside."""
    rows = [
        ([10, 11, 12, 13, 20, 21, EOS], [0] * 4 + [1] * 3),
        ([10, 11, 20, 21, 20, 21, 20, 21, EOS], [0] * 2 + [1] * 7),
    ]
    tokens, learned = torch.full((2, 12), PAD), torch.zeros(2, 12, dtype=torch.bool)  # (B, T) each
    for b, (ids, flags) in enumerate(rows):
        tokens[b, : len(ids)], learned[b, : len(ids)] = torch.tensor(ids), torch.tensor(flags, dtype=torch.bool)
    return Batch(tokens, learned)


def loss_of(name: str, model, batch: Batch, seed: int = 0, **cfg):
    loss = objective_for(TrainConfig.from_flat(objective=name, **cfg)).loss
    return loss(model, batch, SP, torch.Generator().manual_seed(seed))


def test_mdm_sees_padding_as_learned_end_of_text_and_never_masks_or_scores_the_prompt():
    x = batch()
    prompt = ~x.loss_mask
    prompt[x.tokens == PAD] = False  # padding is not prompt: it becomes learned end-of-text
    model = Spy()
    for seed in range(50):
        loss_of("sft_mdm", model, x, seed)
    for x_t, output_mask in model.calls:
        assert torch.equal(x_t[prompt], x.tokens[prompt])  # the prompt reaches the model as it is
        assert not (output_mask & prompt).any()  # and no prompt position is scored
        assert torch.equal(x_t == MASK, output_mask)  # every masked position is scored
        assert not (x_t == PAD).any()  # padding arrives as end-of-text (or masked)
        assert (x_t[0, 7:] == EOS).logical_or(x_t[0, 7:] == MASK).all()
    ever_masked = torch.stack([output_mask for _, output_mask in model.calls]).any(0)
    assert ever_masked[~prompt].all()  # every answer position, padding included, gets masked and scored


def test_mdm_normalises_each_conversation_by_its_answer_length():
    # p close to 1: every answer token masked; uniform logits over the V - 1 non-mask tokens give CE log(V - 1)
    # at each, so each conversation contributes log(V - 1) / p whatever its answer length.
    out = loss_of("sft_mdm", Spy(), batch(), mdm_eps=1 - 1e-9)
    assert out.loss_sum.item() == pytest.approx(2 * math.log(V - 1), rel=1e-5)
    assert out.n_tokens == 2 == get_objective("sft_mdm").n_targets(batch(), PAD)  # the mean over conversations


def test_ar_scores_only_the_answer_and_its_end_of_text():
    x = batch()
    model = Spy()
    out = loss_of("sft_ar", model, x)
    inputs, output_mask = model.calls[0]
    assert torch.equal(inputs, x.tokens[:, :-1]) and torch.equal(output_mask, x.loss_mask[:, 1:])
    assert out.n_tokens == 3 + 7 == get_objective("sft_ar").n_targets(x, PAD)
    assert out.loss_sum.item() == pytest.approx(10 * math.log(V))


def test_conversation_tokens_are_counted_as_seen_not_the_flags():
    assert get_objective("sft_ar").real_tokens(batch(), PAD) == 7 + 9
    assert get_objective("mdm").real_tokens(Batch(batch().tokens), PAD) == 7 + 9
