"""Run: a run directory is self-contained — copied alone, it samples and evaluates like the original."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import tiny_model_config, tiny_train_config
from unmask import cli
from unmask.config import ConfigError
from unmask.run import Run
from unmask.training import train

TASKS = Path(__file__).parent / "fixtures" / "austen_mc.jsonl"


def cli_json(capsys, *args) -> dict:
    assert cli.main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_a_run_copied_alone_samples_and_evaluates_like_the_original(tiny_data_dir, tmp_path, capsys, objective):
    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    original = train(
        data,
        tmp_path / "runs" / "original",
        tiny_model_config(_data(data)),
        tiny_train_config(objective=objective, epochs=1),
        quiet=True,
        tensorboard=False,
    )
    text = tmp_path / "text.txt"
    text.write_text("It is a truth universally acknowledged, that a single man in possession of a good fortune.\n")
    sample_args = ["--prompt", "She was", "--length", "8", "--n", "2", "--sampler.temperature", "1", "--json", "true"]
    eval_args = ["--text", text, "--tasks", TASKS, "--limit", "4", "--likelihood.mc_samples", "8", "--json", "true"]

    before_sample = cli_json(capsys, "sample", original, *sample_args)
    before_eval = cli_json(capsys, "eval", original, *eval_args)

    moved = shutil.copytree(original, tmp_path / "elsewhere" / "run")
    shutil.rmtree(data)  # the data folder it was trained on is gone
    after_sample = cli_json(capsys, "sample", moved, *sample_args)
    after_eval = cli_json(capsys, "eval", moved, *eval_args)

    assert after_sample["texts"] == before_sample["texts"] and len(after_sample["texts"]) == 2
    for result in (before_eval, after_eval):
        del result["run"]
    assert after_eval == before_eval
    assert after_eval["validation_source"].startswith("text: ") and after_eval["n_tokens"] > 10
    assert set(after_eval["tasks"]) == {"austen_mc"}


def _data(path):
    from unmask.data import TokenData

    return TokenData(path)


def test_validation_without_the_data_folder_names_the_way_out(tiny_data_dir, tmp_path, capsys):
    data = shutil.copytree(tiny_data_dir, tmp_path / "data")
    run = train(
        data,
        tmp_path / "run",
        tiny_model_config(_data(data)),
        tiny_train_config(epochs=1),
        quiet=True,
        tensorboard=False,
    )
    shutil.rmtree(data)
    assert cli.main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unmask: error: run ") and "its data folder" in err and "--text FILE" in err
    with pytest.raises(ConfigError, match="is gone"):
        Run(run).data()


def test_a_run_reads_its_own_specials_and_tokenizer(tiny_data, trained_runs, tmp_path):
    run = Path(shutil.copytree(trained_runs.runs["mdm"], tmp_path / "run"))  # its tokenizer gets edited below
    opened = Run(run)
    ids = opened.special_ids
    assert (ids.eod_id, ids.mask_id, ids.pad_id) == (tiny_data.eod_id, tiny_data.mask_id, tiny_data.pad_id)
    assert opened.objective.name == "mdm" and not opened.objective.exact
    assert opened.tokenizer().get_vocab_size() == tiny_data.tokenizer().get_vocab_size()
    assert opened.final_result()["loss"] == [r for r in opened.metrics() if "final_val_loss" in r][-1]["final_val_loss"]
    (run / "tokenizer.json").write_text((run / "tokenizer.json").read_text().replace('"<|mask|>"', '"<|MASK|>"'))
    with pytest.raises(ConfigError, match="was changed after training"):
        opened.tokenizer()
