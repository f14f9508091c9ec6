"""`unmask sample`: generate or infill text from a run."""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Literal

from unmask.config import check_output_file
from unmask.sampling.config import SamplerConfig


def sample(
    run: str,
    prompt: str = "",
    length: int = 48,
    n: int = 1,
    seed: int = 0,
    which: Literal["best", "last"] = "last",
    sampler: SamplerConfig = SamplerConfig(),
    energy_run: str | None = None,
    blank_length: int = 8,
    mask_spans: list[str] | None = None,
    trace: str | None = None,
    metrics: bool = False,
    judge_run: str | None = None,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    json: bool = False,
    chat: bool = False,
) -> dict:
    """Generate or infill text from a run: AR decoding, or any MDM sampler (see --sampler.commit.method).

    Args:
        run: Run directory.
        prompt: Text to continue; each ____ (4+ underscores) is a blank of --blank_length tokens to infill (MDM).
        length: Tokens to generate after the prompt (0 with blanks: only infill).
        n: Number of samples.
        seed: Sampling seed.
        which: Weights to use: last (final, the default) or best (early-stopped).
        sampler: Token distribution (AR and MDM: temperature, top_k, top_p) and the MDM families: commit (method,
            steps, block_length, threshold), cache, conv, energy. Flat flags such as --sampler.method still work.
        energy_run: EDLM's energy (MDM, --sampler.commit.method ancestral): an energy run (unmask finetune energy)
            or an AR run whose likelihood is the energy.
        blank_length: Mask tokens per ____ blank in the prompt.
        mask_spans: Spans START-END (END excluded) of prompt token positions to mask and infill, e.g. [3-7,10-12].
        trace: Write the denoising trace here (JSONL: per step, the positions committed and their tokens).
        metrics: Also print text quality (rep-n, distinct-n, unigram entropy, EOS rate; gen. PPL with a judge run).
        judge_run: AR run scoring generative perplexity for --metrics (default: --energy_run, if an AR run).
        device: 'auto', 'cpu' or 'cuda'.
        dtype: Weights' dtype: auto (the weights file's: an imported bf16 run stays bf16, half float32's memory),
            float32 or bfloat16.
        json: Print one JSON object instead of text.
        chat: Answer --prompt as the user's turn of the chat template (a run from unmask finetune sft), stopping
            at end-of-text; for a fine-tuned MDM, semi-AR blocks (--sampler.commit.block_length 8) work best.
    """
    from unmask.sampling.text import decode

    check_output_file(option="--trace", path=trace)
    gen = decode(
        run=run, prompt=prompt, n=n, length=length, sampler=sampler, seed=seed, which=which, device=device,
        energy_run=energy_run, blank_length=blank_length, mask_spans=mask_spans, trace=trace, chat=chat, dtype=dtype,
    )  # fmt: skip
    out = gen.output
    result = {
        "run": run,
        "objective": gen.objective,
        "texts": gen.texts,
        "steps": len(out.history),
        "forward_passes": out.forward_passes,
        "energy_passes": out.energy_passes,
        "seconds": gen.seconds,
    }
    if metrics:
        from unmask.bench import quality_of

        judge = judge_run or ar_judge(energy_run)
        result["metrics"] = quality_of(gen=gen, judge_run=judge, device=device, dtype=dtype)
    if json:
        print(jsonlib.dumps(result))
        return result
    for text in gen.texts:
        print(text)
        print("---")
    print(
        f"{n} sample(s), {len(out.history)} steps, {out.forward_passes} forward passes, "
        f"{gen.seconds:.2f} s" + (f"; trace written to {trace}" if trace else ""),
        file=sys.stderr,
    )
    if metrics:
        print(
            "  ".join(f"{k} {v:.4g}" for k, v in result["metrics"].items() if isinstance(v, float | int)),
            file=sys.stderr,
        )
    return result


def ar_judge(energy_run: str | None) -> str | None:
    """The energy run when it is an AR run (its likelihood scores generative perplexity); an energy model is not."""
    from unmask.run import Run

    return energy_run if energy_run and not Run(path=energy_run).objective.energy else None
