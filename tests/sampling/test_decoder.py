"""One decoding entry point: `unmask.sampling.generate` picks the decoder a run's objective names.

Every caller that decodes a run (`unmask sample`, the serve engine, `unmask finetune eval`, the lm-eval
adapter) goes through it, so with the same prompt, length, sampler and seed they all give the tokens
`generate` gives. Sampling at temperature 1 makes the seed matter: a caller that drew its noise
differently would not match.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tests.conftest import tiny_model_config, tiny_train_config
from unmask.config import ConfigError
from unmask.run import Run
from unmask.sampling import SamplerConfig, generate, left_pad

PROMPT, LENGTH, SEED = "She was", 8, 3
SAMPLER = SamplerConfig.from_flat(temperature=1.0, steps=4)
AR_SAMPLER = SamplerConfig.from_flat(temperature=1.0)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> dict[str, Run]:
    """One epoch of a tiny AR and a tiny MDM run."""
    from unmask.training import train

    root = tmp_path_factory.mktemp("decoder_runs")
    out = {}
    for objective in ("ar", "mdm"):
        torch.manual_seed(0)
        cfg = tiny_train_config(objective=objective, epochs=1, eval_every=1000)
        model = tiny_model_config(tiny_data, causal=objective == "ar")
        out[objective] = Run(train(tiny_data.path, root / objective, model, cfg, quiet=True, tensorboard=False))
    return out


def reference(run: Run, prompt: list[int], sampler: SamplerConfig, padded: bool = False) -> list[int]:
    """The tokens `generate` continues `prompt` with (one sequence), seeded by SEED."""
    x, real = left_pad([prompt], run.special_ids.pad_id)
    out = generate(
        run.load_model("last", "cpu"), x, length=LENGTH, objective=run.objective, sampler=sampler,
        specials=run.specials, generator=torch.Generator().manual_seed(SEED), prompt_mask=real if padded else None,
    )  # fmt: skip
    return out.tokens[0, len(prompt) :].tolist()


def up_to_eod(tokens: list[int], eod_id: int) -> list[int]:
    return tokens[: tokens.index(eod_id)] if eod_id in tokens else tokens


def sampler_for(objective: str) -> SamplerConfig:
    return SAMPLER if objective == "mdm" else AR_SAMPLER


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_unmask_sample_decodes_what_generate_decodes(runs, objective):
    from unmask.sampling.text import decode

    run = runs[objective]
    gen = decode(run.path, PROMPT, 1, LENGTH, sampler_for(objective), SEED)
    prompt = run.tokenizer().encode(PROMPT).ids
    assert gen.output.tokens[0, len(prompt) :].tolist() == reference(run, prompt, sampler_for(objective))


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_finetune_eval_decodes_what_generate_decodes(runs, objective):
    from unmask.finetune.evaluate import prompt_tokens, respond

    run = runs[objective]
    _, (window,) = respond(run, [PROMPT], LENGTH, sampler_for(objective), SEED)
    prompt = prompt_tokens(run.tokenizer(), PROMPT, run.special_ids.eod_id)  # a base run: the bare text
    assert window == reference(run, prompt, sampler_for(objective), padded=True)  # respond left-pads its batch


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_lm_eval_generation_decodes_what_generate_decodes(runs, objective):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    run = runs[objective]
    lm = UnmaskLM(run=str(run.path), device="cpu", seed=SEED, gen_length=LENGTH, **sampler_for(objective).flat())
    (text,) = lm.generate_until([(PROMPT, {"until": [], "max_gen_toks": LENGTH, "temperature": 1.0})])
    tok, eod = run.tokenizer(), run.special_ids.eod_id
    assert text == tok.decode(up_to_eod(reference(run, tok.encode(PROMPT).ids, sampler_for(objective)), eod))


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_serve_engine_decodes_what_generate_decodes(runs, objective):
    pytest.importorskip("fastapi")
    from unmask.serve.config import ServeConfig
    from unmask.serve.engine import Engine, Job, load_models

    run = runs[objective]
    models = load_models([str(run.path)])
    done, events = threading.Event(), []

    def emit(event: dict) -> None:
        events.append(event)
        if event["event"] in ("done", "error"):
            done.set()

    prompt = run.tokenizer().encode(PROMPT).ids
    engine = Engine(models, ServeConfig()).start()
    try:
        job = Job(models[run.name], "completion", [prompt], LENGTH, sampler_for(objective), emit,
                  deadline=time.monotonic() + 60, seed=SEED)  # fmt: skip
        engine.submit(job)
        assert done.wait(60)
    finally:
        engine.close()
    assert events[-1]["event"] == "done", events[-1]
    canvas = events[-1]["rows"][0]["canvas"]
    expected = reference(run, prompt, sampler_for(objective))
    if objective == "ar":  # the engine stops a row at its end-of-document
        expected = up_to_eod(expected, run.special_ids.eod_id)
    assert canvas[len(prompt) :] == expected


def test_an_energy_model_weights_mdm_samples_only(runs):
    run = runs["ar"]
    model = run.load_model("last", "cpu")
    with pytest.raises(ConfigError, match="MDM samples only"):
        generate(model, torch.tensor([[1, 2]]), length=2, objective=run.objective, sampler=AR_SAMPLER,
                 specials=run.specials, energy_model=model)  # fmt: skip
