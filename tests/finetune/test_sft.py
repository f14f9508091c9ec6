"""SFT losses: the prompt is never masked and never scored (checked on the tensors the model receives),
answers are padded with learned end-of-text for MDM, and each MDM sequence is normalised by its answer."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.finetune.chat import InstructionDataError
from unmask.finetune.sft import ar_sft_loss, mdm_sft_loss, sft_batch

V, MASK, EOS, PAD = 32, 1, 2, 3


class Spy(torch.nn.Module):
    """Uniform logits; records what the loss feeds the model."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, key_padding_mask=None, output_mask=None, **kwargs):
        self.calls.append((x.clone(), None if output_mask is None else output_mask.clone()))
        logits = torch.zeros(*x.shape, V) + self.scale
        return logits if output_mask is None else logits[output_mask]


def batch(pad_with_eos: bool):
    prompt, answer = [10, 11, 12, 13], [20, 21]
    short = (prompt + answer + [EOS], [False] * 4 + [True] * 3)
    long = (prompt[:2] + answer * 3 + [EOS], [False] * 2 + [True] * 7)
    return sft_batch([short, long], 12, EOS, PAD, pad_with_eos)


def test_mdm_batches_pad_answers_with_learned_end_of_text_and_ar_with_unlearned_padding():
    tokens, learned = batch(pad_with_eos=True)
    assert tokens[0].tolist() == [10, 11, 12, 13, 20, 21, EOS, EOS, EOS, EOS, EOS, EOS]
    assert learned[0].tolist() == [False] * 4 + [True] * 8
    tokens, learned = batch(pad_with_eos=False)
    assert tokens[0].tolist() == [10, 11, 12, 13, 20, 21, EOS, PAD, PAD, PAD, PAD, PAD]
    assert learned[0].tolist() == [False] * 4 + [True] * 3 + [False] * 5


def test_a_conversation_longer_than_the_sequence_is_one_clear_error():
    with pytest.raises(InstructionDataError, match="conversation 1 is 13 tokens, longer than the sequence"):
        sft_batch([([5] * 13, [True] * 13)], 12, EOS, PAD, True)


def test_mdm_never_masks_or_scores_the_prompt():
    tokens, learned = batch(pad_with_eos=True)
    model = Spy()
    for seed in range(50):
        mdm_sft_loss(model, tokens, learned, MASK, torch.Generator().manual_seed(seed))
    for x_t, output_mask in model.calls:
        assert torch.equal(x_t[~learned], tokens[~learned])  # the prompt reaches the model as it is
        assert not (output_mask & ~learned).any()  # and no prompt position is scored
        assert torch.equal(x_t == MASK, output_mask)  # every masked position is scored
    ever_masked = torch.stack([output_mask for _, output_mask in model.calls]).any(0)
    assert ever_masked[learned].all()  # every answer position (padding included) gets masked and scored


def test_mdm_normalises_each_sequence_by_its_answer_length():
    tokens, learned = batch(pad_with_eos=True)
    # p close to 1: every answer token masked; uniform logits over the V - 1 non-mask tokens give CE log(V - 1)
    # at each, so each sequence contributes log(V - 1) / p whatever its answer length.
    loss = mdm_sft_loss(Spy(), tokens, learned, MASK, torch.Generator().manual_seed(0), eps=1 - 1e-9)
    assert loss.item() == pytest.approx(2 * math.log(V - 1), rel=1e-5)


def test_ar_scores_only_the_answer_and_its_end_of_text():
    tokens, learned = batch(pad_with_eos=False)
    model = Spy()
    total, n = ar_sft_loss(model, tokens, learned)
    x, output_mask = model.calls[0]
    assert torch.equal(x, tokens[:, :-1]) and torch.equal(output_mask, learned[:, 1:])
    assert n == 3 + 7 and total.item() == pytest.approx(n * math.log(V))
