"""Zero-shot multiple choice from JSONL, for AR and MDM runs on the same footing.

One item per line: {"context": str, "choices": [str, ...], "label": int} (or "gold_text": the
correct choice's text, instead of or besides "label"). Each choice is scored as the
continuation `delimiter + choice` of the context (lm-evaluation-harness's multiple_choice
convention, so a task YAML over the same file gives the same numbers):

- acc: the choice with the highest log-likelihood is the label;
- acc_norm: the highest log-likelihood per character of the choice (lm-eval's acc_norm).

Intervals are 95% Wilson score intervals for a binomial proportion (well-behaved at small n
and near 0 or 1, where the normal approximation is not); lm-eval's stderr is also given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unmask.config import ConfigError
from unmask.data.corpus import read_utf8_file
from unmask.evaluation.conditional import ConditionalScorer, LikelihoodConfig, encode_pair


@dataclass
class MCItem:
    context: str
    choices: list[str]
    label: int


def read_items(path: str | Path) -> list[MCItem]:
    """Items of a JSONL file; a bad line is one ConfigError naming the file, line and field."""
    path = Path(path)
    text = read_utf8_file(path, "--tasks", "JSONL files with context, choices, label")
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as e:  # bad JSON, 5000-digit numbers, [[[[... nested too deep
            raise ConfigError(f"{where} is not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("context"), str):
            raise ConfigError(f"{where} needs a string field 'context'")
        choices = rec.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise ConfigError(f"{where} needs 'choices': a list of at least two non-empty strings")
        label, gold = rec.get("label"), rec.get("gold_text")
        if label is not None and (
            not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices)
        ):
            raise ConfigError(f"{where}: 'label' must be an index into choices (0..{len(choices) - 1}), got {label!r}")
        if gold is not None:
            if gold not in choices:
                raise ConfigError(f"{where}: 'gold_text' {gold!r} is not one of the choices")
            if label is not None and choices[label] != gold:
                raise ConfigError(f"{where}: 'label' {label} and 'gold_text' {gold!r} disagree")
            label = choices.index(gold)
        if not isinstance(label, int) or not 0 <= label < len(choices):
            raise ConfigError(f"{where} needs 'label': an index into choices (0..{len(choices) - 1}) or 'gold_text'")
        items.append(MCItem(rec["context"], choices, label))
    if not items:
        raise ConfigError(f"{path} holds no items")
    return items


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score_items(
    scorer: ConditionalScorer,
    tok,
    eod_id: int,
    items: list[MCItem],
    delimiter: str = " ",
    progress: bool = True,
    description: str = "multiple choice",
) -> dict[str, Any]:
    """acc and acc_norm with Wilson intervals, plus every choice's log-likelihood."""
    from unmask.progress import progress_bar

    requests = [encode_pair(tok, it.context, delimiter + c, eod_id) for it in items for c in it.choices]
    with progress_bar(description, total=len(requests), disable=not progress) as bar:
        scores = scorer.score(requests, greedy=False, advance=bar.advance)
    per_item, s = [], 0
    hits = hits_norm = 0
    for it in items:
        lls = np.array([sc.logprob for sc in scores[s : s + len(it.choices)]])
        s += len(it.choices)
        pred = int(np.argmax(lls))
        pred_norm = int(np.argmax(lls / np.array([len(c) for c in it.choices], dtype=np.float64)))
        hits += pred == it.label
        hits_norm += pred_norm == it.label
        per_item.append({"loglikelihoods": lls.tolist(), "pred": pred, "pred_norm": pred_norm, "label": it.label})
    n = len(items)
    out: dict[str, Any] = {"n": n}
    for name, k in (("acc", hits), ("acc_norm", hits_norm)):
        out[name] = k / n
        out[f"{name}_ci95"] = list(wilson_interval(k, n))
        out[f"{name}_stderr"] = math.sqrt(k / n * (1 - k / n) / (n - 1)) if n > 1 else None  # as lm-eval
    out["items"] = per_item
    return out


def load_scorer(
    run, which: str = "last", device: str = "cpu", config: LikelihoodConfig | None = None, dtype: Any = None
) -> tuple[ConditionalScorer, Any, int, Any]:
    """(scorer, tokenizer, end-of-document id, objective record) for a run (a directory or an opened Run);
    dtype: the model's (None: its weights file's, see Run.load_model)."""
    from unmask.run import Run

    opened = run if isinstance(run, Run) else Run(run)
    ids = opened.special_ids
    model = opened.load_model(which, device, dtype)
    scorer = ConditionalScorer(model, opened.objective, ids.mask_id, ids.pad_id, config)
    return scorer, opened.tokenizer(), ids.eod_id, opened.objective


def evaluate_tasks(
    run,
    tasks: list[str],
    which: str = "last",
    config: LikelihoodConfig | None = None,
    device: str = "cpu",
    delimiter: str = " ",
    limit: int | None = None,
    progress: bool = True,
    dtype: Any = None,
) -> dict[str, dict[str, Any]]:
    """{task name (file stem): scores} for each JSONL file, on one run (a directory or an opened Run)."""
    scorer, tok, eod_id, _ = load_scorer(run, which, device, config, dtype)
    results = {}
    for path in tasks:
        items = read_items(path)[:limit]
        results[Path(path).stem] = score_items(scorer, tok, eod_id, items, delimiter, progress, Path(path).stem)
    return results
