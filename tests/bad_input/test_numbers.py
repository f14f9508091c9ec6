"""Every numeric option of every command x every out-of-range value (negative, zero, 10**12, 2**63, 2**64; NaN and
infinities for floats): refused quickly in one line where the value is illegal, and never a crash where it is not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_input.contract import (
    QUICK,
    TINY_BENCH,
    Workspace,
    assert_contract,
    assert_unchanged,
    bench_sample_argv,
    changes,
    marked,
    prepare_argv,
    sample_argv,
    train_argv,
    unmask,
)
from unmask.config import ConfigError

# ---------------------------------------------------------------------------------------------
# Catalogue 3: out-of-range numbers for every numeric option

OUT_OF_RANGE = {"-1": -1, "0": 0, "10**12": 10**12, "2**63": 2**63, "2**64": 2**64}
FLOATS = {"-1": -1.0, "0": 0.0, "1e12": 1e12, "nan": "nan", "inf": "inf"}
# The labels above that an option must refuse (the others are legal for it, or may be):
COUNT = {"-1", "0", "10**12", "2**63", "2**64"}  # a count of work or memory: 10**12 of anything is a typo
SIZE_OR_MORE = {"-1", "10**12", "2**63", "2**64"}
NEGATIVE = {"-1"}
POSITIVE_FLOAT = {"-1", "0", "nan", "inf"}
NON_NEGATIVE_FLOAT = {"-1", "nan", "inf"}
UNIT_FLOAT = {"-1", "0", "1e12", "nan", "inf"}  # (0, 1]
SEED = {"-1", "2**64"}

# option: (values tried, labels that must be refused); the rest may also succeed.
SAMPLE_OPTIONS = {
    "--n": (OUT_OF_RANGE, COUNT),
    "--length": (OUT_OF_RANGE, SIZE_OR_MORE),
    "--seed": (OUT_OF_RANGE, {"2**64"}),  # torch takes any seed in [-2**63, 2**64)
    "--blank_length": (OUT_OF_RANGE, COUNT),
    "--sampler.temperature": (FLOATS, NON_NEGATIVE_FLOAT),
    "--sampler.top_k": (OUT_OF_RANGE, NEGATIVE),
    "--sampler.top_p": (FLOATS, UNIT_FLOAT),
}
MDM_SAMPLER_OPTIONS = {
    "--sampler.steps": (OUT_OF_RANGE, COUNT),
    "--sampler.block_length": (OUT_OF_RANGE, COUNT),
    "--sampler.threshold": (FLOATS, UNIT_FLOAT),
    "--sampler.conv_kernel": (OUT_OF_RANGE, COUNT),
    "--sampler.conv_scale": (FLOATS, POSITIVE_FLOAT),
    "--sampler.cfg_scale": (FLOATS, NON_NEGATIVE_FLOAT),
    "--sampler.edlm_candidates": (OUT_OF_RANGE, {"-1", "0"}),  # used only with an energy run: see BEYOND
    "--sampler.edlm_t_start": (FLOATS, {"-1", "1e12", "nan", "inf"}),
    "--sampler.edlm_t_end": (FLOATS, {"-1", "1e12", "nan", "inf"}),
    "--sampler.edlm_temperature": (FLOATS, POSITIVE_FLOAT),
}
EVAL_OPTIONS = {
    "--mc_passes": (OUT_OF_RANGE, COUNT),
    "--limit": (OUT_OF_RANGE, {"-1", "0"}),
    "--seed": (OUT_OF_RANGE, SEED),
    "--likelihood.mc_samples": (OUT_OF_RANGE, COUNT),
    "--likelihood.seed": (OUT_OF_RANGE, SEED),
    "--likelihood.max_batch_tokens": (OUT_OF_RANGE, {"-1", "0"}),
    "--likelihood.cfg_scale": (FLOATS, NON_NEGATIVE_FLOAT),
    "--likelihood.eps": (FLOATS, UNIT_FLOAT),
}
BENCH_OPTIONS = {
    "--steps": (OUT_OF_RANGE, COUNT),
    "--threads": (OUT_OF_RANGE, {"-1", "10**12", "2**63", "2**64"}),
    "--batch_size": (OUT_OF_RANGE, COUNT),
    "--seq_len": (OUT_OF_RANGE, COUNT),
    "--vocab_size": (OUT_OF_RANGE, COUNT),
    "--repeats": (OUT_OF_RANGE, COUNT),
}
BENCH_PREPARE_OPTIONS = {"--prepare_mb": (OUT_OF_RANGE, COUNT)}
BENCH_MEMORY_OPTIONS = {option: BENCH_OPTIONS[option] for option in ("--batch_size", "--seq_len", "--vocab_size")}
BENCH_SAMPLE_OPTIONS = {
    "--samples": (OUT_OF_RANGE, COUNT),
    "--length": (OUT_OF_RANGE, COUNT),
    "--threads": (OUT_OF_RANGE, {"-1", "10**12", "2**63", "2**64"}),
    "--temperature": (FLOATS, NON_NEGATIVE_FLOAT),
    "--threshold": (FLOATS, {"nan", "inf"}),  # used only by the threshold rows, not run here
}
TRAIN_OPTIONS = {
    "--train.runtime.threads": (OUT_OF_RANGE, {"-1", "10**12", "2**63", "2**64"}),
    "--train.seed": (OUT_OF_RANGE, SEED | {"2**63"}),
    "--train.batch_size": (OUT_OF_RANGE, {"-1", "0", "2**63", "2**64"}),
    "--train.epochs": ({"-1": -1, "0": 0}, {"-1", "0"}),  # a huge epoch count is a (very) long run, not an error
    "--train.micro_batch_size": (OUT_OF_RANGE, {"-1", "0", "10**12", "2**63", "2**64"}),
    "--train.eval.batch_size": (OUT_OF_RANGE, {"-1", "0"}),
    "--train.optim.lr": (FLOATS, POSITIVE_FLOAT),
}
PREPARE_OPTIONS = {
    "--data.vocab_size": (OUT_OF_RANGE, COUNT),
    "--data.unique_tokens": (OUT_OF_RANGE, COUNT),
    "--data.val_tokens": (OUT_OF_RANGE, {"-1"}),
    "--data.seq_len": (OUT_OF_RANGE, COUNT),
    "--data.seed": (OUT_OF_RANGE, SEED | {"2**63"}),
    "--data.tokenizer_train_bytes": (OUT_OF_RANGE, {"-1", "0"}),
    "--data.val_fraction": (FLOATS, {"-1", "1e12", "nan", "inf"}),
}


def _eval_tasks(run: Path, ws: Workspace) -> list:
    return ["eval", run, "--mc_passes", 1, "--tasks", ws.tasks, "--limit", 2, "--likelihood.mc_samples", 2]


COMMAND_LINES: dict[str, tuple[Callable[[Workspace], list], dict, str | None]] = {
    "sample ar": (lambda ws: sample_argv(ws.pristine.runs["ar"]), SAMPLE_OPTIONS, None),
    "sample mdm": (lambda ws: sample_argv(ws.pristine.runs["mdm"]), SAMPLE_OPTIONS | MDM_SAMPLER_OPTIONS, None),
    "eval ar": (lambda ws: _eval_tasks(ws.pristine.runs["ar"], ws), EVAL_OPTIONS, None),
    "eval mdm": (lambda ws: _eval_tasks(ws.pristine.runs["mdm"], ws), EVAL_OPTIONS, None),
    "bench train": (lambda ws: ["bench", "train", *TINY_BENCH], BENCH_OPTIONS, None),
    "bench prepare": (lambda ws: ["bench", "prepare", "--prepare_mb", 1], BENCH_PREPARE_OPTIONS, None),
    "bench sample": (lambda ws: bench_sample_argv(ws.pristine.runs["mdm"]), BENCH_SAMPLE_OPTIONS, None),
    "bench memory": (lambda ws: ["bench", "memory", *TINY_BENCH[2:8]], BENCH_MEMORY_OPTIONS, None),
    "train": (lambda ws: train_argv(ws, ws.path / "new"), TRAIN_OPTIONS, "new"),
    "prepare": (lambda ws: prepare_argv(ws.path / "prepared"), PREPARE_OPTIONS, "prepared"),
}
"""command: (its command line on a legal tiny setting, its numeric options, the folder it writes)."""
WHOLE_CORPUS = {
    f"prepare --data.{option}={value}"
    for option in ("unique_tokens", "val_tokens", "tokenizer_train_bytes")
    for value in ("10**12", "2**63", "2**64")
} - {"prepare --data.unique_tokens=10**12"}
"""Cases that read and encode the whole embedded corpus (seconds each): in the slow run, but for one."""
MDM_ONLY = {"--likelihood.cfg_scale"}


def numeric_catalogue() -> dict[str, tuple]:
    cases = {}
    for name, (base, options, owned) in COMMAND_LINES.items():
        for option, (values, refused) in options.items():
            for label, value in values.items():
                expect = "refused" if label in refused else "either"
                if name.endswith(" ar") and option in MDM_ONLY and label != "0":
                    expect = "refused"  # guidance is MDM-only: an AR run refuses any other value
                cases[f"{name} {option}={label}"] = (base, option, value, expect, owned)
    return cases


NUMERIC = numeric_catalogue()


@pytest.mark.parametrize("case", [marked(name, case, WHOLE_CORPUS) for name, case in NUMERIC.items()])
def test_every_numeric_option_out_of_range_is_refused_quickly(ws, capsys, case):
    base, option, value, expect, owned = case
    args = [*base(ws), option, value]
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, expect, f"{args[0]} {option} {value}")
    if outcome.code == 2:
        assert outcome.seconds < QUICK, f"refused only after {outcome.seconds:.1f} s"
    assert_unchanged(before, ws.snapshot(), outcome, owned=owned and ws.path / owned)


LM_EVAL_ARGS = {
    "mc_samples=-1": {"mc_samples": -1},
    "mc_samples=10**12": {"mc_samples": 10**12},
    "mc_samples=abc": {"mc_samples": "abc"},
    "seed=-1": {"seed": -1},
    "seed=2**64": {"seed": 2**64},
    "cfg_scale=-1": {"cfg_scale": -1},
    "estimator=x": {"estimator": "x"},
    "which=middle": {"which": "middle"},
    "an unknown key": {"nope": 1},
    "device=tpu": {"device": "tpu"},
    "max_batch_tokens=0": {"max_batch_tokens": 0},
    "gen_length=-1": {"gen_length": -1},
    "temperature=-1": {"temperature": -1},
    "top_k=abc": {"top_k": "abc"},
    "steps=0": {"steps": 0},
    "steps=10**12": {"steps": 10**12},
}
"""model_args of `--model unmask` (lm-eval passes them as given: a number may arrive as a string)."""


@pytest.mark.parametrize("kwargs", [marked(name, kwargs) for name, kwargs in LM_EVAL_ARGS.items()])
def test_every_bad_lm_eval_model_arg_is_one_config_error(ws, kwargs):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    before = ws.snapshot()
    with pytest.raises(ConfigError) as info:
        UnmaskLM(run=str(ws.pristine.runs["mdm"]), **{"device": "cpu", **kwargs})
    assert str(info.value) and "\n" not in str(info.value)
    assert not changes(before, ws.snapshot())
