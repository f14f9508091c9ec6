"""AR -> diffusion adaptation (`unmask finetune adapt`): an AR run's weights continued as an MDM with Dream's
recipe — bidirectional attention, logits read one position back — decoded like any MDM run."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_train_config
from unmask import cli
from unmask.config import ConfigError, ModelConfig
from unmask.finetune.adapt import adapt
from unmask.model import read_weights
from unmask.run import Run
from unmask.training import train


@pytest.fixture(scope="module")
def ar_run(tiny_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "ar"
    return train(tiny_data_dir, out, ModelConfig(size="tiny"), tiny_train_config(objective="ar", epochs=1), quiet=True)


def test_an_ar_run_becomes_a_bidirectional_mdm_that_reads_its_logits_one_position_back(ar_run, tmp_path):
    out = adapt(ar_run, None, tmp_path / "adapted", tiny_train_config(epochs=1), quiet=True)  # the base's own data
    run, base = Run(out), Run(ar_run)
    assert run.objective.name == "mdm_adapt" and run.objective.decoder == "mdm"
    assert run.model_config.shift_logits and not run.model_config.causal
    assert run.train_config.init_from == str(base.path.resolve()) and run.data_path == base.data_path
    assert 0 < run.final_result()["loss"] < 20  # an ELBO was measured, finite
    # the weights it started from are the AR run's: the adaptation moved them, from there
    start, end = read_weights(base.weights("last")), read_weights(run.weights("last"))
    assert start.keys() == end.keys() and not all(torch.equal(start[k], end[k]) for k in start)


def test_an_adapted_run_samples_without_a_cache_and_refuses_one_in_one_line(ar_run, tmp_path, capsys):
    out = adapt(ar_run, None, tmp_path / "adapted", tiny_train_config(epochs=1), quiet=True)
    assert cli.main(["sample", str(out), "--length", "8", "--sampler.steps", "8"]) == 0
    capsys.readouterr()
    code = cli.main(["sample", str(out), "--length", "8", "--sampler.cache.kv", "prefix",
                     "--sampler.commit.block_length", "4"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "without a KV cache; pass --sampler.cache.kv none" in err


def test_adaptation_starts_from_an_ar_run_only(ar_run, tiny_data_dir, tmp_path):
    mdm = train(tiny_data_dir, tmp_path / "mdm", ModelConfig(size="tiny"), tiny_train_config(objective="mdm",
                epochs=1), quiet=True)  # fmt: skip
    with pytest.raises(ConfigError, match="adaptation starts from an 'ar' run"):
        adapt(mdm, None, tmp_path / "adapted", tiny_train_config(epochs=1), quiet=True)
