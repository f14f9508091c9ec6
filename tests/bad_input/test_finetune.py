"""Bad input to `unmask finetune`, as a class: instruction files, instruction folders, options and outputs.

Generated like tests/bad_input/test_run_dirs.py's catalogues: every field of an instruction line x every kind of wrong
value, every file of an instruction folder x every kind of damage, every numeric option x every out-of-range
value, every run-writing command x every output path that cannot be used, every objective x the data kind it
does not take. Each case: exit 2 with one line `unmask: error: ...` naming what to fix, nothing created or
changed (or, where the input is legal after all, a success that changes nothing outside its own output).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.bad_input.conftest import CONVERSATIONS, copy, write_jsonl
from tests.bad_input.contract import Workspace, a_file, assert_contract, assert_unchanged, not_a_run, unmask
from tests.bad_input.test_numbers import (
    COUNT,
    FLOATS,
    NON_NEGATIVE_FLOAT,
    OUT_OF_RANGE,
    POSITIVE_FLOAT,
    SEED,
    UNIT_FLOAT,
)
from tests.bad_input.test_run_dirs import FILE_DAMAGE, edit_json
from unmask.finetune.chat import InstructionDataError, read_numbered


@pytest.fixture
def ws(ws: Workspace, finetune_root: Path) -> Workspace:
    """The case's workspace, whose snapshots also cover the instruction folders and the SFT run (finetune_root)."""
    return dataclasses.replace(ws, also=(finetune_root,))


GOOD = CONVERSATIONS[0]
MESSAGES = {"messages": [{"role": "user", "content": "say a"}, {"role": "assistant", "content": "a a"}]}
FAST = [
    "--train.checkpoint.stop_at_step",
    1,
    "--train.batch_size",
    4,
    "--train.eval.mc_passes",
    1,
    "--train.eval.final_mc_passes",
    1,
]
FAST += ["--tensorboard", "false"]
"""Legal settings that keep a fine-tuning run that succeeds to one step."""

# ---------------------------------------------------------------------------------------------
# Catalogue 1: malformed instruction files (JSONL), through --data and --val

WRONG = {"a number": 3, "null": None, "a list": ["a"], "an object": {"a": 1}, "true": True}


def _line(row: object) -> bytes:
    return (json.dumps(row) + "\n").encode()


def _message(**changes) -> dict:
    message = {"role": "assistant", "content": "a a", **changes}
    return {k: v for k, v in message.items() if v is not DROP}


DROP = object()


def instruction_catalogue() -> dict[str, bytes]:
    good = b"".join(_line(r) for r in CONVERSATIONS[1:6])  # a valid file around the bad line
    cases = {
        "not UTF-8": b'{"prompt": "caf\xe9", "response": "b"}\n',
        "not JSON": b"{prompt: say a}\n",
        "truncated JSON": _line(GOOD)[:15],
        "NUL bytes": b"\x00" * 40 + b"\n",
        "nested too deep": b"[" * 100_000 + b"\n",
        "nested objects too deep": b'{"a":' * 50_000 + b"\n",
        "a 5000-digit number": b'{"prompt": ' + b"9" * 5000 + b', "response": "b"}\n',
        "JSON a list": b'["say a", "a a"]\n',
        "JSON a string": b'"say a"\n',
        "JSON null": b"null\n",
        "JSON a number": b"3\n",
        "NaN": b'{"prompt": NaN, "response": "b"}\n',
        "no known field": _line({"question": "say a", "answer": "a a"}),
        "a response longer than the sequence": _line({"prompt": "say a", "response": "word " * 200}),
    }
    for key in ("prompt", "response"):
        cases[f"no {key}"] = _line({k: v for k, v in GOOD.items() if k != key})
        for label, value in WRONG.items():
            cases[f"{key}={label}"] = _line({**GOOD, key: value})
    cases["response empty"] = _line({**GOOD, "response": ""})
    cases["response blank"] = _line({**GOOD, "response": " \n\t"})
    for label, value in {**WRONG, "a string": "say a", "empty": [], "a list of strings": ["say a", "a a"]}.items():
        if label != "a list":
            cases[f"messages={label}"] = _line({"messages": value})
    user = {"role": "user", "content": "say a"}
    for label, value in {**WRONG, "empty": ""}.items():
        cases[f"role={label}"] = _line({"messages": [user, _message(role=value)]})
    cases["role unknown"] = _line({"messages": [user, _message(role="robot")]})
    cases["no role"] = _line({"messages": [user, _message(role=DROP)]})
    for label, value in WRONG.items():
        cases[f"content={label}"] = _line({"messages": [user, _message(content=value)]})
    cases["no content"] = _line({"messages": [user, _message(content=DROP)]})
    cases["a message a string"] = _line({"messages": [user, "a a"]})
    cases["the last message the user's"] = _line({"messages": [_message(), user]})
    cases["an empty assistant message"] = _line({"messages": [user, _message(content="")]})
    cases = {name: good + content for name, content in cases.items()}  # a bad line among good ones
    cases |= {"an empty file": b"", "blank lines only": b"\n \n\t\n"}  # nothing to read at all
    return cases


INSTRUCTION_FILES = instruction_catalogue()


def _prepare(ws: Workspace, base: str, *more) -> list:
    return ["finetune", "prepare", ws.pristine.runs[base], "--out", ws.path / "prepared", *more]


@pytest.mark.parametrize("where", ["--data", "--val"])
@pytest.mark.parametrize("content", INSTRUCTION_FILES.values(), ids=INSTRUCTION_FILES.keys())
def test_every_malformed_instruction_file_is_refused(ws, capsys, content, where):
    bad = ws.path / "bad.jsonl"
    bad.write_bytes(content)
    good = write_jsonl(ws.path / "good.jsonl", CONVERSATIONS)
    files = ["--data", bad] if where == "--data" else ["--data", good, "--val", bad]
    before = ws.snapshot()
    outcome = unmask(capsys, *_prepare(ws, "mdm", *files, "--drop_long", "false"))
    assert_contract(outcome, "refused", f"finetune prepare {where}")
    assert "bad.jsonl" in outcome.err  # names the file (and the line)
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.parametrize(
    "path", [lambda ws: ws.path / "missing.jsonl", a_file, lambda ws: a_file(ws) / "x.jsonl", not_a_run],
    ids=["missing", "a file that is not JSONL", "below a file", "a folder"],
)  # fmt: skip
def test_an_instruction_path_that_is_not_a_file_of_conversations_is_refused(ws, capsys, path):
    target = path(ws)
    before = ws.snapshot()
    outcome = unmask(capsys, *_prepare(ws, "ar", "--data", target))
    assert_contract(outcome, "refused", "finetune prepare --data")
    assert_unchanged(before, ws.snapshot(), outcome)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
roles = st.sampled_from(["user", "assistant", "system", "robot", ""]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=8) | json_values}), max_size=3)
rows = st.one_of(
    st.fixed_dictionaries({"prompt": st.text(max_size=8) | json_values, "response": st.text(max_size=8) | json_values}),
    st.fixed_dictionaries({"messages": messages | json_values}),
    st.dictionaries(st.sampled_from(["prompt", "response", "messages", "x"]), json_values, max_size=3),
    json_values,
)
raw_lines = st.text(max_size=30) | st.binary(max_size=30).map(lambda b: b.decode("latin-1"))
lines = st.lists(rows.map(json.dumps) | raw_lines, min_size=0, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=lines, raw=st.binary(max_size=20), use_raw=st.booleans())
def test_fuzzed_instruction_files_read_or_raise_one_line(tmp_path, content, raw, use_raw):
    """read_numbered: conversations that end in a non-empty assistant turn, or one InstructionDataError line."""
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(raw if use_raw else "\n".join(content).encode("utf-8", "surrogatepass"))
    try:
        conversations = read_numbered(path)
    except InstructionDataError as e:
        assert str(e) and "\n" not in str(e) and "fuzz.jsonl" in str(e), str(e)
        event("refused")
        return
    event("read")
    for where, conversation in conversations:
        assert where.startswith(f"{path}:") and conversation and conversation[-1].role == "assistant"
        assert all(isinstance(m.content, str) for m in conversation) and conversation[-1].content.strip()


# ---------------------------------------------------------------------------------------------
# Catalogue 2: damaged instruction folders, through every command that trains on one

FOLDER_FILES = ("manifest.json", "tokenizer.json", "train.bin", "train.learned", "val.bin", "val.learned")
MANIFEST_INTS = ("seq_len", "pad_id", "mask_id", "eod_id", "vocab_size", "n_train", "n_val")


def folder_catalogue() -> dict[str, tuple[Callable[[Path], None], bool]]:
    """name: (damage to a copy of an instruction folder, must every command refuse it)."""
    cases: dict[str, tuple[Callable[[Path], None], bool]] = {}
    for name in FOLDER_FILES:
        for how, damage in FILE_DAMAGE.items():
            cases[f"{name}:{how}"] = (lambda folder, n=name, d=damage: d(folder / n), True)
    for key in MANIFEST_INTS:
        for label, value in {"-1": -1, "huge": 10**12, "a string": "x", "null": None, "a float": 1.5}.items():
            cases[f"manifest.json:{key}={label}"] = (edit_json("manifest.json", _set(key, value)), True)
        cases[f"manifest.json:-{key}"] = (edit_json("manifest.json", _pop(key)), True)
    for label, value in {"another": "tokens", "null": None, "a list": []}.items():
        cases[f"manifest.json:kind={label}"] = (edit_json("manifest.json", _set("kind", value)), True)
    cases["manifest.json:dtype=float64"] = (edit_json("manifest.json", _set("dtype", "float64")), True)
    at_vocab = edit_json("manifest.json", lambda m: m.update(mask_id=m["vocab_size"]))
    cases["manifest.json:mask_id=vocab_size"] = (at_vocab, True)
    cases["manifest.json:n_train=0"] = (edit_json("manifest.json", _set("n_train", 0)), True)
    cases["manifest.json:n_val=0"] = (edit_json("manifest.json", _set("n_val", 0)), True)
    cases["manifest.json:a list"] = (edit_json("manifest.json", lambda m: []), True)
    cases["manifest.json:files=a list"] = (edit_json("manifest.json", _set("files", [])), False)
    cases["manifest.json:an unknown key"] = (edit_json("manifest.json", _set("zzz", 1)), False)
    return cases


def _set(key: str, value) -> Callable[[dict], None]:
    return lambda m: m.__setitem__(key, value)


def _pop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key)


FOLDER_DAMAGE = folder_catalogue()


def folder_commands(ws: Workspace, folder: Path, sft_run: Path) -> dict[str, list]:
    base, out = ws.pristine.runs["mdm"], ws.path / "new-run"
    return {
        "sft": ["finetune", "sft", base, "--data", folder, "--out", out, *FAST],
        "r2ft": ["finetune", "r2ft", sft_run, "--data", folder, "--out", out, *FAST],
        "train sft_mdm": [
            "train",
            "--data",
            folder,
            "--out",
            out,
            "--train.objective",
            "sft_mdm",
            "--train.init_from",
            base,
            *FAST,
        ],  # fmt: skip
    }


@pytest.mark.parametrize("case", FOLDER_DAMAGE.values(), ids=FOLDER_DAMAGE.keys())
def test_every_damaged_instruction_folder_is_refused(ws, capsys, folders, sft_run, case):
    damage, refused = case
    folder = copy(folders["mdm"], ws.path / "folder")
    damage(folder)
    broken = []
    commands = folder_commands(ws, folder, sft_run)
    for name in ("sft", "r2ft", "train sft_mdm") if refused else ("sft",):
        before = ws.snapshot()
        outcome = unmask(capsys, *commands[name])
        try:
            assert_contract(outcome, "refused" if refused else "either", name)
            assert_unchanged(before, ws.snapshot(), outcome, owned=ws.path / "new-run")
        except AssertionError as e:
            broken.append(f"[{name}] {e}")
        if outcome.code == 0:
            import shutil

            shutil.rmtree(ws.path / "new-run")
    assert not broken, "\n".join(broken)


# ---------------------------------------------------------------------------------------------
# Catalogue 3: each objective on the data kind it does not take, fresh and resumed


def kind_catalogue() -> dict[str, Callable[[Workspace, dict, Path], list]]:
    def plain(ws: Workspace) -> Path:
        return ws.pristine.data

    cases: dict[str, Callable[[Workspace, dict, Path], list]] = {
        "finetune sft on token data (mdm base)": lambda ws, f, s: [
            "finetune", "sft", ws.pristine.runs["mdm"], "--data", plain(ws), "--out", ws.path / "r", *FAST],
        "finetune sft on token data (ar base)": lambda ws, f, s: [
            "finetune", "sft", ws.pristine.runs["ar"], "--data", plain(ws), "--out", ws.path / "r", *FAST],
        "finetune r2ft on token data": lambda ws, f, s: [
            "finetune", "r2ft", s, "--data", plain(ws), "--out", ws.path / "r", *FAST],
        "finetune energy on an instruction folder": lambda ws, f, s: [
            "finetune", "energy", ws.pristine.runs["mdm"], "--data", f["mdm"], "--out", ws.path / "r", *FAST],
    }  # fmt: skip
    for objective in ("sft_mdm", "sft_ar", "r2ft"):
        base = "ar" if objective == "sft_ar" else "mdm"
        cases[f"train {objective} on token data"] = lambda ws, f, s, o=objective, b=base: [
            "train", "--data", plain(ws), "--out", ws.path / "r", "--train.objective", o, *FAST,
            "--train.init_from", s if o == "r2ft" else ws.pristine.runs[b]]  # fmt: skip
        cases[f"train {objective} on token data, no base"] = lambda ws, f, s, o=objective: [
            "train",
            "--data",
            plain(ws),
            "--out",
            ws.path / "r",
            "--train.objective",
            o,
            "--model.size",
            "tiny",
            *FAST,
        ]
    for objective in ("ar", "mdm", "ar_orderings"):
        cases[f"train {objective} on an instruction folder"] = lambda ws, f, s, o=objective: [
            "train",
            "--data",
            f["mdm"],
            "--out",
            ws.path / "r",
            "--train.objective",
            o,
            "--model.size",
            "tiny",
            *FAST,
        ]
    return cases


KINDS = kind_catalogue()


@pytest.mark.parametrize("argv", KINDS.values(), ids=KINDS.keys())
def test_an_objective_on_the_data_kind_it_does_not_take_is_refused(ws, capsys, folders, sft_run, argv):
    args = argv(ws, folders, sft_run)
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "refused", " ".join(map(str, args[:3])))
    assert "trains on" in outcome.err
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.parametrize("objective", ["sft", "mdm"])
def test_a_resumed_run_whose_data_became_the_other_kind_is_refused(ws, capsys, folders, objective):
    """A stopped run, its data folder replaced by a folder of the other kind under the same path."""
    data = copy(folders["mdm"] if objective == "sft" else ws.pristine.data, ws.path / "data")
    out = ws.path / "run"
    first = ["finetune", "sft", ws.pristine.runs["mdm"]] if objective == "sft" else ["train", "--model.size", "tiny"]
    assert unmask(capsys, *first, "--data", data, "--out", out, *FAST).code == 0
    import shutil

    shutil.rmtree(data)
    copy(ws.pristine.data if objective == "sft" else folders["mdm"], data)
    resume = ["finetune", "sft", ws.pristine.runs["mdm"]] if objective == "sft" else ["train"]
    before = ws.snapshot()
    outcome = unmask(capsys, *resume, "--out", out, "--resume", "true", "--tensorboard", "false")
    assert_contract(outcome, "refused", "resume")
    assert_unchanged(before, ws.snapshot(), outcome, owned=out)


# ---------------------------------------------------------------------------------------------
# Catalogue 4: out-of-range options of every finetune command

EVAL = ["--per_task", 1, "--length", 4, "--tasks", "reverse"]
NUMERIC: dict[str, tuple[Callable[[Workspace, dict, Path], list], dict, str | None]] = {
    "finetune prepare": (
        lambda ws, f, s: [
            "finetune",
            "prepare",
            ws.pristine.runs["mdm"],
            "--out",
            ws.path / "prepared",
            "--per_task",
            2,
            "--tasks",
            "reverse",
        ],  # fmt: skip
        {"--per_task": (OUT_OF_RANGE, COUNT), "--val_share": (FLOATS, UNIT_FLOAT), "--seed": (OUT_OF_RANGE, SEED)},
        "prepared",
    ),
    "finetune eval mdm": (
        lambda ws, f, s: ["finetune", "eval", ws.pristine.runs["mdm"], *EVAL],
        {
            "--per_task": (OUT_OF_RANGE, COUNT),
            "--length": (OUT_OF_RANGE, COUNT),
            "--seed": (OUT_OF_RANGE, SEED),
            "--sampler.commit.steps": (OUT_OF_RANGE, COUNT),
            "--sampler.commit.block_length": (OUT_OF_RANGE, COUNT),
            "--sampler.conv.kernel": (OUT_OF_RANGE, COUNT),
            "--sampler.temperature": (FLOATS, NON_NEGATIVE_FLOAT),
        },
        None,
    ),
    "finetune eval ar": (
        lambda ws, f, s: ["finetune", "eval", ws.pristine.runs["ar"], *EVAL],
        {"--per_task": (OUT_OF_RANGE, COUNT), "--length": (OUT_OF_RANGE, COUNT), "--seed": (OUT_OF_RANGE, SEED)},
        None,
    ),
    "finetune tasks": (
        lambda ws, f, s: ["finetune", "tasks", "--out", ws.path / "tasks", "--per_task", 1],
        {"--per_task": (OUT_OF_RANGE, COUNT)},
        "tasks",
    ),
    "finetune sft": (
        lambda ws, f, s: [
            "finetune",
            "sft",
            ws.pristine.runs["mdm"],
            "--data",
            f["mdm"],
            "--out",
            ws.path / "r",
            *FAST,
        ],
        {
            "--train.batch_size": (OUT_OF_RANGE, {"-1", "0", "2**63", "2**64"}),
            "--train.optim.lr": (FLOATS, POSITIVE_FLOAT),
            "--train.epochs": ({"-1": -1, "0": 0}, {"-1", "0"}),
        },
        "r",
    ),
    "finetune r2ft": (
        lambda ws, f, s: ["finetune", "r2ft", s, "--data", f["mdm"], "--out", ws.path / "r", *FAST],
        {
            "--train.r2ft.max_phrase": ({"-1": -1, "0": 0}, {"-1", "0"}),
            "--train.r2ft.filler_rate": (FLOATS, {"-1", "1e12", "nan", "inf"}),
            "--train.r2ft.beta_w": (FLOATS, NON_NEGATIVE_FLOAT),
        },
        "r",
    ),
    "finetune energy": (
        lambda ws, f, s: ["finetune", "energy", ws.pristine.runs["mdm"], "--out", ws.path / "r", *FAST],
        {
            "--train.nce.t_min": (FLOATS, {"-1", "0", "1e12", "nan", "inf"}),
            "--train.nce.t_max": (FLOATS, {"-1", "0", "1e12", "nan", "inf"}),
        },
        "r",
    ),
}


def numeric_cases() -> dict[str, tuple]:
    cases = {}
    for name, (base, options, owned) in NUMERIC.items():
        for option, (values, refused) in options.items():
            for label, value in values.items():
                cases[f"{name} {option}={label}"] = (base, option, value, label in refused, owned)
    return cases


NUMERIC_CASES = numeric_cases()


@pytest.mark.parametrize("case", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_every_finetune_option_out_of_range_is_refused(ws, capsys, folders, sft_run, case):
    base, option, value, refused, owned = case
    args = [*base(ws, folders, sft_run), option, value]
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "refused" if refused else "either", f"{args[0]} {args[1]} {option} {value}")
    assert_unchanged(before, ws.snapshot(), outcome, owned=owned and ws.path / owned)


def test_finetune_eval_needs_a_run(ws, capsys):
    outcome = unmask(capsys, "finetune", "eval")
    assert_contract(outcome, "refused", "finetune eval")
    assert "at least one run directory" in outcome.err


# ---------------------------------------------------------------------------------------------
# Catalogue 5: output paths that cannot be used, for every finetune command that writes

BAD_OUTS: dict[str, Callable[[Workspace], object]] = {
    ".": lambda ws: ".",
    "''": lambda ws: "",
    "..": lambda ws: "..",
    "/": lambda ws: "/",
    "a file": a_file,
    "below a file": lambda ws: a_file(ws) / "x",
    "a non-empty folder": not_a_run,
    "an existing run": lambda ws: ws.run("mdm"),
}
WRITERS: dict[str, Callable[[Workspace, dict, Path, object], list]] = {
    "prepare": lambda ws, f, s, out: ["finetune", "prepare", ws.pristine.runs["mdm"], "--out", out, "--per_task", 2],
    "sft": lambda ws, f, s, out: ["finetune", "sft", ws.pristine.runs["mdm"], "--data", f["mdm"], "--out", out, *FAST],
    "r2ft": lambda ws, f, s, out: ["finetune", "r2ft", s, "--data", f["mdm"], "--out", out, *FAST],
    "energy": lambda ws, f, s, out: ["finetune", "energy", ws.pristine.runs["mdm"], "--out", out, *FAST],
    "eval --out": lambda ws, f, s, out: ["finetune", "eval", ws.pristine.runs["ar"], *EVAL, "--out", out],
    "tasks": lambda ws, f, s, out: ["finetune", "tasks", "--out", out, "--per_task", 1],
}


@pytest.mark.parametrize("out", BAD_OUTS.values(), ids=BAD_OUTS.keys())
@pytest.mark.parametrize("command", WRITERS.values(), ids=WRITERS.keys())
def test_a_finetune_output_that_cannot_be_used_is_refused(ws, capsys, folders, sft_run, command, out):
    if command is WRITERS["eval --out"] and out is BAD_OUTS["a file"]:
        pytest.skip("--out FILE of finetune eval replaces the file: that is what it is for")
    args = command(ws, folders, sft_run, out(ws))
    before = ws.snapshot()
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "refused", " ".join(map(str, args[:2])))
    assert_unchanged(before, ws.snapshot(), outcome)


@pytest.mark.parametrize("out", [".", ""], ids=["--out .", "--out ''"])
@pytest.mark.parametrize("command", ["sft", "r2ft", "energy"])
def test_a_run_into_the_empty_current_folder_trains_or_is_refused_never_a_crash(
    ws, capsys, folders, sft_run, tmp_path, monkeypatch, command, out
):
    """--out naming the current folder: an empty one takes the run (a new run needs an empty folder), in one piece."""
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    args = WRITERS[command](ws, folders, sft_run, out)
    outcome = unmask(capsys, *args)
    assert_contract(outcome, "either", f"finetune {command} --out {out!r}")
    if outcome.code == 0:
        assert (here / "config.json").is_file() and (here / "last.safetensors").is_file()
