"""A resume keeps every setting that defines the experiment: each option of TrainConfig, in every group (but the
runtime controls), and each user field of ModelConfig, enumerated from the dataclasses so a field added later is
covered too."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tests.training.conftest import run_in_process
from tests.training.test_run_safety import one_line_error
from unmask.config import LLAMA3_ROPE_SCALING, USER_MODEL_FIELDS, ConfigError, ModelConfig, TrainConfig, train_option
from unmask.run import Run
from unmask.training.rundir import RUNTIME_FIELDS, resume_config

PAIRED = {"r2ft_filler_tokens": "r2ft_filler_counts", "r2ft_filler_counts": "r2ft_filler_tokens"}
"""Fields only valid together (one count per token): changed as a pair."""


def candidates(value) -> list:
    """Values of the same type as `value`, for a changed setting (the first valid one is used)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, 2, 1]
    if isinstance(value, float):
        return [value / 2 if value else 0.5, value + 0.05, value * 0.9, 0.5]
    if isinstance(value, str):
        return ["ar", "mdm", "wsd", "random", "gelu", "layernorm", "learned", "elsewhere"]
    if isinstance(value, dict):
        return [dict.fromkeys(LLAMA3_ROPE_SCALING, 8.0) | {"original_max_position_embeddings": 16.0}]
    if isinstance(value, list):
        return [[7], [2.0, 2.0]]
    return [1, "elsewhere"]  # None: an optional int or path


def changed(saved: dict, default: dict, name: str, valid) -> dict:
    """A valid override of `name` that differs from the saved run and from the default (the CLI passes every
    field, and a value equal to its default is taken as not given); `valid(override)` raises if it is not."""
    for value in candidates(saved[name]):
        if value in (saved[name], default[name]):
            continue
        override = {name: value} | ({PAIRED[name]: [3]} if name in PAIRED else {})
        try:
            valid(override)
        except (ConfigError, TypeError, ValueError):
            continue
        return override
    raise AssertionError(f"no valid changed value for {name}")


@pytest.fixture(scope="module")
def saved_run(tiny_data, tmp_path_factory) -> Run:
    out = run_in_process(tiny_data, tmp_path_factory.mktemp("resume") / "run", stop_at_step=3)
    return Run(out)


KEPT_TRAIN = [name for name in TrainConfig().flat() if name not in RUNTIME_FIELDS]


def test_every_grouped_train_option_is_enumerated():
    assert len(KEPT_TRAIN) + len(RUNTIME_FIELDS) == len(TrainConfig().flat()) > 40
    assert {"lr", "eval_every", "mdm_t_beta", "r2ft_beta_w", "ar_input_noise", "keep_checkpoints"} <= set(KEPT_TRAIN)


@pytest.mark.parametrize("name", KEPT_TRAIN)
def test_resume_refuses_a_changed_train_field(saved_run, name):
    saved = saved_run.train_config
    override = changed(saved.flat(), TrainConfig().flat(), name, lambda o: saved.with_flat(**o))
    given = saved.with_flat(**override)
    with pytest.raises(ConfigError, match=rf"train\.{re.escape(train_option(name))}="):
        resume_config(saved_run, saved_run.model_config, given)


@pytest.mark.parametrize("name", USER_MODEL_FIELDS)
def test_resume_refuses_a_changed_model_field(saved_run, name):
    saved = dataclasses.asdict(saved_run.model_config)
    override = changed(saved, dataclasses.asdict(ModelConfig()), name, lambda o: ModelConfig(**o))
    given = dataclasses.replace(ModelConfig(), **override)
    with pytest.raises(ConfigError, match=rf"model\.{name}="):
        resume_config(saved_run, given, saved_run.train_config)


def test_the_user_model_fields_are_every_field_but_those_the_data_and_objective_set():
    derived = {"size", "vocab_size", "seq_len", "causal"}
    assert set(USER_MODEL_FIELDS) == {f.name for f in dataclasses.fields(ModelConfig)} - derived
    assert {"local_prior", "qk_norm"} <= set(USER_MODEL_FIELDS)  # the two a hand-written list forgot


@pytest.mark.parametrize("option", [["--model.local_prior", "5"], ["--model.qk_norm", "true"]])
def test_the_cli_refuses_a_resume_that_changes_the_attention_prior_or_qk_norm(saved_run, capsys, option):
    before = (saved_run.path / "metrics.jsonl").read_text()
    code, line = one_line_error(capsys, "train", "--out", saved_run.path, "--resume", "true", *option)
    assert code == 2 and f"{option[0][2:]}=" in line and "drop these options" in line
    assert (saved_run.path / "metrics.jsonl").read_text() == before


def test_runtime_controls_still_change_freely(saved_run):
    given = saved_run.train_config.with_flat(threads=1, stop_at_step=4, activation_checkpointing=True)
    kept = resume_config(saved_run, saved_run.model_config, given)
    assert (kept.runtime.threads, kept.checkpoint.stop_at_step, kept.runtime.activation_checkpointing) == (1, 4, True)
    assert Path(saved_run.path).is_dir()
