"""Run: the one way to open a run directory, read-only and self-contained.

A run directory holds everything needed to sample, evaluate or serve it on another machine,
without the data folder it was trained on:

  config.json        resolved model + train config, the data folder it was trained on, its
                     identity (manifest and token-file checksums), the special token ids and
                     the SHA-256 of the tokenizer copy
  budget.json        U, E, sequences, steps: the exact budget of this run
  tokenizer.json     the run's own copy of the tokenizer (decoding never needs the data folder)
  best.safetensors   weights at the best validation loss   (+ model_config.json)
  last.safetensors   weights at the last checkpoint
  checkpoints/       the last K training states (see unmask.checkpoint)
  metrics.jsonl      one strict-JSON record per step / validation
  provenance.json    git SHA, versions, hardware
  tb/                TensorBoard scalars
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

from unmask.checkpoint import sha256_of
from unmask.config import ConfigError, ModelConfig, TrainConfig, from_dict
from unmask.objectives import Objective, Specials, objective_for

WEIGHTS = ("best", "last")
RUN_FILES = (
    "config.json",
    "model_config.json",
    "budget.json",
    "tokenizer.json",
    "best.safetensors",
    "last.safetensors",
    "checkpoints/manifest.json",
    "metrics.jsonl",
    "provenance.json",
)
"""The files every finished run directory holds (the layout above; tb/ and checkpoints' files besides)."""


def read_json(path: Path, what: str) -> Any:
    """A JSON file of a run or data folder, or one ConfigError line naming it and what is wrong."""
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, 5000-digit numbers, [[[[... nested too deep
        raise ConfigError(f"{path} is not valid JSON ({type(e).__name__}): {what}") from None


def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (none when it has none); a torn last line is skipped."""
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    if not path.is_file():
        raise ConfigError(f"{path} is not a file: the run's metrics are damaged; remove it or restore the file")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: the records before it stand
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class Run:
    """A run directory opened for reading: configs, objective, tokenizer, special ids, weights, metrics."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"run {self.path} does not exist or is not a directory; train one with unmask train")
        what = "not a complete run directory (train one with unmask train)"
        self.config: dict[str, Any] = read_json(self.path / "config.json", what)
        if not isinstance(self.config, dict) or not all(k in self.config for k in ("model", "train")):
            raise ConfigError(f"{self.path / 'config.json'} lacks its 'model' and 'train' sections: {what}")
        try:
            self.model_config = from_dict(ModelConfig, {**self.config["model"], "size": None})
            self.train_config = from_dict(TrainConfig, self.config["train"], warn_flat=False)
        except ConfigError as e:
            raise ConfigError(f"{self.path / 'config.json'} is invalid: {e}") from None
        except TypeError:
            raise ConfigError(f"{self.path / 'config.json'} is invalid: 'model' and 'train' must be mappings") from None
        self.objective: Objective = objective_for(self.train_config)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def data_path(self) -> Path | None:
        """The data folder the run was trained on (it may be gone: sampling and --text/--tasks need it not)."""
        return Path(self.config["data"]) if isinstance(self.config.get("data"), str) else None

    def tokenizer(self):
        """The run's own tokenizer copy, checked against the checksum recorded when the run was created."""
        from unmask.data.tokenizer import load_tokenizer

        path = self.path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: the run cannot decode text; copy the run directory whole")
        expected = self.config.get("tokenizer_sha256")  # None: a run from before checksums were recorded
        if expected is not None and not isinstance(expected, str):
            raise ConfigError(f"{self.path / 'config.json'}: 'tokenizer_sha256' is damaged; restore the file")
        if expected and sha256_of(path) != expected:
            raise ConfigError(f"{path} was changed after training (SHA-256 differs); restore the run's own copy")
        tok = load_tokenizer(path)
        if tok.get_vocab_size(with_added_tokens=True) > self.model_config.vocab_size:
            raise ConfigError(
                f"{path} has {tok.get_vocab_size(with_added_tokens=True)} tokens, more than the model's "
                f"vocab_size {self.model_config.vocab_size}: it is not this run's tokenizer; restore the run's own copy"
            )
        return tok

    @cached_property
    def special_ids(self):
        """eod / mask / pad ids, recorded in config.json (older runs: read from the run's tokenizer)."""
        from unmask.data.tokenizer import SpecialIds, special_ids

        recorded = self.config.get("specials")
        if recorded is None:
            return special_ids(self.tokenizer())
        ids = [recorded.get(k) for k in ("eod_id", "mask_id", "pad_id")] if isinstance(recorded, dict) else []
        vocab = self.model_config.vocab_size
        # sampling indexes logits with them: an id out of the vocabulary must not get that far
        if not (len(ids) == 3 and all(is_index(i, vocab) for i in ids) and len(set(ids)) == 3):
            raise ConfigError(
                f"{self.path / 'config.json'}: 'specials' is damaged (eod_id, mask_id, pad_id must be three different "
                f"token ids below vocab_size {vocab}); restore the file"
            )
        return SpecialIds(*ids)

    @property
    def specials(self) -> Specials:
        ids = self.special_ids
        return Specials(ids.mask_id, ids.pad_id, ids.eod_id)

    def weights(self, which: str = "last") -> Path:
        if which not in WEIGHTS:
            raise ConfigError(f"which={which!r}: choose one of {', '.join(WEIGHTS)}")
        path = self.path / f"{which}.safetensors"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; choose --which best|last or finish the run")
        return path

    def load_model(self, which: str = "last", device: Any = "cpu", dtype: Any = None):
        """The Transformer with the `best` or `last` weights, in eval mode (safetensors: no pickled code).

        dtype: None or 'auto' keeps the weights file's dtype (an imported bf16 run stays bf16: half the memory);
        a torch dtype or 'float32' / 'bfloat16' / 'float16' casts. Losses and sampling read logits in float32."""
        from unmask.model import model_with_weights

        return model_with_weights(self.model_config, self.weights(which), dtype).to(device).eval()

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def budget(self) -> dict:
        return read_json(self.path / "budget.json", "the run's budget; copy the run directory whole")

    def provenance(self) -> dict:
        path = self.path / "provenance.json"
        return read_json(path, "the run's provenance") if path.is_file() else {}

    def data(self, verify: bool = True):
        """The data folder the run was trained on, checked to be the same data (same manifest and tokens)."""
        from unmask.data.dataset import open_data

        path = self.data_path
        if path is None or not path.is_dir():
            raise ConfigError(
                f"run {self.path}: its data folder {path} is gone; pass --text FILE or --tasks FILE to evaluate "
                f"on other text, or --validation false"
            )
        data = open_data(path)
        if verify:
            check_data_identity(self, data)
        return data

    def final_result(self) -> dict | None:
        """The run's result: the last validation record (final weights, final_mc_passes for MDM)."""
        evals = [r for r in self.metrics() if "val_loss" in r]
        if not evals:
            return None
        last = evals[-1]
        loss = last.get("final_val_loss", last["val_loss"])
        return {"step": last["step"], "loss": loss, "stderr": last.get("final_val_stderr", last.get("val_stderr"))}


def result_lines(path) -> list[str]:
    """The run's result: the final weights with the precise estimator; the lowest curve point is labelled."""
    run = Run(path)
    result = run.final_result()
    evals = [r for r in run.metrics() if is_finite_number(r.get("val_loss"))]  # a non-finite one is logged as null
    total = run.budget().get("total_steps")
    if result is None or result["step"] != total:
        return [f"{path}: stopped before its last step (no result yet); continue with --resume true"]
    kind = run.objective.bound_name
    passes = run.train_config.eval.final_mc_passes
    loss = f"{result['loss']:.4f}" if is_finite_number(result["loss"]) else "not finite (the run diverged)"
    spread = f" ± {result['stderr']:.4f} ({passes} MC passes)" if is_finite_number(result["stderr"]) else ""
    lines = [f"{path}: final validation {kind} {loss}{spread}, final weights (last.safetensors)"]
    lowest = min(evals, key=lambda r: r["val_loss"], default=result)
    if lowest["step"] != result["step"]:
        lines.append(
            f"  lowest on the validation curve: {lowest['val_loss']:.4f} at step {lowest['step']} "
            f"(early-stopped, best.safetensors; {run.train_config.eval.mc_passes}-pass estimate if MDM)"
        )
    return lines


def check_data_identity(run: Run, data) -> None:
    """Refuse data that is not what the run was trained on: another tokenizer, other or truncated tokens."""
    recorded = run.config.get("data_identity")
    files = recorded.get("files", {}) if isinstance(recorded, dict) else None
    if recorded is not None and not (isinstance(files, dict) and all(isinstance(e, dict) for e in files.values())):
        raise ConfigError(f"{run.path / 'config.json'}: 'data_identity' is damaged; restore the file")
    if data.vocab_size != run.model_config.vocab_size:
        raise ConfigError(
            f"data {data.path} has vocabulary {data.vocab_size} but run {run.path} was trained on "
            f"{run.model_config.vocab_size}: it was re-prepared; use the run's own data or a new run"
        )
    if not isinstance(recorded, dict) or not hasattr(data, "identity"):
        return  # a run from before identities were recorded: the vocabulary check above is all there is
    current = data.identity()
    for name, entry in files.items():
        now = (current.get("files") or {}).get(name)
        if now != entry:
            raise ConfigError(
                f"data {data.path}: {name} is not the file run {run.path} was trained on "
                f"(size/checksum differ; re-prepared or truncated?); restore it or start a new run"
            )


def is_index(value: Any, size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < size


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
