"""EDLM-NCE: the loss's sign, the energy model, the samples NCE contrasts with, the sampler's use of the energy
(sign, batch layout) and, on tiny runs, training, resume and sampling quality."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import tiny_model_config, tiny_train_config
from unmask.config import ConfigError, ModelConfig
from unmask.finetune.energy import nce_loss, train_energy
from unmask.model import Transformer, count_params, select_positions
from unmask.objectives import Specials, get_objective
from unmask.objectives.energy import model_samples
from unmask.objectives.validation import validation_loss
from unmask.run import Run
from unmask.sampling.config import EnergyConfig, SamplerConfig
from unmask.sampling.mdm import candidate_energies, resample_by_energy, sample_mdm

MASK, PAD = 1, 2
SP = Specials(MASK, PAD, 0)


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


# --- the energy model -------------------------------------------------------------------------------


def energy_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=2, vocab_size=24, seq_len=16, causal=False, energy_head=True)
    return Transformer(cfg).eval()


def test_the_energy_head_is_counted_and_each_row_is_scored_alone():
    model = energy_model()
    assert count_params(model.cfg) == sum(p.numel() for p in model.parameters())
    x = torch.randint(3, 24, (3, 16), generator=torch.Generator().manual_seed(0))
    masked = torch.rand(3, 16, generator=torch.Generator().manual_seed(1)) < 0.8
    with torch.no_grad():
        together = model(x, energy_mask=masked)  # (3,)
        alone = torch.cat([model(x[b : b + 1], energy_mask=masked[b : b + 1]) for b in range(3)])
    assert together.shape == (3,)
    torch.testing.assert_close(together, alone)


def test_model_samples_redraw_only_the_masked_positions_of_their_own_row():
    """A denoiser that predicts each row's first token everywhere: row b's draws are row b's, never mask/pad."""

    class CopyFirst(nn.Module):
        def forward(self, x_t, key_padding_mask=None, output_mask=None):
            logits = torch.full((*x_t.shape, 24), -30.0)
            logits.scatter_(-1, x_t[:, :1, None].expand(-1, x_t.shape[1], 1), 30.0)
            logits[..., MASK] = logits[..., PAD] = 50.0  # banned however likely
            return select_positions(logits, output_mask)

    x0 = torch.tensor([[5] * 8, [9] * 8, [17] * 8]) + torch.arange(8)
    x0[:, 0] = torch.tensor([5, 9, 17])
    masked = torch.zeros(3, 8, dtype=torch.bool)
    masked[:, 3:6] = True
    out = model_samples(CopyFirst(), x0, masked, SP, None, torch.Generator().manual_seed(0))
    assert torch.equal(out[~masked], x0[~masked])
    assert torch.equal(out[:, 3:6], x0[:, :1].expand(-1, 3))


# --- the sampler: sign and batch layout -------------------------------------------------------------


class MatchEnergy(nn.Module):
    """A stub energy model (energy_head): E = 0 for a candidate equal to a target row, 10 otherwise."""

    def __init__(self, targets: torch.Tensor):
        super().__init__()
        self.targets = targets  # (B, T)
        self.cfg = SimpleNamespace(seq_len=targets.shape[1], causal=False, energy_head=True)
        self.masks = []

    def forward(self, idx, energy_mask=None, **kwargs):
        self.masks.append(energy_mask)
        k = len(idx) // len(self.targets)
        want = self.targets.repeat_interleave(k, 0)  # row b*k + j is sequence b's candidate j
        return 10.0 * (idx != want).any(1).float()


def test_a_candidate_equal_to_the_data_gets_the_higher_weight():
    data = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    other = torch.tensor([[3, 4, 11, 12], [7, 8, 13, 14]])
    candidates = torch.stack([torch.stack([other[b], data[b]]) for b in range(2)])  # (B=2, k=2, T)
    masked = torch.tensor([[False, False, True, True]] * 2)
    energy = candidate_energies(MatchEnergy(data), candidates, masked, torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(energy, torch.tensor([[10.0, 0.0], [10.0, 0.0]], dtype=torch.float64))  # E, not −E
    chosen, weights = resample_by_energy(candidates, energy, 1.0, torch.Generator().manual_seed(0))
    assert (weights[:, 1] > 0.99).all() and torch.equal(chosen, data)  # weight ∝ exp(−E): lower energy wins


class UniformDenoiser(nn.Module):
    def __init__(self, V: int, T: int):
        super().__init__()
        self.V, self.cfg = V, SimpleNamespace(seq_len=T, causal=False)

    def forward(self, idx, output_mask=None, **kwargs):
        logits = torch.zeros(*idx.shape, self.V)
        logits[..., :3] = -1e9  # eod, mask, pad never drawn
        return select_positions(logits, output_mask)


def test_a_batch_of_three_rows_is_each_resampled_from_its_own_candidates():
    """A uniform denoiser over 13 tokens, 128 candidates, an energy that wants a different token per row."""
    targets = torch.tensor([[0, 3], [0, 8], [0, 14]])
    energy = MatchEnergy(targets)
    cfg = SamplerConfig.from_flat(method="ancestral", steps=1, temperature=1.0, edlm_candidates=128, edlm_t_end=0.0)
    g = torch.Generator().manual_seed(0)
    out = sample_mdm(UniformDenoiser(16, 2), torch.zeros(3, 1, dtype=torch.long), 1, MASK, cfg, (0,), g, energy)
    assert torch.equal(out.tokens, targets) and out.energy_passes == 1
    assert energy.masks[-1].shape == (3 * 128, 2) and energy.masks[-1][:, 1].all() and not energy.masks[-1][:, 0].any()
    plain = SamplerConfig.from_flat(method="ancestral", steps=1, temperature=1.0)
    assert not torch.equal(sample_mdm(UniformDenoiser(16, 2), targets[:, :1], 1, MASK, plain, (0,), g).tokens, targets)


def test_nce_window_defaults_to_the_samplers():
    cfg, window = tiny_train_config(), EnergyConfig()
    assert (cfg.nce.t_min, cfg.nce.t_max) == (window.t_end, window.t_start)


# --- tiny runs: training, resume, Run, sampling -------------------------------------------------------


@pytest.fixture(scope="module")
def base_runs(tiny_data, tmp_path_factory):
    from unmask.training import train

    root = tmp_path_factory.mktemp("edlm")
    quiet = dict(quiet=True, tensorboard=False)
    mdm_cfg = tiny_train_config(objective="mdm", epochs=8, eval_every=1000)
    mdm = train(tiny_data.path, root / "mdm", tiny_model_config(tiny_data, causal=False), mdm_cfg, **quiet)
    ar_cfg = tiny_train_config(objective="ar", epochs=4, eval_every=1000)
    ar = train(tiny_data.path, root / "ar", tiny_model_config(tiny_data), ar_cfg, **quiet)
    return root, mdm, ar


ENERGY_TRAIN = dict(epochs=16, lr=3e-3, eval_every=22, eval_mc_passes=2, final_mc_passes=4)
"""94 training sequences: the energy soon learns them by heart."""


@pytest.fixture(scope="module")
def energy_run(base_runs):
    root, mdm, _ = base_runs
    return train_energy(mdm, root / "energy", train=tiny_train_config(**ENERGY_TRAIN), quiet=True, tensorboard=False)


@pytest.mark.slow
def test_the_nce_loss_falls_and_the_run_opens_as_an_energy_run(energy_run, base_runs, tiny_data):
    run = Run(energy_run)
    assert run.objective.energy and run.model_config.energy_head and run.train_config.init_from
    run.load_model("last"), run.load_model("best")  # safetensors, parameter count checked
    start = model_with_zero_head(run)
    before = validation_loss(start, tiny_data.split("val"), run.objective, run.specials, mc_passes=2)
    vals = [r["val_loss"] for r in run.metrics() if "val_loss" in r]
    losses = [r["loss"] for r in run.metrics() if "loss" in r]
    print(f"NCE validation loss: start {before.loss:.4f} (2 ln 2), curve {[round(v, 3) for v in vals]}")
    assert before.loss == pytest.approx(2 * math.log(2))
    assert len(vals) >= 5 and all(math.isfinite(v) for v in vals)
    # It learns to tell its 94 training sequences from the frozen MDM's samples. Whether that carries over to
    # held-out text depends on the machine's rounding at this size (seen: the validation curve dipping 0.03 below
    # chance on one CPU, never going below it on another), so the held-out curve is not asserted.
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05


def model_with_zero_head(run: Run) -> Transformer:
    """The energy model as it starts: the base's weights and a zero head."""
    model = run.load_model("last")
    base = Run(run.train_config.init_from).load_model("last")
    state = {**base.state_dict(), "energy_head.weight": torch.zeros(1, model.cfg.d_model), "energy_head.bias":
             torch.zeros(1)}  # fmt: skip
    model.load_state_dict(state)
    return model


@pytest.mark.slow
def test_an_energy_run_resumes_to_the_same_weights(energy_run, base_runs):
    root, mdm, _ = base_runs
    cfg = tiny_train_config(**ENERGY_TRAIN)
    out = root / "energy-resumed"
    train_energy(mdm, out, train=cfg.with_flat(stop_at_step=7), quiet=True, tensorboard=False)
    assert Run(out).final_result() is None or Run(out).final_result()["step"] < Run(energy_run).budget()["total_steps"]
    train_energy(mdm, out, train=cfg, resume=True, quiet=True, tensorboard=False)
    a, b = Run(energy_run).load_model("last").state_dict(), Run(out).load_model("last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_edlm_with_the_nce_energy_is_no_worse_in_generative_perplexity(energy_run, base_runs):
    from unmask.bench import quality_of
    from unmask.sampling.text import decode

    _, mdm, ar = base_runs
    sampler = SamplerConfig.from_flat(method="ancestral", steps=24, temperature=1.0, edlm_candidates=4)
    ppl = {}
    for name, energy in (("none", None), ("nce", str(energy_run))):
        gen = decode(mdm, "", 64, 24, sampler, seed=0, energy_run=energy)
        ppl[name] = quality_of(gen, str(ar))["gen_ppl"]
    print(f"gen PPL under the AR judge, 24 steps: plain {ppl['none']:.2f}, EDLM + NCE energy {ppl['nce']:.2f}")
    assert ppl["nce"] <= ppl["none"] * 1.10


@pytest.mark.slow
def test_bench_sample_has_an_edlm_row_with_the_nce_energy(energy_run, base_runs):
    from unmask.bench import bench_sample

    _, mdm, ar = base_runs
    with pytest.raises(ConfigError, match="edlm_nce needs --energy_run"):
        bench_sample(str(mdm), str(ar), length=8, n=2, methods=["edlm_nce"])
    rows = bench_sample(str(mdm), str(ar), length=8, n=2, methods=["ancestral", "edlm_nce"],
                        energy_run=str(energy_run))["methods"]  # fmt: skip
    assert rows["edlm_nce"]["energy_passes"] > 0 and rows["ancestral"]["energy_passes"] == 0
    assert rows["edlm_nce"]["gen_ppl"] > 1


@pytest.mark.slow
def test_energy_runs_are_refused_where_they_do_not_fit(energy_run, base_runs, tiny_data):
    from unmask.sampling.text import decode, load_energy

    _, mdm, ar = base_runs
    with pytest.raises(ConfigError, match="neither an energy run"):
        load_energy(mdm, tiny_data.vocab_size, "cpu")
    with pytest.raises(ConfigError, match=r"vocabulary \d+ != the sampled run's 999"):
        load_energy(energy_run, 999, "cpu")
    with pytest.raises(ConfigError, match="is an energy run: pass it as --energy_run"):
        decode(energy_run, "", 1, 4)
    with pytest.raises(ConfigError, match="starts from an MDM run"):
        train_energy(ar, ar.parent / "e2", train=tiny_train_config(epochs=1), quiet=True)
    assert get_objective("energy").bound_name == "NCE loss"


@pytest.mark.slow
def test_an_energy_run_refuses_to_resume_once_its_base_changed(base_runs):
    import shutil

    from unmask.config import ConfigError
    from unmask.model import read_weights, save_model

    root, mdm, _ = base_runs
    base = root / "mdm-copy"
    shutil.copytree(mdm, base)
    cfg = tiny_train_config(**ENERGY_TRAIN)
    out = root / "energy-of-copy"
    train_energy(base, out, train=cfg.with_flat(stop_at_step=2), quiet=True, tensorboard=False)
    model = Run(base).load_model("last")
    weights = {k: v + 1e-3 if k == "embed.weight" else v for k, v in read_weights(base / "last.safetensors").items()}
    save_model(model, base / "last.safetensors", weights)  # the base retrained in place
    with pytest.raises(ConfigError, match="has changed since"):
        train_energy(base, out, train=cfg, resume=True, quiet=True, tensorboard=False)
