"""The `unmask` command line: plain typed functions, parsed by jsonargparse.

COMMANDS below is the one table of commands; each command's body lives in its own module (data,
train, evaluate, sample, demo, bench, study, serve, finetune, hub) and is also a Python function. Every
command reads `--config FILE.yaml`, takes dotted overrides such as `--train.optim.lr 1e-3`, and calls
library functions with keyword arguments. User errors become one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings

from unmask.cli import bench, data, demo, evaluate, finetune, hub, sample, serve, study, train
from unmask.cli.parser import Command, Group, build, chosen, explain, gather_lists, migrate_flags
from unmask.config import ConfigError, FlatNameWarning, UnmaskError, os_reason
from unmask.demo import DemoConfig

COMMANDS: dict[str, Command | Group] = {
    "prepare": Command(data.prepare, positional="inputs"),
    "train": Command(train.train),
    "eval": Command(evaluate.evaluate, positional="runs"),
    "sample": Command(sample.sample),
    "demo": Command(demo.demo, flat_config=DemoConfig),
    "bench": Command(bench.bench),
    "study": Command(study.study),
    "serve": Command(serve.serve, positional="runs"),
    "finetune": Group(
        "Fine-tuning: instruction folders, SFT, R2FT, AR -> MDM adaptation, task metrics, the shipped instruction set.",
        {
            "prepare": Command(finetune.prepare),
            "sft": Command(finetune.sft),
            "r2ft": Command(finetune.r2ft),
            "adapt": Command(finetune.adapt),
            "energy": Command(finetune.energy),
            "eval": Command(finetune.evaluate, positional="runs"),
            "tasks": Command(finetune.tasks),
        },
    ),
    "import": Command(hub.import_checkpoint),
    "export": Command(hub.export),
}
"""Name → the function, its help (its docstring's first line) and how its arguments are laid out."""

MAX_ERROR_CHARS = 600
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
"""OS errors that say the disk failed a write, not that a path given was wrong."""


def build_parser():
    return build(COMMANDS)


def print_error(message: str) -> None:
    """One bounded line on stderr, whatever the message holds."""
    line = "unmask: error: " + " ".join(str(message).split())
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 1] + "…"
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    with warnings.catch_warnings():
        python_shows = warnings.showwarning

        def show(message, category, *args, **kwargs) -> None:  # unmask's own (a flat train name): one line
            if issubclass(category, FlatNameWarning):
                print(f"unmask: warning: {message}", file=sys.stderr)
            else:
                python_shows(message, category, *args, **kwargs)

        warnings.showwarning = show
        warnings.simplefilter("always", FlatNameWarning)  # shown to the user, even where tests make them errors
        argv = migrate_flags(gather_lists(list(sys.argv[1:] if argv is None else argv)))
        return _run(parser, argv)


def _run(parser, argv: list[str]) -> int:
    from jsonargparse import ArgumentError

    try:
        command, kwargs = chosen(parser.instantiate(parser.parse_args(argv)), COMMANDS)
        command.fn(command.flat_config(**kwargs)) if command.flat_config else command.fn(**kwargs)
    except ArgumentError as e:
        print_error(explain(" ".join(str(e).split()), parser, COMMANDS, argv))
        return 2
    except UnmaskError as e:  # ConfigError: bad input, nothing done (2); TrainingError: the run failed (1)
        print_error(str(e))
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        print("unmask: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave that the OS refuses (too long, not a directory, no permission)
        if e.errno in WRITE_FAILURES:  # the disk, not the input: the command failed
            print_error(
                f"could not write{f' {e.filename}' if e.filename else ''}: {os_reason(e=e)}; free space and retry"
            )
            return 1
        reason = os_reason(e=e) or type(e).__name__
        print_error(f"{reason}: {e.filename}; check the path" if e.filename else f"{reason} ({e})")
        return 2
    except Exception as e:
        if _training_stopped(e):  # SIGTERM/SIGINT honoured with a checkpoint: a clean exit
            print(f"unmask: {e}", file=sys.stderr)
            return 0
        if os_reason(e=e):  # a writer (torch, safetensors, pyarrow) that wrapped the OS's own error
            print_error(f"could not write or read a file: {os_reason(e=e)} ({type(e).__name__}: {e})")
            return 1
        # a bug, not bad input: still one line; UNMASK_DEBUG=1 shows the traceback
        if os.environ.get("UNMASK_DEBUG"):
            raise
        print_error(
            f"internal error {type(e).__name__}: {e} (a bug: please report it; UNMASK_DEBUG=1 shows the traceback)"
        )
        return 1
    return 0


def _training_stopped(e: Exception) -> bool:
    """Whether `e` is training's TrainingStopped; only training raises it, so a command that never loaded
    training (prepare: no torch at all) needs no import to tell."""
    signals = sys.modules.get("unmask.training.signals")
    return signals is not None and isinstance(e, signals.TrainingStopped)
