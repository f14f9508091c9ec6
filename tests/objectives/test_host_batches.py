"""Host-batch objectives never wait for the device in a training step.

Their loss draws its noise and works out which positions it scores (whose number sets tensor shapes) on the
host copy of the batch, then moves to the model's device what the forward needs. The proof on a CPU-only
machine: the loss runs with the model on the meta device, where reading any value (bool(), .item(), a
boolean-mask index, nonzero) raises. On a GPU the same is checked with CUDA's sync debug mode.
"""

import pytest
import torch

from unmask.config import ModelConfig, TrainConfig
from unmask.model import Transformer
from unmask.objectives import OBJECTIVES, Batch, get_objective, objective_for
from unmask.objectives.base import Specials

SP = Specials(mask_id=1, pad_id=2, eod_id=3)
HOST_BATCHED = [name for name, o in OBJECTIVES.items() if o.host_batches]


def _batch(name: str, padded: bool) -> Batch:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 64, (4, 16), generator=g)
    if padded:
        tokens[0, -5:] = SP.pad_id
    if not name.startswith("sft"):
        return Batch(tokens)
    learned = torch.zeros_like(tokens, dtype=torch.bool)
    learned[:, 6:] = True  # the prompt is the first 6 tokens
    learned[tokens == SP.pad_id] = False
    return Batch(tokens, learned)


def _loss(name: str, model: torch.nn.Module, x: Batch, seed: int = 0):
    objective = objective_for(TrainConfig(objective=name))
    generator = torch.Generator(objective.noise_device(torch.device("cpu"))).manual_seed(seed)
    return objective.loss(model, x, SP, generator)


def _model(name: str, device: str = "cpu") -> Transformer:
    with torch.device(device):
        torch.manual_seed(0)
        return Transformer(ModelConfig(size="demo", vocab_size=64, seq_len=16, causal=get_objective(name).causal))


def test_pretraining_and_mdm_fine_tuning_take_host_batches():
    assert {"ar", "mdm", "sft_mdm"} <= set(HOST_BATCHED)


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("name", HOST_BATCHED)
def test_a_host_batch_loss_never_reads_the_model_device(name, padded):
    out = _loss(name, _model(name, "meta"), _batch(name, padded))
    out.loss_sum.backward()  # the backward too
    assert out.loss_sum.device.type == "meta"
    assert out.n_tokens > 0  # counted on the host


def test_the_meta_device_catches_a_sync():
    """The check above can fail: a boolean-mask index (the old path) needs the device's values."""
    model = _model("mdm", "meta")
    masked = torch.ones(4, 16, dtype=torch.bool, device="meta")
    with pytest.raises(NotImplementedError):
        model(torch.zeros(4, 16, dtype=torch.long, device="meta"), output_mask=masked)


def test_flat_indices_select_the_same_logits_as_a_boolean_mask():
    model = _model("mdm")
    x = _batch("mdm", padded=False).tokens
    masked = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    by_mask = model(x, output_mask=masked)
    by_index = model(x, output_mask=masked.flatten().nonzero().squeeze(1))
    assert torch.equal(by_mask, by_index)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (sync debug mode is CUDA's)")
@pytest.mark.parametrize("name", HOST_BATCHED)
def test_a_host_batch_step_does_not_synchronise_with_the_gpu(name):
    model = _model(name, "cuda")
    x = _batch(name, padded=False)
    _loss(name, model, x).loss_sum.backward()  # warm-up: allocator, kernels, pinned-memory pool
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", torch.bfloat16):
            out = _loss(name, model, x, seed=1)
        out.loss_sum.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
