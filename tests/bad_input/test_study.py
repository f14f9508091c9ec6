"""Bad input to `unmask study`, as a class: every file a study folder holds, damaged every way, through every action.

A tiny study (one AR and one MDM point) is run and fitted once for the session; each case damages a copy of
its folder: the results table (CSV and Parquet), failures.json, fit.json (every field, every wrong type), each
run's config, budget, metrics and provenance, the prepared data. `fit` and `report` refuse a folder whose runs
no longer hold what results.csv recorded, in one line naming the damage and the fix; `run` refuses a damaged
failures.json before any work, and otherwise sets damaged runs aside and trains only those again. The readers
are fuzzed with hypothesis, and so are the report's consumers of fit.json: whatever read_fit accepts, they use.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.bad_input.conftest import DOCS_FIT, RUNS, STUDY
from tests.bad_input.contract import Workspace, assert_contract, assert_unchanged, snapshot, unmask
from tests.bad_input.test_run_dirs import FILE_DAMAGE
from unmask.config import ConfigError
from unmask.study.files import read_failures, read_fit
from unmask.study.grid import jobs, load_study
from unmask.study.results import read_table, row_of

ACTIONS = ("run", "fit", "report")


@dataclass
class Study:
    out: Path
    config: Path

    def run(self, name: str = RUNS[0]) -> Path:
        return self.out / "runs" / name


LIGHT = shutil.ignore_patterns("tb", "checkpoints", "best.safetensors")
"""What fit and report never read: left out of the catalogue's copies (run and resume need them: full copies)."""


def study_copy(ws: Workspace, study_dir: Path, full: bool = False) -> Study:
    """The session's study copied into the case's folder, its runs pointed at the copy's data."""
    out = Path(shutil.copytree(study_dir, ws.path / "study", ignore=shutil.ignore_patterns("tb") if full else LIGHT))
    for name in RUNS:
        config = out / "runs" / name / "config.json"
        saved = json.loads(config.read_text())
        config.write_text(json.dumps({**saved, "data": str((out / "data" / "U2000").resolve())}, indent=1))
    path = ws.path / "study.yaml"
    path.write_text(STUDY.format(out=out))
    return Study(out, path)


def action(capsys, study: Study, name: str):
    more = {"fit": ["--n_boot", 0], "run": ["--workers", 1]}.get(name, [])
    return unmask(capsys, "study", name, study.config, *more)


# ---------------------------------------------------------------------------------------------
# Catalogue: every file of a study folder x every kind of damage


@dataclass(frozen=True)
class Damage:
    mutate: Callable[[Path], None]
    refused_by: frozenset[str]


def _file(relative: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda out: damage(out / relative)


def _json(relative: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    def mutate(out: Path) -> None:
        path = out / relative
        value = json.loads(path.read_text())
        new = edit(value)
        path.write_text(json.dumps(value if new is None else new))

    return mutate


def _table(edit: Callable[[list[list[str]]], list[list[str]]]) -> Callable[[Path], None]:
    def mutate(out: Path) -> None:
        path = out / "results.csv"
        rows = list(csv.reader(io.StringIO(path.read_text())))
        buffer = io.StringIO()
        csv.writer(buffer).writerows(edit(rows))
        path.write_text(buffer.getvalue())

    return mutate


def _cell(column: str, value: str) -> Callable[[list[list[str]]], list[list[str]]]:
    def edit(rows):
        rows[1][rows[0].index(column)] = value
        return rows

    return edit


def _final_record(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(out: Path) -> None:
        path = out / "runs" / RUNS[1] / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        edit(next(r for r in reversed(records) if "final_val_loss" in r))
        path.write_text("".join(json.dumps(r) + "\n" for r in records))

    return mutate


FIT_AND_REPORT = frozenset({"fit", "report"})
REPORT = frozenset({"report"})
RUN = frozenset({"run"})
NOTHING = frozenset()


def study_catalogue() -> dict[str, Damage]:
    cases: dict[str, Damage] = {}
    for how, damage in FILE_DAMAGE.items():
        cases[f"results.csv:{how}"] = Damage(_file("results.csv", damage), FIT_AND_REPORT)
        parquet = NOTHING if how == "deleted" else FIT_AND_REPORT  # the CSV is the table; the Parquet a copy
        cases[f"results.parquet:{how}"] = Damage(_file("results.parquet", damage), parquet)
        cases[f"failures.json:{how}"] = Damage(_file("failures.json", damage), NOTHING if how == "deleted" else RUN)
        cases[f"fit.json:{how}"] = Damage(_file("fit.json", damage), NOTHING if how == "deleted" else REPORT)
        for name in RUNS:
            for file in ("config.json", "budget.json", "metrics.jsonl", "provenance.json"):
                lenient = file == "metrics.jsonl" and how == "not UTF-8"  # a record lost, the result kept
                lenient |= file == "provenance.json" and how in ("deleted", "a directory")  # runs may lack it
                refused = NOTHING if lenient else FIT_AND_REPORT
                cases[f"runs/{name[:3]}/{file}:{how}"] = Damage(_file(f"runs/{name}/{file}", damage), refused)
            cases[f"runs/{name[:3]}/last.safetensors:{how}"] = Damage(_file(f"runs/{name}/last.safetensors", damage),
                                                                      NOTHING)  # fmt: skip
        for file in ("manifest.json", "train.bin", "val.bin"):
            cases[f"data/U2000/{file}:{how}"] = Damage(_file(f"data/U2000/{file}", damage), REPORT)
    # the table, row by row
    cases["results.csv:last row dropped"] = Damage(_table(lambda rows: rows[:-1]), FIT_AND_REPORT)
    cases["results.csv:header only"] = Damage(_table(lambda rows: rows[:1]), FIT_AND_REPORT)
    cases["results.csv:a row twice"] = Damage(_table(lambda rows: [*rows, rows[1]]), FIT_AND_REPORT)
    cases["results.csv:a cell short"] = Damage(_table(lambda rows: [rows[0], rows[1][:-1], *rows[2:]]), FIT_AND_REPORT)
    cases["results.csv:a cell more"] = Damage(
        _table(lambda rows: [rows[0], [*rows[1], "x"], *rows[2:]]), FIT_AND_REPORT
    )
    for column, value in {"status": "done", "final_val_loss": "1.0", "epochs": "x", "name": "", "final_val_loss ": "",
                          "unique_tokens": "1e3"}.items():  # fmt: skip
        cases[f"results.csv:{column.strip()}={value!r}"] = Damage(_table(_cell(column.strip(), value)), FIT_AND_REPORT)
    # failures.json: anything but {point name: error}
    for label, value in {"a list": [], "null": None, "a string": "x", "an error a number": {RUNS[0]: 3},
                         "nested too deep": "[" * 100_000}.items():  # fmt: skip
        write = (lambda p, v=value: p.write_text(v)) if label == "nested too deep" else (
            lambda p, v=value: p.write_text(json.dumps(v)))  # fmt: skip
        cases[f"failures.json:{label}"] = Damage(_file("failures.json", write), RUN)
    # a run's budget and result
    for label, value in {"{}": {}, "a list": [], "total_steps=x": "x", "total_steps=null": None}.items():
        edit = (lambda b, v=value: v) if label in ("{}", "a list") else (lambda b, v=value: b.update(total_steps=v))
        cases[f"runs/mdm/budget.json:{label}"] = Damage(_json(f"runs/{RUNS[1]}/budget.json", edit), FIT_AND_REPORT)
    cases["runs/mdm/budget.json:total_steps=+1"] = Damage(
        _json(f"runs/{RUNS[1]}/budget.json", lambda b: b.update(total_steps=b["total_steps"] + 1)), FIT_AND_REPORT
    )
    for label, value in {"null": None, "a string": "x", "another number": 1.0}.items():
        cases[f"runs/mdm/metrics.jsonl:final loss {label}"] = Damage(
            _final_record(lambda r, v=value: r.update(final_val_loss=v)), FIT_AND_REPORT
        )
    cases["runs/mdm/provenance.json:a list"] = Damage(_json(f"runs/{RUNS[1]}/provenance.json", lambda p: []),
                                                      FIT_AND_REPORT)  # fmt: skip
    cases["runs/mdm:deleted"] = Damage(lambda out: shutil.rmtree(out / "runs" / RUNS[1]), FIT_AND_REPORT)
    cases["runs/:deleted"] = Damage(lambda out: shutil.rmtree(out / "runs"), FIT_AND_REPORT)
    return cases | fit_catalogue()


# fit.json: every key removed, every value of the wrong type

WRONG_FOR = {str: [3, None, []], int: ["x", 1.5, None], float: ["x", None, [1]], list: ["x", {}], dict: ["x", []]}
OPTIONAL_KEYS = {"only_at", "loss", "epochs"}
"""Keys fit.json may lack (the others are written always)."""


def _paths(tree, prefix=()):
    """(path, value) of every node of a JSON tree but the root."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return
    for key, value in items:
        yield (*prefix, key), value
        yield from _paths(value, (*prefix, key))


def _edit_tree(tree, op: str, path: tuple, value) -> None:
    """Replace or remove the node at `path`; a path an earlier edit took away is skipped."""
    parent = tree
    for key in path[:-1]:
        if isinstance(parent, dict) and key in parent or isinstance(parent, list) and isinstance(key, int) and (
                key < len(parent)):  # fmt: skip
            parent = parent[key]
        else:
            return
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None) if op == "remove" else parent.__setitem__(last, value)
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = value


def _at(path: tuple, op: str, value=None) -> Callable[[object], None]:
    def edit(tree) -> None:
        for key in path[:-1]:
            tree = tree[key]
        if op == "remove":
            del tree[path[-1]]
        else:
            tree[path[-1]] = value

    return edit


def fit_catalogue() -> dict[str, Damage]:
    fitted = {**json.loads(DOCS_FIT.read_text()), "study": "bad"}
    cases = {}
    seen = set()
    for path, value in _paths(fitted):
        shape = tuple("*" if isinstance(k, int) or k.isdigit() or k in ("ar", "mdm") else k for k in path)
        if shape in seen:  # one case per place in the schema: the first objective / U / list item stands for all
            continue
        seen.add(shape)
        name = ".".join(map(str, path))
        data_key = isinstance(path[-1], int) or path[-1].isdigit() or path[-1] in ("ar", "mdm", "identical", "own_best")
        data_key |= len(path) >= 2 and path[-2] in ("values", "intervals_95", "unidentified", "only_at")
        if not isinstance(path[-1], int):
            refused = NOTHING if data_key or path[-1] in OPTIONAL_KEYS else REPORT
            cases[f"fit.json:-{name}"] = Damage(_json("fit.json", _at(path, "remove")), refused)
        kind = next((t for t in (bool, int, float, str, list, dict) if isinstance(value, t)), None)
        for wrong in WRONG_FOR.get(kind, []):
            allowed = wrong is None and path[-1] in ("compute", "reason", "loss", "epochs", "mdm_beats_ar_from_epochs",
                                                      "mdm_beats_ar_from_flops")  # fmt: skip
            allowed |= kind is float and isinstance(wrong, int)
            cases[f"fit.json:{name}={wrong!r}"] = Damage(_json("fit.json", _at(path, "set", wrong)),
                                                         NOTHING if allowed else REPORT)  # fmt: skip
    return cases


STUDY_DAMAGE = study_catalogue()


READERS = {"results": ("fit", "report"), "failures.json": ("run",), "fit.json": ("report",),
           "runs": ("fit", "report"), "data": ("report",)}  # fmt: skip
"""The actions that read each file of a study folder (run rewrites the table and fit.json, and sets damaged runs
aside: its own tests below)."""


def _cases():
    """(damage, action) for each action that reads the damaged file; a report that succeeds (seconds: figures)
    in the slow run."""
    out = []
    for name, damage in STUDY_DAMAGE.items():
        for act in READERS[next(k for k in READERS if name.startswith(k))]:
            slow = act == "report" and act not in damage.refused_by
            out.append(pytest.param(damage, act, id=f"{name} [{act}]", marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("damage, act", _cases())
def test_every_damaged_study_file_is_refused_in_one_line_by_what_reads_it(ws, capsys, study_dir, damage, act):
    study = study_copy(ws, study_dir, full=act == "run")
    damage.mutate(study.out)
    before = snapshot(ws.path)  # study commands read nothing but the study
    outcome = action(capsys, study, act)
    refused = act in damage.refused_by
    assert_contract(outcome, "refused" if refused else "either", f"study {act}")
    if outcome.code == 2:
        assert str(study.out) in outcome.err or "study.yaml" in outcome.err, outcome.err  # names the file
        assert_unchanged(before, snapshot(ws.path), outcome)


@pytest.mark.parametrize(
    "config",
    ["", "name: [", "nope: 1", "epochs: x", "unique_tokens: [-1]", "sizes: [huge]", "runner: slurm", "- a list"],
)
@pytest.mark.parametrize("act", ACTIONS)
def test_a_bad_study_config_is_refused_by_every_action(ws, capsys, act, config):
    path = ws.path / "bad.yaml"
    path.write_text(config)
    before = snapshot(ws.path)
    outcome = unmask(capsys, "study", act, path if config else ws.path / "missing.yaml")
    assert_contract(outcome, "refused", f"study {act}")
    assert_unchanged(before, snapshot(ws.path), outcome)


# ---------------------------------------------------------------------------------------------
# Damage between invocations: run retrains only what is missing; fit and report refuse until it has

BETWEEN = {
    "a run deleted": lambda s: shutil.rmtree(s.run(RUNS[1])),
    "a run's config emptied": lambda s: (s.run(RUNS[1]) / "config.json").write_text(""),
    "a run's budget emptied": lambda s: (s.run(RUNS[1]) / "budget.json").write_text(""),
    "a run's metrics emptied": lambda s: (s.run(RUNS[1]) / "metrics.jsonl").write_text(""),
    "a run's metrics and checkpoints emptied": lambda s: (
        (s.run(RUNS[1]) / "metrics.jsonl").write_text(""), shutil.rmtree(s.run(RUNS[1]) / "checkpoints")),
    "every file of a run emptied": lambda s: [p.write_bytes(b"") for p in s.run(RUNS[1]).rglob("*") if p.is_file()],
    "the table cut short": lambda s: (s.out / "results.csv").write_text(
        (s.out / "results.csv").read_text()[: len((s.out / "results.csv").read_text()) // 2]),
    "the table deleted": lambda s: (s.out / "results.csv").unlink(),
    "the data's manifest damaged": lambda s: (s.out / "data" / "U2000" / "manifest.json").write_text("{"),
}  # fmt: skip
SET_ASIDE = {"a run's config emptied", "a run's budget emptied", "every file of a run emptied",
             "the data's manifest damaged"}  # fmt: skip
"""The damages that leave a folder that cannot be read or resumed: moved to OUT/damaged/ and made again (a deleted
run is trained again, a run without metrics or checkpoints starts again in place, a lost table is written again)."""


def weights(study: Study) -> dict[str, tuple]:
    return {name: snapshot(study.run(name)).get(str(study.run(name) / "last.safetensors")) for name in RUNS}


@pytest.mark.parametrize("name", BETWEEN)
def test_a_study_damaged_between_invocations_is_refused_then_repaired_by_run(ws, capsys, study_dir, name):
    study = study_copy(ws, study_dir, full=True)
    untouched = weights(study)[RUNS[0]]
    BETWEEN[name](study)
    fitted = action(capsys, study, "fit")
    assert_contract(fitted, "either" if name == "the data's manifest damaged" else "refused", "study fit")
    if fitted.code == 2:  # names what is damaged
        assert "results.csv" in fitted.err or RUNS[1] in fitted.err, fitted.err
    ran = action(capsys, study, "run")
    assert_contract(ran, "either", "study run")
    assert ran.code == 0, ran.err
    assert weights(study)[RUNS[0]] == untouched  # the intact point is not trained again
    moved = sorted(p.name for p in (study.out / "damaged").iterdir()) if (study.out / "damaged").exists() else []
    assert bool(moved) == (name in SET_ASIDE), (moved, ran.err)
    rows = read_table(study.out / "results.csv")
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert action(capsys, study, "fit").code == 0


@pytest.mark.slow
def test_a_repaired_study_reports_again(ws, capsys, study_dir):
    study = study_copy(ws, study_dir, full=True)
    shutil.rmtree(study.run(RUNS[1]))
    assert action(capsys, study, "report").code == 2
    assert action(capsys, study, "run").code == 0
    assert action(capsys, study, "report").code == 0


def test_a_diverged_run_is_listed_and_left_out_of_fit_and_report(ws, capsys, study_dir):
    """A run whose final loss is null (non-finite, logged as null): run records it 'diverged'; fit goes on without
    it, saying so; before run recorded it, the table and the run disagree and fit refuses."""
    study = study_copy(ws, study_dir, full=True)
    _final_record(lambda r: r.update(final_val_loss=None, val_loss=None))(study.out)
    assert action(capsys, study, "fit").code == 2
    ran = action(capsys, study, "run")
    assert ran.code == 0, ran.err
    rows = {r["name"]: r for r in read_table(study.out / "results.csv")}
    assert rows[RUNS[1]]["status"] == "diverged" and rows[RUNS[1]]["final_val_loss"] is None
    fitted = action(capsys, study, "fit")
    assert fitted.code == 0 and "diverged" in fitted.err and RUNS[1] in fitted.err, fitted.err


def test_run_refuses_a_damaged_failures_record_before_any_work(ws, capsys, study_dir):
    study = study_copy(ws, study_dir, full=True)
    shutil.rmtree(study.run(RUNS[1]))
    (study.out / "failures.json").write_text("{")
    before = snapshot(ws.path)
    outcome = action(capsys, study, "run")
    assert_contract(outcome, "refused", "study run")
    assert "failures.json" in outcome.err and "delete it" in outcome.err
    assert_unchanged(before, snapshot(ws.path), outcome)


# ---------------------------------------------------------------------------------------------
# Fuzzing the study folder's readers

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIT_PATHS = [path for path, _ in _paths({**json.loads(DOCS_FIT.read_text()), "study": "bad"})]


@pytest.fixture(scope="module")
def fuzz_study(study_dir, tmp_path_factory) -> Path:
    out = Path(shutil.copytree(study_dir, tmp_path_factory.mktemp("fuzz") / "out"))
    config = out.parent / "study.yaml"
    config.write_text(STUDY.format(out=out))
    return config


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(["replace", "remove"]), st.sampled_from(FIT_PATHS), json_values),
                      max_size=3))  # fmt: skip
def test_fuzzed_fit_json_is_read_and_reported_or_refused_in_one_line(fuzz_study, edits):
    """read_fit, then what report makes of it (summary, findings, fit tables, fits): all work, or one ConfigError."""
    from unmask.study.pipeline import _fit_blocks, _fits_of, findings, fit_summary
    from unmask.study.report import PAPER

    study = load_study(fuzz_study)
    tree = {**json.loads(DOCS_FIT.read_text()), "study": "bad"}
    for op, path, value in edits:
        _edit_tree(tree, op, path, value)
    path = Path(study.out) / "fit.json"
    original = path.read_text()
    try:
        path.write_text(json.dumps(tree))
        try:
            fitted = read_fit(study, fuzz_study)
        except ConfigError as e:
            assert "\n" not in str(e) and "fit.json" in str(e)
            event("refused")
            return
        event("read")
        point = {"unique_tokens": 6250, "flops": 1e12, "non_embedding_params": 332448, "seed": 0, "size": "demo",
                 "tuned": "{}"}  # fmt: skip
        rows = [{**point, "objective": o, "epochs": e, "final_val_loss": 5.0 + e / 10, "tokens_seen": 6250 * e}
                for o in ("ar", "mdm") for e in (1, 4)]  # fmt: skip
        fit_summary(fitted)
        findings(fitted, rows, {6250: 6.0})
        for entry in fitted["protocols"].values():
            _fit_blocks(entry, PAPER)
            for fit in _fits_of(entry).values():
                try:
                    fit.loss(332448, 6250 * 4, 6250)
                except ValueError:
                    pass  # a parameter the fit could not identify: the report leaves that point out
    finally:
        path.write_text(original)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), byte=st.integers(0, 255),
       extra=st.text(max_size=40), op=st.sampled_from(["cut", "flip", "append", "insert"]))  # fmt: skip
def test_fuzzed_results_tables_read_or_raise_one_line(study_dir, tmp_path_factory, cut, flip, byte, extra, op):
    text = (study_dir / "results.csv").read_bytes()
    new = {
        "cut": text[: cut % (len(text) + 1)],
        "flip": text[: flip % len(text)] + bytes([byte]) + text[flip % len(text) + 1 :],
        "append": text + extra.encode("utf-8", "surrogatepass"),
        "insert": text[: cut % len(text)] + extra.encode("utf-8", "surrogatepass") + text[cut % len(text) :],
    }[op]
    path = tmp_path_factory.getbasetemp() / "fuzzed-results.csv"
    path.write_bytes(new)
    try:
        rows = read_table(path)
    except ConfigError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        event("refused")
        return
    event("read")
    for row in rows:
        assert row["name"] and row["status"] in ("missing", "unfinished", "finished", "diverged")
        assert all(row[k] is None or isinstance(row[k], int) for k in ("unique_tokens", "epochs", "seed"))
        assert row["status"] != "finished" or isinstance(row["final_val_loss"], float)


@settings(max_examples=150, deadline=None)
@given(content=json_values | st.dictionaries(st.text(max_size=6), json_values, max_size=3))
def test_fuzzed_failures_records_read_or_raise_one_line(study_dir, tmp_path_factory, content):
    out = tmp_path_factory.getbasetemp() / "fuzzed-failures"
    out.mkdir(exist_ok=True)
    (out / "failures.json").write_text(json.dumps(content))
    study = load_study(_write_config(out))
    try:
        failures = read_failures(study)
    except ConfigError as e:
        assert "\n" not in str(e) and "failures.json" in str(e)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in failures.items())


def _write_config(out: Path) -> Path:
    path = out / "study.yaml"
    path.write_text(STUDY.format(out=out))
    return path


RUN_FILES_READ = ("budget.json", "provenance.json", "metrics.jsonl")


@settings(max_examples=150, deadline=None)
@given(
    file=st.sampled_from(RUN_FILES_READ),
    value=json_values,
    key=st.sampled_from(
        ["total_steps", "unique_tokens", "tokens_to_see", "val_loss", "final_val_loss", "step", "epoch", "git_sha"]
    ),
)
def test_fuzzed_run_files_give_a_row_or_one_line(study_dir, tmp_path_factory, file, value, key):  # fmt: skip
    """row_of, the table's reader of a run: a row whose numbers are numbers, or one ConfigError naming the file."""
    root = tmp_path_factory.getbasetemp() / "fuzzed-run"
    shutil.rmtree(root, ignore_errors=True)
    out = Path(shutil.copytree(study_dir, root / "out", ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "tb")))
    study = load_study(_write_config(out))
    job = next(j for j in jobs(study) if j.name == RUNS[1])
    path = Path(job.out) / file
    if file == "metrics.jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines()]
        records[-1][key] = value
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        saved = json.loads(path.read_text())
        saved[key] = value
        path.write_text(json.dumps(saved))
    try:
        row = row_of(job, study)
    except ConfigError as e:
        assert "\n" not in str(e) and file in str(e)
        event("refused")
        return
    event("read")
    assert row["status"] in ("unfinished", "finished", "diverged")
    assert row["status"] != "finished" or isinstance(row["final_val_loss"], (int, float))
