"""Text in, text out: decode any run directory with the sampler its objective calls for.

Prompts may hold blanks to infill: each `____` (four or more underscores) becomes `blank_length`
mask tokens, and `mask_spans` ("START-END" token positions of the encoded prompt) masks explicit
spans. Every other prompt token stays fixed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unmask.checkpoint import atomic_path
from unmask.config import ConfigError, check
from unmask.data.chat import chat_prompt
from unmask.sampling.ar import AR_MAX_WINDOWS
from unmask.sampling.base import SampleOutput
from unmask.sampling.config import SamplerConfig

BLANK = re.compile(r"_{4,}")
MAX_SAMPLES = 4096  # bounds that keep a typo from allocating the machine away (or decoding for hours)


@dataclass
class Generation:
    texts: list[str]
    """The generated text of each sample (the prompt included when it was given)."""
    output: SampleOutput
    """Tokens, per-step history, forward passes."""
    prompt_len: int
    """Columns of `output.tokens` that belong to the prompt."""
    seconds: float
    """Wall time of the sampler call alone (model loading excluded)."""
    objective: str
    eod_id: int


def encode_prompt(tok, prompt: str, mask_id: int, eod_id: int, blank_length: int, mask_spans: list[str]) -> list[int]:
    """Token ids of the prompt with its blanks / spans as mask tokens; an empty prompt is one end-of-document."""
    pieces = BLANK.split(prompt)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids += [mask_id] * blank_length
        ids += tok.encode(piece).ids if piece else []
    ids = ids or [eod_id]
    for span in mask_spans:
        m = re.fullmatch(r"(\d+)-(\d+)", span.strip())
        check(m is not None, f"mask_spans: {span!r} is not START-END (token positions, END excluded)")
        a, b = int(m[1]), int(m[2])
        check(a < b <= len(ids), f"mask_spans: {span!r} must satisfy START < END <= {len(ids)} (prompt tokens)")
        ids[a:b] = [mask_id] * (b - a)
    return ids


def load_energy(run: str | Path, vocab_size: int, device, dtype=None) -> torch.nn.Module:
    """The model of an energy run (EDLM): an NCE-trained energy run (unmask finetune energy) or a plain
    left-to-right AR run (its likelihood is the energy), over the same vocabulary, in `dtype` (None: its file's)."""
    from unmask.run import Run

    energy = Run(run)
    objective = energy.objective
    check(
        objective.energy or (objective.decoder == "ar" and not objective.query_is_target),
        f"energy run {run}: objective {objective.name} is neither an energy run (unmask finetune energy) nor plain "
        f"left-to-right AR",
    )
    vocab = energy.model_config.vocab_size
    check(vocab == vocab_size, f"energy run {run}: vocabulary {vocab} != the sampled run's {vocab_size}")
    return energy.load_model("last", device, dtype)


def decode(
    run: str | Path,
    prompt: str = "",
    n: int = 1,
    length: int = 48,
    sampler: SamplerConfig | None = None,
    seed: int = 0,
    which: str = "last",
    device: str = "cpu",
    energy_run: str | None = None,
    blank_length: int = 8,
    mask_spans: list[str] | None = None,
    trace: str | Path | None = None,
    chat: bool = False,
    dtype: str | None = "auto",
) -> Generation:
    """n samples from a run with the decoder of its objective: left to right (stopping at end-of-document),
    or any MDM sampler of `sampler`. Needs only the run directory (its own tokenizer and special ids).

    chat: the prompt is the user's turn of the chat template (a fine-tuned run), and each text is the
    assistant's answer up to its end-of-text.
    dtype: of the run's (and the energy run's) weights: 'auto' (the weights file's: an imported bf16 run stays
    bf16), 'float32' or 'bfloat16'; the samplers read the logits in float32 or float64 either way."""
    from unmask.model import resolve_dtype
    from unmask.run import Run
    from unmask.runtime import resolve_device
    from unmask.sampling.decoder import generate

    sampler, dtype = sampler or SamplerConfig(), resolve_dtype(dtype)
    check(1 <= n <= MAX_SAMPLES, f"n={n}: must be in [1, {MAX_SAMPLES}]")
    check(length >= 0, f"length={length}: must be >= 0")
    check(0 <= seed < 2**63, f"seed={seed}: must be in [0, 2**63)")
    opened = Run(run)
    check(not opened.objective.energy, f"run {run} is an energy run: pass it as --energy_run when sampling an MDM run")
    objective, ids, seq_len = opened.objective, opened.special_ids, opened.model_config.seq_len
    check(1 <= blank_length <= seq_len, f"blank_length={blank_length}: must be in [1, seq_len {seq_len}]")
    tok = opened.tokenizer()
    if chat:
        check(
            not BLANK.search(prompt) and not mask_spans,
            "--chat answers a prompt: blanks and mask_spans need plain text",
        )
        prompt_ids = chat_prompt(tok, prompt, ids.eod_id)
    else:
        prompt_ids = encode_prompt(tok, prompt, ids.mask_id, ids.eod_id, blank_length, mask_spans or [])
    if objective.decoder == "mdm":  # MDM denoises prompt + answer in one window; check before allocating
        check(
            len(prompt_ids) + length <= seq_len,
            f"prompt ({len(prompt_ids)} tokens) + length {length} exceeds the model's seq_len {seq_len}; "
            "shorten either",
        )
    else:
        limit = AR_MAX_WINDOWS * seq_len
        check(length <= limit, f"length={length}: must be <= {limit} ({AR_MAX_WINDOWS} windows of seq_len {seq_len})")
        extra = sampler.mdm_only_options_set() + (["energy_run"] if energy_run else [])
        check(
            not extra,
            f"{objective.name} run {run}: {', '.join(extra)}: MDM-only (AR runs take temperature, top_k, top_p)",
        )
        check(ids.mask_id not in prompt_ids, f"{objective.name} run {run}: blanks / mask_spans need an MDM run")
    positions = min(len(prompt_ids) + length, seq_len)
    sampler.check_fits(seq_len, opened.model_config.vocab_size, n, positions, energy=energy_run is not None)
    dev = resolve_device(device)
    model = opened.load_model(which, dev, dtype)
    x = torch.tensor([prompt_ids] * n, device=dev)
    g = torch.Generator(dev).manual_seed(seed)
    energy = load_energy(energy_run, opened.model_config.vocab_size, dev, dtype) if energy_run else None
    start = time.perf_counter()
    out = generate(
        model, x, length=length, objective=objective, sampler=sampler, specials=opened.specials, generator=g,
        energy_model=energy,
    )  # fmt: skip
    if dev.type == "cuda":
        torch.cuda.synchronize()  # host-device sync: the timing covers the GPU work
    seconds = time.perf_counter() - start
    if chat:  # the answer alone, up to its end-of-text
        answers = [row[len(prompt_ids) :].tolist() for row in out.tokens.cpu()]
        texts = [tok.decode(a[: a.index(ids.eod_id)] if ids.eod_id in a else a).strip() for a in answers]
    else:
        skip = 0 if prompt else 1  # the empty prompt's end-of-document
        texts = [tok.decode(row[skip:].tolist()) for row in out.tokens.cpu()]
    if trace:  # the starting canvas: the prompt, then `length` masks (AR fills them left to right)
        write_trace(trace, out, torch.cat([x, x.new_full((n, length), ids.mask_id)], 1), tok)
    return Generation(texts, out, len(prompt_ids), seconds, objective.name, ids.eod_id)


def write_trace(path: str | Path, out: SampleOutput, start: torch.Tensor, tok) -> None:
    """JSONL: the starting canvas, then per step the positions committed in each sequence and their tokens."""
    final = out.tokens.cpu()
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:  # whole or not at all
        f.write(json.dumps({"step": 0, "canvas": start.cpu().tolist()}) + "\n")
        for step, rows in enumerate(out.history, 1):
            tokens = [[int(final[b, p]) for p in pos] for b, pos in enumerate(rows)]
            pieces = [[tok.id_to_token(t) for t in row] for row in tokens]
            f.write(json.dumps({"step": step, "positions": rows, "tokens": tokens, "pieces": pieces}) + "\n")


def generate_text(
    run: str | Path,
    prompt: str = "",
    n: int = 1,
    length: int = 48,
    steps: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    which: str = "last",
) -> list[str]:
    """n continuations of `prompt`: AR decoding, or MDM low-confidence in `steps` steps (default: one per token)."""
    if steps is not None and not 1 <= steps <= length:
        raise ConfigError(f"--steps {steps} must be between 1 and --length {length}")
    sampler = SamplerConfig.from_flat(steps=steps, temperature=temperature)
    return decode(run, prompt, n, length, sampler, seed, which).texts
