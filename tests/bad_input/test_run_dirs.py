"""Every file of a run directory x every kind of damage, every config field x every kind of wrong value, and every
path that is not a run, through every command that reads a run directory (`sample`, `eval` on validation /
`--text` / `--tasks`, `train --resume true`, lm-eval's `UnmaskLM`): refused in one line, or (where the command does
not need what was damaged) a success that changes nothing it does not own.

The catalogue RUN_DAMAGE is shared: tests/bad_input/test_lm_eval.py, test_study.py (FILE_DAMAGE) and
tests/serve/test_bad_requests.py put it through their own surfaces.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bad_input.contract import (
    GARBAGE,
    TRAINED,
    Outcome,
    Workspace,
    a_file,
    assert_contract,
    assert_unchanged,
    empty_dir,
    not_a_run,
    unmask,
    unmask_lm,
)
from unmask.config import MAX_SEQ_LEN, TRAIN_GROUPS, ConfigError, ModelConfig, TrainConfig
from unmask.objectives import OBJECTIVES
from unmask.run import RUN_FILES

# ---------------------------------------------------------------------------------------------
# The commands that read a run directory


def run_commands(ws: Workspace, run: Path) -> dict[str, Callable[..., Outcome]]:
    """Every command that reads a run directory, as a call on the case's copy."""
    tasks = ["--tasks", ws.tasks, "--limit", 2, "--validation", "false", "--likelihood.mc_samples", 2]
    return {
        "sample": lambda capsys: unmask(capsys, "sample", run, "--length", 4),
        "eval": lambda capsys: unmask(capsys, "eval", run, "--mc_passes", 1),
        "eval-text": lambda capsys: unmask(capsys, "eval", run, "--text", ws.text, "--mc_passes", 1),
        "eval-tasks": lambda capsys: unmask(capsys, "eval", run, *tasks),
        "resume": lambda capsys: unmask(capsys, "train", "--out", run, "--resume", "true", "--tensorboard", "false"),
        "lm-eval": lambda capsys: unmask_lm(run),
    }


READERS = ("sample", "eval", "eval-text", "eval-tasks", "resume", "lm-eval")
WRITERS = {"resume"}
"""Commands that may change the run directory when they succeed (a resumed run repairs itself)."""
MODEL_FILES = frozenset({"config.json", "tokenizer.json", "last.safetensors"})
NEEDS = {command: MODEL_FILES for command in READERS} | {"resume": frozenset({"config.json", "budget.json"})}
"""The files each command cannot do without, damaged they must be refused: the config, the tokenizer and the
final weights (the default); a resumed run needs its budget, repairs its last weights and takes its tokenizer
from its data folder."""


def _needs_lm_eval(command: str) -> None:
    if command == "lm-eval":
        pytest.importorskip("lm_eval")


def _available(commands) -> list[str]:
    """The commands that can run here (lm-eval is an optional extra), `resume` last: it may change the run."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        commands = [c for c in commands if c != "lm-eval"]
    return sorted(commands, key=lambda c: c in WRITERS)


def check_each_command(ws: Workspace, capsys, damage: Damage, commands) -> None:
    """Damage one copy of the AR run and run each command on it; every broken contract is reported at once."""
    run = ws.run("ar")
    damage.mutate(run)
    broken = []
    for command in _available(commands):
        before = ws.snapshot()
        outcome = run_commands(ws, run)[command](capsys)
        try:
            assert_contract(outcome, "refused" if command in damage.refused_by else "either", command)
            assert_unchanged(before, ws.snapshot(), outcome, owned=run if command in WRITERS else None)
        except AssertionError as e:
            broken.append(f"[{command}] {e}")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------------------------------
# Catalogue 1: damaged run directories


@dataclass(frozen=True)
class Damage:
    mutate: Callable[[Path], None]
    refused_by: frozenset[str]
    """Commands that must refuse it; the others may also succeed."""
    field: bool = False
    """A value of one config field: read by `Run` alone, so two commands suffice for the quick run."""


QUICK_COMMANDS = ("sample", "eval", "resume", "lm-eval")
"""Every damage goes through these in the quick run; `eval --text` and `eval --tasks` (the same reader as
`eval`) take it in the slow run."""
FIELD_COMMANDS = ("sample", "resume")
"""A config field's values go through these in the quick run; the others take them in the slow run."""


def _not_utf8(data: bytes) -> bytes:
    """The same bytes with an invalid UTF-8 sequence inside the first string (or in front)."""
    at = data.find(b'"') + 1
    return data[:at] + b"\xff\xfe\xc3" + data[at:]


def _replace_by_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("a folder where a file should be")


FILE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "deleted": lambda p: p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "half": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a directory": _replace_by_dir,
    "garbage": lambda p: p.write_bytes(GARBAGE),
    "not UTF-8": lambda p: p.write_bytes(_not_utf8(p.read_bytes())),
}


def _on_file(name: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda run: damage(run / name)


def edit_json(name: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    """Rewrite a JSON file of the run with edit(its value) (edit may change the value in place and return None)."""

    def mutate(run: Path) -> None:
        path = run / name
        value = json.loads(path.read_text())
        new = edit(value)
        path.write_text(json.dumps(value if new is None else new, indent=1))

    return mutate


def _set(keys: tuple, value) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value

    return edit


def _pop(keys: tuple) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        for key in keys[:-1]:
            config = config[key]
        del config[keys[-1]]

    return edit


CONFIG_KEYS = ("data", "model", "train", "specials", "tokenizer_sha256", "data_identity")
"""The top-level keys of a run's config.json (unmask.training.rundir.create_run_dir)."""
OPTIONAL_KEYS = {"data": {"sample", "eval-text", "eval-tasks", "lm-eval"}, "specials": set(READERS)}
OPTIONAL_KEYS |= {"tokenizer_sha256": set(READERS), "data_identity": set(READERS)}
"""Keys a command can do without (older runs lack the last three; `data` only matters for validation)."""
WRONG_VALUES = {"negative": -1, "huge": 10**12, "string": "x", "null": None, "list": [1]}
SAME_EXPERIMENT = {("train", "epochs"), ("train", "batch_size"), ("train", "seed")}
"""A resumed run checks these against its budget and checkpoints (steps, data position): a change is refused."""
SHAPE = {"n_layer", "d_model", "vocab_size"}
"""Model fields the weights fix (their parameter count): another value does not fit them."""


def _accepts(type_text: str, value) -> bool:
    """Does a field annotated `type_text` (e.g. 'int | None') accept this JSON value?"""
    names = {t.strip() for t in type_text.split("|")}
    if value is None:
        return "None" in names
    if isinstance(value, bool):
        return "bool" in names
    if isinstance(value, int):
        return bool(names & {"int", "float"})
    if isinstance(value, str):
        return "str" in names
    return False


def field_damage(section: str, f: dataclasses.Field, value) -> frozenset[str]:
    """The commands that must refuse config.json with `section.f = value`.

    A value of the wrong type is refused by every reader. Of the right type, the field's own config
    class decides what is in range (a new field brings its bounds along); beyond that, the weights fix
    the shape fields, a resumed run checks its budget and data position, and only the objective
    names something that must exist.
    """
    every, trained = frozenset(READERS), TRAINED[section]
    if (section, f.name) == ("model", "size"):
        return frozenset()  # never read back: a saved run's shape fields win over its size name
    if not _accepts(f.type, value):
        return every
    try:
        dataclasses.replace(trained, **({"size": None} if section == "model" else {}), **{f.name: value})
    except ConfigError:
        return every
    if value == getattr(trained, f.name):
        return frozenset()
    if f.name in SHAPE or (f.name == "objective" and value not in OBJECTIVES):
        return every
    return frozenset({"resume"}) if (section, f.name) in SAME_EXPERIMENT else frozenset()


def missing_field_damage(section: str, name: str) -> frozenset[str]:
    """A missing field takes its default: refused where that changes the weights' shape or the run's budget."""
    default = getattr(type(TRAINED[section])(), name)
    if default == getattr(TRAINED[section], name):
        return frozenset()
    if section == "model":
        return frozenset(READERS) if name in SHAPE else frozenset()
    return frozenset({"resume"}) if (section, name) in SAME_EXPERIMENT else frozenset()


def run_damage_catalogue() -> dict[str, Damage]:
    every = frozenset(READERS)
    cases: dict[str, Damage] = {}
    for name in RUN_FILES:
        refused = frozenset(c for c in READERS if name in NEEDS[c])
        for how, damage in FILE_DAMAGE.items():
            cases[f"{name}:{how}"] = Damage(_on_file(name, damage), refused)
    # config.json: as JSON, each key, each field, each wrong value
    for label, content in {
        "a list": b"[]", "null": b"null", "a number": b"3", "nested too deep": b"[" * 100_000,
        "a 5000-digit number": b'{"model": ' + b"9" * 5000 + b"}", "NaN": b"NaN",
    }.items():  # fmt: skip
        cases[f"config.json:{label}"] = Damage(_on_file("config.json", lambda p, c=content: p.write_bytes(c)), every)
    for key in CONFIG_KEYS:
        cases[f"config.json:-{key}"] = Damage(
            edit_json("config.json", _pop((key,))), every - OPTIONAL_KEYS.get(key, set())
        )
    sections = {"train": TrainConfig, "model": ModelConfig} | {f"train.{g}": c for g, c in TRAIN_GROUPS.items()}
    for section, cls in sections.items():  # TrainConfig's groups too: train.optim.lr, train.mdm.t_beta, ...
        path = tuple(section.split("."))
        cases[f"config.json:{section}=a list"] = Damage(edit_json("config.json", _set(path, [])), every)
        cases[f"config.json:{section}.unknown_key=1"] = Damage(
            edit_json("config.json", _set((*path, "nope"), 1)), every
        )
        for f in dataclasses.fields(cls):
            cases[f"config.json:-{section}.{f.name}"] = Damage(
                edit_json("config.json", _pop((*path, f.name))), missing_field_damage(section, f.name), field=True
            )
            for label, value in WRONG_VALUES.items():
                cases[f"config.json:{section}.{f.name}={label}"] = Damage(
                    edit_json("config.json", _set((*path, f.name), value)), field_damage(section, f, value), True
                )
    cases["config.json:unknown top-level key"] = Damage(edit_json("config.json", _set(("zzz",), 1)), frozenset())
    cases["config.json:train.objective=gpt"] = Damage(
        edit_json("config.json", _set(("train", "objective"), "gpt")), every
    )
    cases["config.json:model.seq_len=MAX+1"] = Damage(
        edit_json("config.json", _set(("model", "seq_len"), MAX_SEQ_LEN + 1)), every
    )
    cases["config.json:model.n_layer=3"] = Damage(edit_json("config.json", _set(("model", "n_layer"), 3)), every)
    cases["config.json:model.vocab_size=64"] = Damage(
        edit_json("config.json", _set(("model", "vocab_size"), 64)), every
    )
    # the special ids: out of the vocabulary, equal, wrong types (sampling indexes logits with them); a resumed
    # run takes them from its data folder
    decoders = every - {"resume"}
    for key in ("eod_id", "mask_id", "pad_id"):
        for label, value in {"-1": -1, "=vocab": 384, "huge": 10**12, "string": "x", "null": None, "list": [0],
                             "a float": 1.0, "true": True}.items():  # fmt: skip
            cases[f"config.json:specials.{key}={label}"] = Damage(
                edit_json("config.json", _set(("specials", key), value)), decoders
            )
        cases[f"config.json:-specials.{key}"] = Damage(edit_json("config.json", _pop(("specials", key))), decoders)
    cases["config.json:specials mask_id=pad_id"] = Damage(
        edit_json("config.json", lambda c: c["specials"].update(mask_id=c["specials"]["pad_id"])), decoders
    )
    cases["config.json:specials=a list"] = Damage(edit_json("config.json", _set(("specials",), [0, 1, 2])), decoders)
    # the tokenizer checksum and the data identity
    for label, value in {"other": "0" * 64, "null": None, "a number": 3, "a list": []}.items():
        refused = frozenset() if label == "null" else every - {"resume"}  # null: a run from before checksums
        cases[f"config.json:tokenizer_sha256={label}"] = Damage(
            edit_json("config.json", _set(("tokenizer_sha256",), value)), refused
        )
    other_train_bin = {"files": {"train.bin": {"bytes": 1, "sha256": "0" * 64}}}
    for label, value in {"a list": [], "a string": "x", "files=a list": {"files": []}, "files=a string": {"files": "x"},
                         "files.train.bin=null": {"files": {"train.bin": None}},
                         "other train.bin": other_train_bin}.items():  # fmt: skip
        refused = frozenset({"eval", "resume"})  # the two that read the data folder
        cases[f"config.json:data_identity={label}"] = Damage(
            edit_json("config.json", _set(("data_identity",), value)), refused
        )
    cases["config.json:data=a number"] = Damage(
        edit_json("config.json", _set(("data",), 3)), frozenset({"eval", "resume"})
    )
    cases["config.json:data=elsewhere"] = Damage(
        edit_json("config.json", _set(("data",), "/nonexistent/data")), frozenset({"eval", "resume"})
    )
    # budget.json: the resumed run's budget must be the one it was trained with
    cases["budget.json:total_steps=10**12"] = Damage(
        edit_json("budget.json", _set(("total_steps",), 10**12)), frozenset({"resume"})
    )
    cases["budget.json:a list"] = Damage(edit_json("budget.json", lambda b: []), frozenset({"resume"}))
    # the checkpoint manifest: malformed entries are never trusted (the files are listed again from disk)
    manifest = "checkpoints/manifest.json"
    for label, edit in {
        "checkpoints=a dict": _set(("checkpoints",), {}),
        "checkpoints=null": _set(("checkpoints",), None),
        "a list": lambda m: [],
        "entry without step": lambda m: m["checkpoints"][-1].pop("step"),
        "entry without file": lambda m: m["checkpoints"][-1].pop("file"),
        "entry step=string": lambda m: m["checkpoints"][-1].update(step="12"),
        "entry step=float": lambda m: m["checkpoints"][-1].update(step=12.0),
        "entry file=a number": lambda m: m["checkpoints"][-1].update(file=12),
        "entry file outside checkpoints/": lambda m: m["checkpoints"][-1].update(file="../config.json"),
        "entry file absolute": lambda m: m["checkpoints"][-1].update(file="/etc/passwd"),
        "entry sha256 wrong": lambda m: m["checkpoints"][-1].update(sha256="0" * 64),
        "entry bytes=string": lambda m: m["checkpoints"][-1].update(bytes="many"),
        "entry bytes wrong": lambda m: m["checkpoints"][-1].update(bytes=1),
        "entries empty": _set(("checkpoints",), []),
        "entry=a string": lambda m: m["checkpoints"].append("step_000000099.pt"),
    }.items():
        cases[f"{manifest}:{label}"] = Damage(edit_json(manifest, edit), frozenset())
    # stray files in checkpoints/
    for label, (name, content) in {
        "step_abc.pt": ("step_abc.pt", GARBAGE),
        "step_000000001.pt garbage": ("step_000000001.pt", GARBAGE),
        "step_999999999.pt garbage": ("step_999999999.pt", GARBAGE),
        "step_000000012.pt.123.tmp": ("step_000000012.pt.123.tmp", GARBAGE),
    }.items():
        cases[f"checkpoints/{label}"] = Damage(
            lambda run, n=name, c=content: (run / "checkpoints" / n).write_bytes(c), frozenset()
        )
    cases["checkpoints/:every checkpoint garbage"] = Damage(_every_checkpoint(GARBAGE), frozenset({"resume"}))
    cases["checkpoints/:deleted"] = Damage(lambda run: shutil.rmtree(run / "checkpoints"), frozenset({"resume"}))
    cases["checkpoints/:a file"] = Damage(_checkpoints_as_file, frozenset({"resume"}))
    return cases


def _every_checkpoint(content: bytes) -> Callable[[Path], None]:
    def mutate(run: Path) -> None:
        for p in (run / "checkpoints").glob("step_*.pt"):
            p.write_bytes(content)

    return mutate


def _checkpoints_as_file(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")


RUN_DAMAGE = run_damage_catalogue()


@pytest.mark.parametrize("damage", RUN_DAMAGE.values(), ids=RUN_DAMAGE.keys())
def test_every_damaged_run_directory_is_refused_in_one_line_and_nothing_changes(ws, capsys, damage):
    check_each_command(ws, capsys, damage, FIELD_COMMANDS if damage.field else QUICK_COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("damage", RUN_DAMAGE.values(), ids=RUN_DAMAGE.keys())
def test_every_damaged_run_directory_through_the_other_commands(ws, capsys, damage):
    check_each_command(ws, capsys, damage, set(READERS) - set(FIELD_COMMANDS if damage.field else QUICK_COMMANDS))


# ---------------------------------------------------------------------------------------------
# Catalogue 2: paths that are not what they should be


RUN_PATHS: dict[str, Callable[[Workspace], Path]] = {
    "a file": a_file,
    "missing": lambda ws: ws.path / "missing",
    "not a run": not_a_run,
    "an empty folder": empty_dir,
    "missing below a file": lambda ws: a_file(ws) / "run",
}


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize("where", RUN_PATHS.values(), ids=RUN_PATHS.keys())
def test_a_run_path_that_is_not_a_run_is_refused(ws, capsys, where, command):
    _needs_lm_eval(command)
    path = where(ws)
    before = ws.snapshot()
    outcome = run_commands(ws, path)[command](capsys)
    assert_contract(outcome, "refused", command)
    assert_unchanged(before, ws.snapshot(), outcome)
