"""Every size-like option of every decoding surface, far beyond the model, is refused before anything is allocated.

A size-like option (a length, a count, a number of steps, a block, a conv kernel, EDLM candidates, top-k) is
bounded by the model's own limits (seq_len, vocabulary): `unmask sample`, `unmask finetune eval`, `unmask bench
sample` and lm-eval's `UnmaskLM` each get every such option at values from just beyond seq_len to 2**64, and each
case ends within QUICK seconds: refused in one line, or (top-k, which simply keeps every token) decoded. The HTTP
API's requests get the same catalogue in tests/serve/test_bad_requests.py. Whole requests far beyond any model
(a length of 2**63, a prompt longer than the model, 10**12 samples) are refused as quickly, and an AR decode that
never ends its text is bounded by its length alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.bad_input.contract import QUICK, Workspace, assert_contract, assert_unchanged, marked, unmask
from unmask.config import ConfigError

SEQ_LEN = 32
"""The tiny runs' sequence length."""
BEYOND = {"10**9+1": 10**9 + 1, "10**12+1": 10**12 + 1, "2**63-1": 2**63 - 1, "2**64+1": 2**64 + 1}
"""Odd values (a conv kernel must be odd): the bound, not the parity rule, must refuse them."""
JUST_BEYOND = {
    "length": SEQ_LEN, "blank_length": SEQ_LEN + 1, "mask_spans": SEQ_LEN + 1, "block_length": SEQ_LEN + 1,
    "conv_kernel": 2 * SEQ_LEN + 1, "steps": 16 * 8 + 1, "n": 4097, "samples": 4097, "edlm_candidates": 1025,
    "per_task": 2001, "top_k": 385,
}  # fmt: skip
"""The first value past each option's bound for the tiny runs (MDM: prompt + length <= seq_len; 16 steps per
masked token; 4096 samples; 1024 candidates; 2000 examples per task)."""
AR_JUST_BEYOND = {"length": 16 * SEQ_LEN + 1}
"""AR decodes at most 16 windows of seq_len; so many answer tokens bound finetune eval for MDM too (its window
shrinks to what the prompt leaves)."""
HARMLESS = {"top_k"}
"""Options that any value leaves bounded (top-k beyond the vocabulary keeps every token)."""

EDLM = ["--sampler.commit.method", "ancestral", "--sampler.temperature", 1]


def sample(ws: Workspace, objective: str, *more) -> list:
    return ["sample", ws.pristine.runs[objective], "--length", 8, *more]


SURFACES: dict[str, tuple[Callable[[Workspace], list], dict[str, Callable[[Workspace, int], list]]]] = {
    "sample mdm": (lambda ws: sample(ws, "mdm"), {
        "length": lambda ws, v: ["--length", v],
        "n": lambda ws, v: ["--n", v],
        "blank_length": lambda ws, v: ["--prompt", "She ____ it", "--blank_length", v, "--length", 0],
        "mask_spans": lambda ws, v: ["--prompt", "She was", "--mask_spans", f"0-{v}", "--length", 0],
        "steps": lambda ws, v: ["--sampler.commit.steps", v],
        "block_length": lambda ws, v: ["--sampler.commit.block_length", v],
        "conv_kernel": lambda ws, v: ["--sampler.conv.enabled", "true", "--sampler.conv.kernel", v],
        "top_k": lambda ws, v: ["--sampler.top_k", v],
        "edlm_candidates": lambda ws, v: [*EDLM, "--energy_run", ws.pristine.runs["ar"],
                                          "--sampler.energy.candidates", v],
    }),
    "sample ar": (lambda ws: sample(ws, "ar"), {
        "length": lambda ws, v: ["--length", v],
        "n": lambda ws, v: ["--n", v],
        "top_k": lambda ws, v: ["--sampler.top_k", v],
    }),
    "finetune eval mdm": (lambda ws: ["finetune", "eval", ws.pristine.runs["mdm"], "--per_task", 1, "--length", 4,
                                      "--tasks", "reverse"], {
        "length": lambda ws, v: ["--length", v],
        "per_task": lambda ws, v: ["--per_task", v],
        "steps": lambda ws, v: ["--sampler.commit.steps", v],
        "block_length": lambda ws, v: ["--sampler.commit.block_length", v],
        "conv_kernel": lambda ws, v: ["--sampler.conv.enabled", "true", "--sampler.conv.kernel", v],
    }),
    "finetune eval ar": (lambda ws: ["finetune", "eval", ws.pristine.runs["ar"], "--per_task", 1, "--length", 4,
                                     "--tasks", "reverse"], {
        "length": lambda ws, v: ["--length", v],
    }),
    "bench sample": (lambda ws: ["bench", "sample", "--run", ws.pristine.runs["mdm"], "--length", 8, "--samples", 1,
                                "--methods", "low_confidence"], {
        "length": lambda ws, v: ["--length", v],
        "samples": lambda ws, v: ["--samples", v],
    }),
}  # fmt: skip
"""surface: (its command line on a legal tiny setting, {option: its arguments at value v})."""


def catalogue() -> dict[str, tuple]:
    cases = {}
    for surface, (base, options) in SURFACES.items():
        for option, more in options.items():
            windows = surface.endswith(" ar") or surface.startswith("finetune eval")  # an MDM answer window shrinks
            just = (AR_JUST_BEYOND if windows else {}).get(option, JUST_BEYOND[option])
            for label, value in {"just beyond": just, **BEYOND}.items():
                cases[f"{surface} {option}={label}"] = (base, more, value, option in HARMLESS)
    return cases


CASES = catalogue()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_size_like_option_beyond_the_model_is_refused_before_allocating(ws, capsys, case):
    base, more, value, harmless = case
    args = [*base(ws), *more(ws, value)]
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "either" if harmless else "refused", " ".join(map(str, args[:2])))
    assert outcome.seconds < QUICK, f"{outcome.seconds:.1f} s: it allocated or decoded instead of refusing"
    assert_unchanged(before, ws.snapshot(), outcome)


def test_a_conv_kernel_as_wide_as_the_model_still_decodes(ws, capsys):
    """The bound is the widest window that still sees something new (2 seq_len - 1), not a smaller guess."""
    widest = 2 * SEQ_LEN - 1
    outcome = unmask(capsys, *sample(ws, "mdm", "--sampler.conv.enabled", "true", "--sampler.conv.kernel", widest))
    assert outcome.code == 0, outcome.err
    outcome = unmask(capsys, *sample(ws, "mdm", "--sampler.conv.enabled", "true", "--sampler.conv.kernel", widest + 2))
    assert_contract(outcome, "refused", "sample")
    assert f"must be <= {widest}" in outcome.err


@pytest.mark.parametrize("label", ["just beyond", *BEYOND])
@pytest.mark.parametrize("option", ["block_length", "conv_kernel", "edlm_candidates", "steps"])
def test_every_size_like_lm_eval_model_arg_is_refused_when_the_model_loads(ws, option, label):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    if option == "steps" and label == "just beyond":
        pytest.skip("a step count is bounded per request (16 per masked token), not when the model loads")
    value = JUST_BEYOND[option] if label == "just beyond" else BEYOND[label]
    extra = {"conv": True} if option == "conv_kernel" else {}
    with pytest.raises(ConfigError) as info:
        UnmaskLM(run=str(ws.pristine.runs["mdm"]), device="cpu", **extra, **{option: value})
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("max_gen_toks", [10**6, 10**12, 2**63 - 1])
def test_an_lm_eval_request_for_endless_ar_generation_is_refused(ws, max_gen_toks):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    lm = UnmaskLM(run=str(ws.pristine.runs["ar"]), device="cpu")
    with pytest.raises(ConfigError, match="length="):
        lm.generate_until([("She was", {"max_gen_toks": max_gen_toks, "until": ["\n"]})])


# ---------------------------------------------------------------------------------------------
# Requests far beyond any model through `unmask sample`, refused before allocating

EDLM_AR = ["--length", 4, "--sampler.method", "ancestral", "--sampler.temperature", 1, "--energy_run", "AR"]
REQUESTS = {
    "ar --length 10**12": ("ar", ["--length", 10**12]),
    "ar --length 2**63": ("ar", ["--length", 2**63]),
    "ar --length 10**9 temperature 0": ("ar", ["--length", 10**9, "--sampler.temperature", 0]),
    "ar --n 10**12": ("ar", ["--n", 10**12, "--length", 4]),
    "mdm --length seq_len": ("mdm", ["--length", 32]),
    "mdm --length 10**12": ("mdm", ["--length", 10**12]),
    "mdm --n 10**12": ("mdm", ["--n", 10**12, "--length", 4]),
    "mdm --blank_length 10**12": ("mdm", ["--prompt", "She ____ was", "--blank_length", 10**12, "--length", 0]),
    "mdm --mask_spans beyond the prompt": ("mdm", ["--prompt", "She was", "--mask_spans", "0-1000000000000"]),
    "mdm --prompt longer than the model": ("mdm", ["--prompt", "She was happy. " * 100, "--length", 4]),
    "mdm --sampler.block_length 10**12": ("mdm", ["--length", 8, "--sampler.block_length", 10**12]),
    "mdm EDLM --sampler.edlm_candidates 10**12": ("mdm", [*EDLM_AR, "--sampler.edlm_candidates", 10**12]),
}


@pytest.mark.parametrize("case", [marked(name, case) for name, case in REQUESTS.items()])
def test_a_request_beyond_the_model_is_refused_before_allocating(ws, capsys, case):
    objective, args = case
    args = [ws.pristine.runs["ar"] if a == "AR" else a for a in args]
    before = ws.snapshot()
    outcome = unmask(capsys, "sample", ws.pristine.runs[objective], *args)
    assert_contract(outcome, "refused", "sample")
    assert outcome.seconds < QUICK, f"refused only after {outcome.seconds:.1f} s"
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.parametrize("length", [16 * 32, 10**4, 10**5, 10**6, 10**9], ids=lambda n: f"--length {n}")
def test_ar_decoding_that_never_ends_its_text_is_bounded(ws, capsys, length):
    """At temperature 0 the tiny AR run never emits end-of-text, so only the length bound ends its decode:
    any --length is refused quickly or decoded to the end within SECONDS, never for hours."""
    outcome = unmask(
        capsys, "sample", ws.pristine.runs["ar"], "--length", length, "--sampler.temperature", 0, "--json", "true"
    )
    assert_contract(outcome, "either", f"sample --length {length}")
    if outcome.code == 2:
        assert outcome.seconds < QUICK, f"refused only after {outcome.seconds:.1f} s"
    else:
        steps = json.loads(outcome.out)["steps"]
        assert steps == length, f"the run emitted end-of-text after {steps} tokens: this case lost its worst case"
