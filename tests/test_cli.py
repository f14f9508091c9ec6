"""The command line: one table of commands, --help everywhere, one-line errors, no half-written output."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_model_config, tiny_train_config
from unmask import cli
from unmask.cli.parser import Command, Group


def unmask(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leaves(commands: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Command]:
    """Every command line's words and its command, through groups (finetune sft)."""
    out = {}
    for name, command in commands.items():
        words = (*prefix, name)
        out |= leaves(command.commands, words) if isinstance(command, Group) else {words: command}
    return out


def test_command_table_matches_the_python_functions():
    parser = cli.build_parser()
    commands = {"prepare", "train", "eval", "sample", "demo", "bench", "study", "serve", "finetune", "import", "export"}
    assert set(parser._subcommands_action.choices) == set(cli.COMMANDS) == commands
    finetune = parser._subcommands_action.choices["finetune"]._subcommands_action.choices
    finetune_commands = {"prepare", "sft", "r2ft", "adapt", "energy", "eval", "tasks"}
    assert set(finetune) == set(cli.COMMANDS["finetune"].commands) == finetune_commands
    for words, command in leaves(cli.COMMANDS).items():
        fn = command.fn
        assert fn.__doc__, f"{' '.join(words)} needs a docstring: it is the --help text"
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(fn).parameters.values())
        parameters = inspect.signature(fn).parameters
        assert command.positional is None or parameters[command.positional].annotation.startswith("list[str]")
        assert command.flat_config is None or len(parameters) == 1


POSITIONAL_ALLOWED = {"check", "ConfigError", "StudyNotReproduced"}
"""Calls into lower layers that may stay positional: an assertion and the errors commands raise."""


def test_commands_call_the_library_with_keywords():
    """Across layers every argument is named, so a library function whose parameters are reordered or added to
    fails loudly instead of a command passing a value to the wrong one."""
    positional = []
    for path in sorted(Path(cli.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unmask.")
            if not node.module.startswith("unmask.cli")
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
                if node.func.id in imported - POSITIONAL_ALLOWED:
                    positional.append(f"{path.name}:{node.lineno} {node.func.id}")
    assert not positional, f"library calls with positional arguments: {positional}"


@pytest.mark.parametrize("words", sorted(leaves(cli.COMMANDS)), ids=" ".join)
def test_every_command_has_help(capsys, words):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unmask: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_input_file(capsys, tmp_path):
    code, _, err = unmask(capsys, "prepare", tmp_path / "nope.txt", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "nope.txt does not exist")
    assert not (tmp_path / "out").exists()


def test_empty_corpus(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    code, _, err = unmask(capsys, "prepare", tmp_path / "empty.txt", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "corpus is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_non_utf8_file(capsys, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    code, _, err = unmask(
        capsys,
        "prepare",
        tmp_path / "latin1.txt",
        "--out",
        tmp_path / "out",
        "--data.vocab_size",
        "300",
        "--data.unique_tokens",
        "10",
        "--data.val_tokens",
        "0",
    )
    assert_one_line_error(code, err, "latin1.txt is not UTF-8", "iconv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.txt"]


def test_binary_file(capsys, tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    code, _, err = unmask(capsys, "prepare", tmp_path / "blob.bin", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "looks binary")
    assert not (tmp_path / "out").exists()


def test_budget_larger_than_the_corpus(capsys, tmp_path):
    (tmp_path / "small.txt").write_text("A short document about nothing much at all.\n" * 20)
    code, _, err = unmask(
        capsys,
        "prepare",
        tmp_path / "small.txt",
        "--out",
        tmp_path / "out",
        "--data.vocab_size",
        "300",
        "--data.unique_tokens",
        "1000000",
        "--data.val_tokens",
        "0",
    )
    assert_one_line_error(code, err, "data.unique_tokens=1000000 is larger than the corpus")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]  # no temp folder left behind


def test_unknown_objective(capsys, tiny_data_dir, tmp_path):
    code, _, err = unmask(
        capsys, "train", "--data", tiny_data_dir, "--out", tmp_path / "run", "--train.objective", "gpt"
    )
    assert_one_line_error(code, err, "train.objective", "gpt")
    assert not (tmp_path / "run").exists()


def test_impossible_value_names_the_field(capsys, tiny_data_dir, tmp_path):
    code, _, err = unmask(
        capsys,
        "train",
        "--data",
        tiny_data_dir,
        "--out",
        tmp_path / "run",
        "--train.batch_size",
        "8",
        "--train.micro_batch_size",
        "3",
    )
    assert_one_line_error(code, err, "train.micro_batch_size=3")
    assert not (tmp_path / "run").exists()


def test_yaml_config_with_dotted_overrides(capsys, tiny_data_dir, tmp_path):
    (tmp_path / "run.yaml").write_text(
        f"data: {tiny_data_dir}\nout: {tmp_path / 'run'}\nmodel:\n  size: tiny\n"
        "train:\n  objective: ar\n  epochs: 1\n  batch_size: 8\n  eval:\n    every: 100\n"
    )
    code, out, err = unmask(
        capsys, "train", "--config", tmp_path / "run.yaml", "--train.optim.lr", "0.001", "--tensorboard", "false"
    )
    assert code == 0 and "warning" not in err, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        saved["train"]["optim"]["lr"] == 0.001
        and saved["train"]["eval"]["every"] == 100
        and saved["train"]["objective"] == "ar"
    )
    assert saved["model"]["n_layer"] == 2  # the 'tiny' row
    assert "final validation NLL" in out and "final weights (last.safetensors)" in out  # the run's result

    code, out, _ = unmask(capsys, "eval", tmp_path / "run", "--json", "true")
    result = json.loads(out)
    assert code == 0 and result["kind"] == "NLL" and result["stderr"] is None
    code, out, _ = unmask(capsys, "sample", tmp_path / "run", "--prompt", "She was", "--length", "8")
    assert code == 0 and out.startswith("She was")


def test_module_entry_point_exits_nonzero_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unmask", "eval", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"unmask: error: run {tmp_path / 'missing'} does not exist or is not a directory; "
        "train one with unmask train"
    )


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    command = "demo" if path.name == "demo.yaml" else "train"
    cfg = cli.build_parser().parse_args([command, "--config", str(path)])
    init = cli.build_parser().instantiate(cfg)
    assert init.command == command


def test_threads_and_plain_lists_on_the_command_line(capsys, tiny_data_dir, tmp_path):
    fixtures = Path(__file__).parent / "fixtures"
    code, _, err = unmask(
        capsys, "train", "--data", tiny_data_dir, "--out", tmp_path / "run", "--model.size", "tiny",
        "--train.objective", "ar", "--train.batch_size", "8", "--train.runtime.threads", "1", "--tensorboard", "false",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["runtime"]["threads"] == 1
    tasks = tmp_path / "second.jsonl"
    tasks.write_text((fixtures / "austen_mc.jsonl").read_text().splitlines()[0] + "\n")
    # --tasks a.jsonl b.jsonl: a plain list, no JSON brackets needed (the runs come first)
    code, out, err = unmask(
        capsys, "eval", tmp_path / "run", "--tasks", fixtures / "austen_mc.jsonl", tasks, "--validation", "false",
        "--json", "true",
    )  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)["tasks"]) == {"austen_mc", "second"}


def test_error_lines_are_bounded_whatever_the_input(capsys, tmp_path):
    code, _, err = unmask(capsys, "eval", tmp_path / ("x" * 5000))
    assert_one_line_error(code, err)
    assert len(err.strip()) <= 600


def test_metrics_are_strict_json_even_when_the_loss_is_not_finite(tiny_data, tmp_path, monkeypatch):
    from tests.training.test_reliability import nan_on_steps
    from unmask.training import train

    nan_on_steps(monkeypatch, {2, 3})
    out = train(
        tiny_data.path, tmp_path / "run", tiny_model_config(tiny_data, causal=False),
        tiny_train_config(objective="mdm", epochs=1), quiet=True, tensorboard=False,
    )  # fmt: skip

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    records = [json.loads(line, parse_constant=refuse) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[1] is None and losses[2] is None and all(v is not None for v in losses[3:])
