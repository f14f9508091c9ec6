"""Metrics after fine-tuning (`unmask finetune eval`): one comparable table row per run.

Every run answers the same prompts of the shipped test split with the same decoding settings; the
response is what the model generates up to its first end-of-text. A fine-tuned run is prompted with
the chat template; a run without chat tokens (a base run) gets the bare prompt text and must stop on
its own, which is the honest baseline.

    accuracy       mean task score (exact match; per-word for `continue`), overall and per task
    rep-2, rep-4   share of the responses' token n-grams that repeat an earlier one (pooled)
    eos_rate       share of the generated positions holding end-of-text (an EOS flood raises it)
    window_mean    the mean answer window: an MDM's shrinks where a long prompt leaves less of seq_len
    stopped        share of responses that end with end-of-text inside the window
    length         response tokens: mean, median and 90th percentile
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

import torch

from unmask.config import ConfigError, check
from unmask.data.chat import chat_prompt
from unmask.evaluation.metrics import repetition_rate, truncate_at_eos
from unmask.finetune.tasks import POOL, TASKS, instruction_set, score
from unmask.run import Run
from unmask.sampling.ar import AR_MAX_WINDOWS, left_pad
from unmask.sampling.config import SamplerConfig
from unmask.sampling.decoder import generate
from unmask.sampling.text import MAX_SAMPLES

DEFAULT_SAMPLER = SamplerConfig.from_flat(method="low_confidence", block_length=8)
"""Semi-autoregressive blocks of 8 with low-confidence remasking, one token per step (LLaDA's SFT advice)."""


@dataclass
class Answer:
    task: str
    prompt: str
    reference: str
    response: str
    score: float
    tokens: list[int]
    """The response's tokens up to (not including) its end-of-text."""
    stopped: bool


def prompt_tokens(tok, text: str, eod_id: int) -> list[int]:
    """The chat template's prompt when the run has chat tokens, else the bare text."""
    try:
        return chat_prompt(tok, text, eod_id)
    except ConfigError:  # a base run: no template to follow
        return tok.encode(text, add_special_tokens=False).ids


MIN_WINDOW = 8
"""An MDM answer window never shrinks below this many tokens to make room for a long prompt."""


@torch.no_grad()
def respond(
    run: Run,
    prompts: list[str],
    length: int = 32,
    sampler: SamplerConfig | None = None,
    seed: int = 0,
    which: str = "last",
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[list[list[int]], list[list[int]]]:
    """(response tokens up to end-of-text, the whole generated window) for each prompt, decoded in batches of
    left-padded prompts (each row decodes as it would alone).

    AR decodes `length` tokens after any prompt (its window slides). An MDM denoises prompt and answer in one
    window of seq_len: a prompt that leaves less than `length` tokens gets the window that remains, in whole
    blocks (at least MIN_WINDOW or one block; only a prompt longer than that is cut, from the left), decoded at
    the same tokens per step, so no prompt loses its instruction to a long answer window."""
    sampler = sampler or DEFAULT_SAMPLER
    seq_len, is_mdm = run.model_config.seq_len, run.objective.decoder == "mdm"
    longest = AR_MAX_WINDOWS * seq_len
    check(1 <= length <= longest, f"length={length}: must be in [1, {longest}] for run {run.path} "
          f"({AR_MAX_WINDOWS} windows of its seq_len {seq_len})")  # fmt: skip
    check(1 <= batch_size <= MAX_SAMPLES, f"batch_size={batch_size}: must be in [1, {MAX_SAMPLES}]")
    check(0 <= seed < 2**63, f"seed={seed}: must be in [0, 2**63)")
    sampler.check_fits(seq_len, run.model_config.vocab_size, min(batch_size, max(len(prompts), 1)))
    tok, ids = run.tokenizer(), run.special_ids
    model = run.load_model(which, device)
    encoded = [prompt_tokens(tok, p, ids.eod_id) for p in prompts]
    if is_mdm:
        step = sampler.commit.block_length or 1  # a window holds whole blocks
        least = max(step, min(MIN_WINDOW, length, seq_len - 1))
        windows_of = [min(length, max(least, (seq_len - len(e)) // step * step)) for e in encoded]
        encoded = [e[-(seq_len - w) :] for e, w in zip(encoded, windows_of, strict=True)]
    else:
        windows_of = [length] * len(encoded)
        encoded = [e[-(seq_len - 1) :] for e in encoded]  # the first answer token reads the whole prompt
    g = torch.Generator(device).manual_seed(seed)
    generated: list[list[int]] = [[] for _ in prompts]
    for window in sorted(set(windows_of)):  # one answer window per batch
        rows = [i for i, w in enumerate(windows_of) if w == window]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x, real = left_pad([encoded[i] for i in chunk], ids.pad_id)
            x, real = x.to(device), real.to(device)
            out = generate(
                model, x, length=window, objective=run.objective, sampler=_scaled(sampler, window, length),
                specials=run.specials, generator=g, prompt_mask=real,
            )  # fmt: skip
            for i, row in zip(chunk, out.tokens[:, x.shape[1] :].tolist(), strict=True):
                generated[i] = row
    return truncate_at_eos(generated, ids.eod_id), generated


def _scaled(sampler: SamplerConfig, window: int, length: int) -> SamplerConfig:
    """The sampler for a shrunken window: the same tokens per step (a set step count scaled down with it)."""
    steps = sampler.commit.steps
    if steps is None or window == length:
        return sampler
    blocks = window // (sampler.commit.block_length or window)
    scaled = max(blocks, round(steps * window / length) // blocks * blocks)
    return dataclasses.replace(sampler, commit=dataclasses.replace(sampler.commit, steps=scaled))


def evaluate_instructions(
    run: str,
    per_task: int = 40,
    length: int = 32,
    sampler: SamplerConfig | None = None,
    seed: int = 0,
    which: str = "last",
    device: str | torch.device = "cpu",
    tasks: list[str] | None = None,
) -> tuple[dict, list[Answer]]:
    """The metrics row of `run` on the first `per_task` test examples of every shipped task (or of `tasks`),
    and its answers."""
    check(1 <= per_task <= POOL, f"per_task={per_task}: must be in [1, {POOL}] (test examples per task)")
    opened = Run(run)
    examples = instruction_set("test", per_task, tasks=tasks)
    check(bool(examples), f"tasks={tasks}: no test example to answer")
    responses, generated = respond(opened, [e.prompt for e in examples], length, sampler, seed, which, device)
    tok, eod = opened.tokenizer(), opened.special_ids.eod_id
    answers = []
    for e, tokens, window in zip(examples, responses, generated, strict=True):
        text = tok.decode(tokens).strip()
        answers.append(
            Answer(e.task, e.prompt, e.response, text, score(e.task, text, e.response), tokens, eod in window)
        )
    lengths = [len(a.tokens) for a in answers]
    row = {
        "run": str(run),
        "objective": opened.objective.name,
        "accuracy": statistics.fmean(a.score for a in answers),
        **{
            f"acc_{t}": statistics.fmean(a.score for a in answers if a.task == t)
            for t in TASKS
            if any(a.task == t for a in answers)
        },  # fmt: skip
        "rep_2": repetition_rate([a.tokens for a in answers], 2),
        "rep_4": repetition_rate([a.tokens for a in answers], 4),
        "eos_rate": sum(w.count(eod) for w in generated) / sum(len(w) for w in generated),
        "stopped": statistics.fmean(a.stopped for a in answers),
        "length_mean": statistics.fmean(lengths),
        "length_p50": statistics.median(lengths),
        "length_p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
        "n": len(answers),
        "window": length,
        "window_mean": statistics.fmean(len(w) for w in generated),
    }
    return row, answers
