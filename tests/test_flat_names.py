"""TrainConfig grouped by concern (optim, eval, checkpoint, runtime, one group per objective): the flat names of
before keep working for one release, with one warning line each, and nothing that was measured changes."""

from __future__ import annotations

import json

import pytest

from tests.training.conftest import run_in_process
from unmask import cli
from unmask.config import TRAIN_FLAT_NAMES, FlatNameWarning, OptimConfig, TrainConfig, from_dict, regroup_train, to_dict
from unmask.run import Run
from unmask.study.grid import config_hash

FLAT = {"lr": 0.002, "schedule": "wsd", "warmup_steps": 5, "decay_frac": 0.2, "eval_mc_passes": 4}
STUDY_CONFIG = {
    "model": {"size": "demo", "n_layer": 4, "local_prior": 5.0},
    "train": {"objective": "mdm", "epochs": 96, **FLAT, "weight_decay": 3.0, "ar_input_noise": 0.1,
              "mdm_t_beta": [2.0, 2.0], "threads": 1, "stop_at_step": 7},
    "data_identity": {"files": {"train.bin": "ab" * 32}},
}  # fmt: skip


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("unmask: warning:")]


def test_every_flat_name_maps_to_a_grouped_field_and_back():
    config = TrainConfig()
    assert set(config.flat()) == set(TRAIN_FLAT_NAMES) | {"objective", "epochs", "batch_size",
                                                          "micro_batch_size", "seed", "init_from"}  # fmt: skip
    for name, (group, key) in TRAIN_FLAT_NAMES.items():
        assert hasattr(getattr(config, group), key), name
    changed = TrainConfig.from_flat(**FLAT, seed=3)
    assert changed.optim == OptimConfig(lr=0.002, schedule="wsd", warmup_steps=5, decay_frac=0.2)
    assert (changed.eval.mc_passes, changed.seed) == (4, 3)
    assert TrainConfig.from_flat(**changed.flat()) == changed


def test_a_flat_attribute_read_warns_and_still_answers():
    config = TrainConfig.from_flat(lr=0.01)
    with pytest.warns(FlatNameWarning, match=r"TrainConfig\.lr is now TrainConfig\.optim\.lr"):
        assert config.lr == 0.01
    with pytest.raises(AttributeError, match="no attribute 'learning_rate'"):
        config.learning_rate  # noqa: B018 (an unknown name is still an AttributeError)


def test_a_flat_and_a_grouped_name_for_one_setting_are_refused():
    with pytest.raises(Exception, match=r"train\.lr and train\.optim\.lr both given"):
        regroup_train({"lr": 0.1, "optim": {"lr": 0.2}}, warn=False)


def test_config_hashes_are_those_of_before_the_grouping():
    # Pinned from the flat TrainConfig (commit 1ed577e): every committed study report keeps its hashes.
    assert config_hash(STUDY_CONFIG) == "57656a8894c6"
    grouped = {**STUDY_CONFIG, "train": to_dict(from_dict(TrainConfig, STUDY_CONFIG["train"], warn_flat=False))}
    assert "optim" in grouped["train"] and config_hash(grouped) == "57656a8894c6"
    assert config_hash({**STUDY_CONFIG, "train": {"objective": "mdm", "epochs": 96}}) == "b1c1fb455d1f"


def test_a_flat_flag_works_with_one_warning_line(capsys, tiny_data_dir, tmp_path):
    code = cli.main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "run"), "--model.size", "tiny",
                     "--train.objective", "ar", "--train.batch_size", "8", "--train.lr", "0.001",
                     "--tensorboard", "false"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert warning_lines(err) == [
        "unmask: warning: --train.lr is now --train.optim.lr; the flat name works until the next release"
    ]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["optim"]["lr"] == 0.001


def test_a_flat_yaml_config_works_with_one_warning_line_per_name(capsys, tiny_data_dir, tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(
        f"data: {tiny_data_dir}\nout: {tmp_path / 'run'}\nmodel:\n  size: tiny\n"
        "train:\n  objective: ar\n  batch_size: 8\n  lr: 0.001\n  eval_every: 100\n"
    )
    code = cli.main(["train", "--config", str(config), "--tensorboard", "false"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert warning_lines(err) == [
        f"unmask: warning: {config}: train.lr is now train.optim.lr; the flat name works until the next release",
        f"unmask: warning: {config}: train.eval_every is now train.eval.every; the flat name works until the next "
        "release",
    ]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (saved["optim"]["lr"], saved["eval"]["every"]) == (0.001, 100)


def test_a_run_saved_with_flat_names_loads_silently_and_resumes(tiny_data, tmp_path, capsys, recwarn):
    out = run_in_process(tiny_data, tmp_path / "run", stop_at_step=3)
    config_file = out / "config.json"
    saved = json.loads(config_file.read_text())
    grouped = Run(out).train_config
    config_file.write_text(json.dumps({**saved, "train": grouped.flat()}, indent=2))  # as an earlier version wrote

    assert Run(out).train_config == grouped
    assert cli.main(["train", "--out", str(out), "--resume", "true", "--train.checkpoint.stop_at_step", "6"]) == 0
    assert not warning_lines(capsys.readouterr().err) and not recwarn.list
    assert max(json.loads(line).get("step", 0) for line in (out / "metrics.jsonl").read_text().splitlines()) == 6
