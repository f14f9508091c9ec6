"""WSD: the schedule's shape, and a decay branch forked from a longer run is bitwise the run of its own length."""

from __future__ import annotations

import pytest

from tests.training.conftest import assert_same_weights, losses, run_in_process
from unmask.config import ConfigError, TrainConfig
from unmask.run import Run, read_metrics
from unmask.training import train
from unmask.training.fork import branch_step, fork_run
from unmask.training.optim import Budget, decay_start, learning_rate

WSD = dict(schedule="wsd", warmup_steps=3, decay_frac=0.2, checkpoint_every=1000)


def test_wsd_warms_up_holds_the_peak_then_decays_over_its_last_share():
    cfg = TrainConfig.from_flat(lr=1e-3, min_lr_ratio=0.1, schedule="wsd", warmup_steps=10, decay_frac=0.2)
    budget = Budget(1, 1, 1, 1, 100, 100, 10, 1)
    lrs = [learning_rate(s, budget, cfg.optim) for s in range(100)]
    assert decay_start(budget, cfg.optim) == 80
    assert lrs[9] == pytest.approx(1e-3) and all(lr == 1e-3 for lr in lrs[10:81])
    assert lrs[99] == pytest.approx(1e-4, rel=0.1) and lrs[90] == pytest.approx(0.55e-3, rel=0.05)


def test_a_forked_branch_is_bitwise_the_run_of_its_own_length(tiny_data, tmp_path):
    own = run_in_process(tiny_data, tmp_path / "own", epochs=4, **WSD)
    trunk = tmp_path / "trunk"
    step = branch_step(Run(run_in_process(tiny_data, trunk, epochs=8, stop_at_step=1, **WSD)), 4)
    train(None, trunk, train=TrainConfig.from_flat(stop_at_step=step), resume=True, quiet=True, tensorboard=False)
    branch = fork_run(trunk, tmp_path / "branch", 4)
    train(None, branch, resume=True, quiet=True, tensorboard=False)
    assert losses(branch) == losses(own)
    assert_same_weights(branch, own)
    final = [r["final_val_loss"] for r in read_metrics(branch) if "final_val_loss" in r]
    assert final == [r["final_val_loss"] for r in read_metrics(own) if "final_val_loss" in r]
    assert Run(branch).config["forked_from"]["step"] == step  # labelled as a branch
    train(None, trunk, resume=True, quiet=True, tensorboard=False)  # the trunk goes on to its own end
    assert len(losses(trunk)) == 2 * len(losses(own))


def test_a_fork_is_refused_unless_the_trunk_stopped_at_the_branch_point(tiny_data, tmp_path):
    cosine = run_in_process(tiny_data, tmp_path / "cosine", epochs=4, stop_at_step=5)
    with pytest.raises(ConfigError, match="only a WSD run has decay branches"):
        fork_run(cosine, tmp_path / "b1", 2)
    trunk = run_in_process(tiny_data, tmp_path / "trunk", epochs=8, stop_at_step=5, **WSD)
    with pytest.raises(ConfigError, match="--train.checkpoint.stop_at_step"):
        fork_run(trunk, tmp_path / "b2", 4)
    with pytest.raises(ConfigError, match="needs fewer epochs"):
        fork_run(trunk, tmp_path / "b3", 8)
    assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()


def test_a_wsd_study_trains_each_trunk_once_with_its_branches_labelled_and_resumes(tmp_path, capsys):
    import csv

    from tests.study.test_study import STUDY
    from unmask import cli

    config = tmp_path / "wsd.yaml"
    text = STUDY.format(name="wsd", out=tmp_path / "out", runner="local").replace(
        "train: {batch_size: 8,", "train: {batch_size: 8, optim: {schedule: wsd, warmup_steps: 2, decay_frac: 0.25},"
    )
    config.write_text(text.replace("epochs: [1, 2]", "epochs: [1, 2, 4]"))
    assert cli.main(["study", "run", str(config)]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    assert {r["status"] for r in rows.values()} == {"finished"} and len(rows) == 6
    assert rows["mdm-tiny-U2000-E4-s0"]["schedule"] == "wsd"
    assert rows["mdm-tiny-U2000-E2-s0"]["schedule"].startswith("wsd branch of the 4-epoch run at step")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.safetensors")}
    assert cli.main(["study", "run", str(config)]) == 0  # nothing left to train
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.safetensors")} == before


def test_an_epoch_count_added_to_a_finished_wsd_study_trains_as_its_own_run(tmp_path):
    import csv

    from tests.study.test_study import STUDY
    from unmask import cli

    config = tmp_path / "wsd.yaml"
    text = STUDY.format(name="wsd", out=tmp_path / "out", runner="local").replace(
        "train: {batch_size: 8,", "train: {batch_size: 8, optim: {schedule: wsd, warmup_steps: 2, decay_frac: 0.25},"
    )
    config.write_text(text.replace("objectives: [ar, mdm]", "objectives: [mdm]").replace("[1, 2]", "[1, 4]"))
    assert cli.main(["study", "run", str(config)]) == 0
    trunk = tmp_path / "out" / "runs" / "mdm-tiny-U2000-E4-s0"
    before = {p: p.stat().st_mtime_ns for p in trunk.rglob("*.safetensors")}
    config.write_text(config.read_text().replace("[1, 4]", "[1, 3, 4]"))  # its fork point lies behind the trunk
    assert cli.main(["study", "run", str(config)]) == 0
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "out" / "results.csv"))}
    assert rows["mdm-tiny-U2000-E3-s0"]["status"] == "finished" and rows["mdm-tiny-U2000-E3-s0"]["schedule"] == "wsd"
    assert {p: p.stat().st_mtime_ns for p in trunk.rglob("*.safetensors")} == before  # the trunk is left alone
    separate = tmp_path / "separate.yaml"  # the same point in a study of its own: the same run, bitwise
    separate.write_text(
        config.read_text().replace("[1, 3, 4]", "[3]").replace(str(tmp_path / "out"), str(tmp_path / "sep"))
    )
    assert cli.main(["study", "run", str(separate)]) == 0
    assert_same_weights(
        tmp_path / "sep" / "runs" / "mdm-tiny-U2000-E3-s0", tmp_path / "out" / "runs" / "mdm-tiny-U2000-E3-s0"
    )
