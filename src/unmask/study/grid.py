"""A study config (YAML) → the grid of runs: every point its own run, schedule and directory.

    name: mini
    out: runs/studies/mini
    data: {seq_len: 64, val_tokens: 8192}          # DataConfig; unique_tokens comes from the grid
    model: {}                                       # ModelConfig shared by every point (size from the grid)
    train: {batch_size: 16, eval: {mc_passes: 4}}  # TrainConfig shared by every point
    objectives: [ar, mdm]
    sizes: [demo]
    unique_tokens: [25000, 50000]
    epochs: {ar: [1, 4, 16], mdm: [1, 4, 16, 64]}  # a list for all objectives, or one per objective
    more_epochs: {mdm: {50000: [128]}}            # optional: longer runs of one objective at some budgets only
    seeds: [0]
    tune: {lr: [0.001, 0.002, 0.004]}              # optional: each objective at its own best over this grid
    tune_objective: {ar: {weight_decay: [0.1, 3.0]}}  # optional: axes one objective alone is tuned over
    scaling: {sizes: [demo, demo4x], unique_tokens: [25000, 100000]}  # optional: single-epoch points for the fit
    workers: 0                                      # parallel runs (0 = one per CPU core), one thread each
    runner: local                                   # or ray

Two comparison protocols come out of one grid: *identical settings* (the points whose tuned
values equal the shared config's: the paper's protocol) and *each objective at its own best*
(per objective, size, U and E, the tuned point with the lowest final validation loss).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unmask.config import (
    SIZES,
    USER_MODEL_FIELDS,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    check,
    from_dict,
    to_dict,
)
from unmask.study.local import Job

TUNABLE = {name: "train" for name in TrainConfig().flat()} | {
    name: "model" for name in USER_MODEL_FIELDS if name not in ("n_layer", "d_model", "n_head")
}
"""Fields a `tune` grid may vary: any TrainConfig setting by its flat name (lr, weight_decay, ar_input_noise, ...:
the names run folders carry), and the model's non-shape fields (init, dropout, ...)."""


@dataclass
class ScalingPoints:
    """Single-epoch runs at the shared settings over model sizes × unique-token budgets: the points stage 1 of the
    fit (E, A, alpha, B, beta) needs, which a grid of repeated runs at one size lacks (so R_D* and C_crit could
    not be identified). Only the fit and their own table use them; the grid's comparisons leave them out."""

    sizes: list[str] = field(default_factory=list)
    unique_tokens: list[int] = field(default_factory=list)


@dataclass
class StudyConfig:
    """A grid of runs over objective, model size, unique tokens U, epochs E, seeds and a tuning grid."""

    name: str = "study"
    out: str = "runs/study"
    data: DataConfig = field(default_factory=lambda: DataConfig(val_tokens=8_192))
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(eval=EvalConfig(mc_passes=4)))
    objectives: list[str] = field(default_factory=lambda: ["ar", "mdm"])
    sizes: list[str] = field(default_factory=lambda: ["demo"])
    unique_tokens: list[int] = field(default_factory=lambda: [25_000])
    epochs: dict[str, list[int]] = field(default_factory=lambda: {"ar": [1, 4, 16], "mdm": [1, 4, 16, 64]})
    more_epochs: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    """Epoch counts of one objective at some budgets only, beyond its `epochs` list: {mdm: {25000: [384]}} where
    MDM is still falling at the list's end there, without paying for the longer runs at every budget."""
    seeds: list[int] = field(default_factory=lambda: [0])
    tune: dict[str, list[Any]] = field(default_factory=dict)
    tune_objective: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """Tuning axes of one objective only, added to `tune` for it (e.g. AR's regularisation grid: weight decay,
    dropout, input noise), so the other objective's runs are not multiplied by them."""
    scaling: ScalingPoints = field(default_factory=ScalingPoints)
    downstream: int = 0
    """Report: zero-shot accuracy of each objective's best runs on this many items of the shipped cloze task
    (unmask.evaluation.cloze); 0 = none."""
    workers: int = 0
    runner: Literal["local", "ray"] = "local"

    def __post_init__(self) -> None:
        check(bool(self.objectives), "study.objectives: name at least one objective")
        unknown = sorted(set(self.sizes) - set(SIZES))
        check(not unknown, f"study.sizes: unknown {unknown}; choose from {sorted(SIZES)}")
        check(all(u > 0 for u in self.unique_tokens), "study.unique_tokens: every budget must be > 0")
        missing = sorted(set(self.objectives) - set(self.epochs))
        check(not missing, f"study.epochs: no epoch list for {missing} (give a list per objective)")
        check(all(e >= 1 for es in self.epochs.values() for e in es), "study.epochs: every epoch count must be >= 1")
        for objective, at in self.more_epochs.items():
            where = f"study.more_epochs.{objective}"
            check(objective in self.objectives, f"{where}: {objective!r} is not among the objectives {self.objectives}")
            strange = sorted(set(at) - set(self.unique_tokens))
            check(not strange, f"{where}: budgets {strange} are not among unique_tokens {self.unique_tokens}")
            check(all(e >= 1 for es in at.values() for e in es), f"{where}: every epoch count must be >= 1")
        bad = sorted(set(self.tune) - set(TUNABLE))
        model_fields = sorted(k for k, v in TUNABLE.items() if v == "model")
        check(not bad, f"study.tune: {bad} cannot be tuned; choose TrainConfig fields or the model's {model_fields}")
        strangers = sorted(set(self.tune_objective) - set(self.objectives))
        check(not strangers, f"study.tune_objective: {strangers} are not among the objectives {self.objectives}")
        for objective, axes in self.tune_objective.items():
            bad = sorted(set(axes) - set(TUNABLE))
            check(not bad, f"study.tune_objective.{objective}: {bad} cannot be tuned; choose TrainConfig fields or "
                           f"the model's {model_fields}")  # fmt: skip
            both = sorted(set(axes) & set(self.tune))
            check(not both, f"study.tune_objective.{objective}: {both} are tuned for every objective already")
        unknown = sorted(set(self.scaling.sizes) - set(SIZES))
        check(not unknown, f"study.scaling.sizes: unknown {unknown}; choose from {sorted(SIZES)}")
        check(all(u > 0 for u in self.scaling.unique_tokens), "study.scaling.unique_tokens: every budget must be > 0")
        check(
            bool(self.scaling.sizes) == bool(self.scaling.unique_tokens),
            "study.scaling: give both sizes and unique_tokens (single-epoch points at every size × budget), or neither",
        )
        check(self.workers >= 0, f"study.workers={self.workers}: must be >= 0")
        check(0 <= self.downstream <= 10_000, f"study.downstream={self.downstream}: must be in [0, 10000] items")
        check(self.runner in ("local", "ray"), f"study.runner={self.runner!r}: must be 'local' or 'ray'")
        check(
            not (self.runner == "ray" and self.train.optim.schedule == "wsd"),
            "study: WSD decay branches run on the local runner (a branch needs its trunk's folder); runner: local",
        )

    def tune_for(self, objective: str) -> dict[str, list[Any]]:
        """The tuning grid of one objective: the shared axes and its own."""
        return {**self.tune, **self.tune_objective.get(objective, {})}

    def epochs_at(self, objective: str, U: int) -> list[int]:
        """The epoch counts of `objective` at budget U: its `epochs` list and any `more_epochs` there."""
        return sorted(set(self.epochs[objective]) | set(self.more_epochs.get(objective, {}).get(U, [])))

    def budgets(self) -> list[int]:
        """Every unique-token budget a run of this study trains on: the grid's and the scaling points'."""
        return sorted(set(self.unique_tokens) | set(self.scaling.unique_tokens))

    def in_grid(self, row: dict[str, Any]) -> bool:
        """Whether a results row is a point of the grid (not only a single-epoch scaling point)."""
        return (
            row["size"] in self.sizes
            and row["unique_tokens"] in self.unique_tokens
            and row["epochs"] in self.epochs_at(row["objective"], row["unique_tokens"])
        )

    def tuned(self) -> bool:
        return bool(self.tune) or any(self.tune_objective.values())

    def shared(self, objective: str | None = None) -> dict[str, Any]:
        """The shared config's values of the tuned fields (of `objective`'s grid; None: the shared axes): the
        identical-settings point of the tuning grid."""
        return tuned_values(self.model, self.train, self.tune_for(objective) if objective else self.tune)


def tuned_values(model: ModelConfig, train: TrainConfig, keys) -> dict[str, Any]:
    """The values of tuning axes `keys` (train settings by their flat names, or model fields) in these configs."""
    flat = train.flat()
    return {k: getattr(model, k) if TUNABLE[k] == "model" else flat[k] for k in sorted(keys)}


def load_study(path: str | Path) -> StudyConfig:
    """A StudyConfig from YAML, every unknown key or wrong type named in one line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config {path} does not exist; see configs/studies/ for examples")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"study config {path} is not valid YAML ({type(e).__name__})") from None
    check(isinstance(raw, dict), f"study config {path}: expected a mapping of keys to values")
    return study_from_dict(raw)


def study_from_dict(raw: dict, warn_flat: bool = True) -> StudyConfig:
    """A StudyConfig from the mapping a YAML file (or a report's stamp: `warn_flat` off, it is not the user's to
    rewrite) holds."""
    nested = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    values = {k: from_dict(nested[k], v or {}, warn_flat) if k in nested else v for k, v in raw.items()}
    if isinstance(values.get("epochs"), list):  # one list for every objective
        values["epochs"] = {o: values["epochs"] for o in values.get("objectives", StudyConfig().objectives)}
    if isinstance(values.get("more_epochs"), dict):  # a report's stamp is JSON, whose keys are strings
        values["more_epochs"] = {
            o: {int(U) if isinstance(U, str) and U.isdigit() else U: es for U, es in at.items()}
            if isinstance(at, dict)
            else at
            for o, at in values["more_epochs"].items()
        }
    return from_dict(StudyConfig, values)


def point_name(objective: str, size: str, U: int, epochs: int, seed: int, tuned: dict[str, Any]) -> str:
    """e.g. mdm-demo-U25000-E16-s0-lr0.004; `tuned` holds only the values that differ from the shared config,
    so adding a tuning grid to a study keeps (and reuses) the runs it already has."""

    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "x".join(text(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    extra = "".join(f"-{k}{text(v)}" for k, v in sorted(tuned.items()))
    return f"{objective}-{size}-U{U}-E{epochs}-s{seed}{extra}"


def data_dir(study: StudyConfig, U: int) -> Path:
    return Path(study.out) / "data" / f"U{U}"


def jobs(study: StudyConfig) -> list[Job]:
    """Every point of the grid as a runner Job (its run directory under OUT/runs/)."""
    out = []
    for objective, size, U, seed in itertools.product(study.objectives, study.sizes, study.unique_tokens, study.seeds):
        grid, shared = study.tune_for(objective), study.shared(objective)
        keys = sorted(grid)
        for tuned, epochs in itertools.product(
            [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(grid[k] for k in keys))],
            study.epochs_at(objective, U),
        ):
            model = dataclasses.replace(
                study.model, size=size, **{k: v for k, v in tuned.items() if TUNABLE[k] == "model"}
            )
            train = study.train.with_flat(
                objective=objective,
                epochs=epochs,
                seed=seed,
                **{k: v for k, v in tuned.items() if TUNABLE[k] == "train"},
            )
            differs = {k: v for k, v in tuned.items() if v != shared[k]}
            name = point_name(objective, size, U, epochs, seed, differs)
            out.append(Job(name, str(data_dir(study, U)), str(Path(study.out) / "runs" / name), model, train))
            longest = max(study.epochs_at(objective, U))
            if study.train.optim.schedule == "wsd" and epochs != longest:  # a decay branch
                trunk = point_name(objective, size, U, longest, seed, differs)
                out[-1] = dataclasses.replace(out[-1], fork_of=trunk)
    names = {job.name for job in out}
    for objective, size, U, seed in itertools.product(
        study.objectives, study.scaling.sizes, study.scaling.unique_tokens, study.seeds
    ):  # single-epoch scaling points, each its own run (a WSD one too: E = 1 is nobody's branch here)
        name = point_name(objective, size, U, 1, seed, {})
        if name not in names:  # the grid has it already
            model = dataclasses.replace(study.model, size=size)
            train = study.train.with_flat(objective=objective, epochs=1, seed=seed)
            out.append(Job(name, str(data_dir(study, U)), str(Path(study.out) / "runs" / name), model, train))
    return out


def prepare_data(study: StudyConfig, quiet: bool = True) -> None:
    """One prepared data folder per unique-token budget U (kept when its config is unchanged)."""
    from unmask.data.prepare import prepare

    for U in study.budgets():
        cfg = dataclasses.replace(study.data, unique_tokens=U)
        target = data_dir(study, U)
        if prepared_config(target) == to_dict(cfg):
            continue
        prepare(cfg, target, overwrite=target.exists(), quiet=quiet)


def prepared_config(folder: Path) -> Any:
    """The DataConfig a prepared folder's manifest records (None when it has none, or none that reads)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return manifest.get("config") if isinstance(manifest, dict) else None


def config_hash(config: dict) -> str:
    """A short stable hash of a run's resolved config (what makes two runs the same experiment): the model and
    train settings that differ from their defaults (read through the dataclasses, so a field added to unmask
    later, at its default, leaves every hash as it was; runtime controls left out) and the data's files (their
    SHA-256s; not the manifest, which records how fast it was encoded)."""
    from unmask.training.rundir import RUNTIME_FIELDS

    def changed(default: dict, given: dict, skip=()) -> dict:
        return {k: v for k, v in given.items() if k not in skip and v != default[k]}

    model = from_dict(ModelConfig, {**config.get("model", {}), "size": None})
    train = from_dict(TrainConfig, config.get("train", {}), warn_flat=False)
    keep = {  # train settings under their flat names: the grouping of TrainConfig left every hash as it was
        "model": changed(to_dict(ModelConfig()), to_dict(model)),
        "train": changed(TrainConfig().flat(), train.flat(), RUNTIME_FIELDS),
        "data_files": config.get("data_identity", {}).get("files"),
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
