"""Creating a run directory (the layout is described in unmask.run) and resuming its config."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from unmask.checkpoint import atomic_write_text, provenance, sha256_of
from unmask.config import USER_MODEL_FIELDS, ConfigError, ModelConfig, RuntimeConfig, TrainConfig, to_dict, train_option
from unmask.model import count_params
from unmask.run import Run

RUNTIME_FIELDS = ("stop_at_step", *(f.name for f in dataclasses.fields(RuntimeConfig)))
"""TrainConfig settings (flat names) that control how a run executes, not what it is: free to change on resume."""


def create_run_dir(out: Path, data, model_cfg: ModelConfig, cfg: TrainConfig, budget) -> None:
    """config.json (with the data's identity and the special ids), budget, provenance, the tokenizer copy."""
    saved = cfg.with_flat(stop_at_step=None)  # a runtime control, not part of the experiment
    shutil.copyfile(data.path / "tokenizer.json", out / "tokenizer.json")
    config = {
        "data": str(data.path.resolve()),
        "model": to_dict(model_cfg),
        "train": to_dict(saved),
        "specials": {"eod_id": data.eod_id, "mask_id": data.mask_id, "pad_id": data.pad_id},
        "tokenizer_sha256": sha256_of(out / "tokenizer.json"),
    }
    if cfg.init_from:  # which weights it started from, should the base run be retrained in place
        config["init_from_sha256"] = sha256_of(Path(cfg.init_from) / "last.safetensors")
    if hasattr(data, "identity"):
        config["data_identity"] = data.identity()
    atomic_write_text(
        out / "budget.json", json.dumps({**dataclasses.asdict(budget), "params": count_params(model_cfg)}, indent=2)
    )
    atomic_write_text(out / "provenance.json", json.dumps(provenance(), indent=2))
    (out / "metrics.jsonl").touch()
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))  # last: a run directory is complete with it


def resume_config(
    run: Run, model: ModelConfig | None, train: TrainConfig | None, defaults: TrainConfig | None = None
) -> TrainConfig:
    """The saved train config with the runtime controls of `train`; other values that differ are refused.

    A value equal to the field's default (in `defaults`, the command's own: fine-tuning has others) is taken
    as not given (the CLI passes every field).
    """
    saved = run.train_config
    if train is None:
        return saved
    given, default, kept = train.flat(), (defaults or TrainConfig()).flat(), saved.flat()
    changed = [
        f"train.{train_option(name)}={given[name]!r} (the run has {kept[name]!r})"
        for name in given
        if name not in RUNTIME_FIELDS and given[name] != default[name] and given[name] != kept[name]
    ]
    if model is not None:
        base, mine = ModelConfig(), run.model_config
        for name in USER_MODEL_FIELDS:
            value = getattr(model, name)
            if value != getattr(base, name) and value != getattr(mine, name):
                changed.append(f"model.{name}={value!r} (the run has {getattr(mine, name)!r})")
    if changed:
        raise ConfigError(
            f"--resume true continues the saved run {run.path} with its own settings; "
            f"{'; '.join(changed)}: drop these options or train a new --out"
        )
    return saved.with_flat(**{name: given[name] for name in RUNTIME_FIELDS})


REWRITTEN = ("last.safetensors", "best.safetensors", "metrics.jsonl")
"""Files a resumed run may write again."""


def check_resumable(run: Run, budget) -> None:
    """Before a run is resumed: the files it rewrites must be files (a folder there is damage, not a full
    disk), and its budget, recomputed from its config and data, must be the one recorded when it was
    created (a hand-edited epochs or batch_size would change the experiment silently, or never end)."""
    for name in REWRITTEN:
        if (run.path / name).exists() and not (run.path / name).is_file():
            raise ConfigError(f"{run.path / name} is not a file: the run directory is damaged; restore it")
    recorded = run.budget()
    if not isinstance(recorded, dict):
        raise ConfigError(f"{run.path / 'budget.json'} is not a JSON object; restore the run's own copy")
    differ = [
        f"{k} {recorded[k]!r} (config.json and data give {v!r})"
        for k, v in dataclasses.asdict(budget).items()
        if k in recorded and recorded[k] != v
    ]
    if differ:
        raise ConfigError(
            f"run {run.path}: budget.json records {'; '.join(differ)}: config.json or budget.json was edited; "
            f"restore them or train a new --out"
        )
