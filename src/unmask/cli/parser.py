"""The parser the command table builds (jsonargparse), and the argv rewrites and error wording around it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One command: a typed function whose parameters are its options and whose docstring is its --help."""

    fn: Callable
    positional: str | None = None
    """A list parameter given as bare words: `unmask eval A B` (runs), `unmask prepare a.txt b.jsonl` (inputs)."""
    flat_config: type | None = None
    """The dataclass of the function's one parameter: its fields are the options (`unmask demo --out ...`)."""

    @property
    def help(self) -> str:
        return (self.fn.__doc__ or "").splitlines()[0]


@dataclass(frozen=True)
class Group:
    """Commands under one word: `unmask finetune sft ...`."""

    help: str
    commands: dict[str, Command | Group]


POSITIONAL_HELP = {"inputs": "Files or folders; none = the embedded corpus.", "runs": "Run directories."}
LIST_OPTIONS = ("--tasks", "--text", "--mask_spans", "--methods", "--ar_epochs", "--mdm_epochs")
"""Options that take several values: `--tasks a.jsonl b.jsonl` (jsonargparse itself wants a JSON list)."""


def build(commands: dict[str, Command | Group]):
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="unmask", description="Masked diffusion vs autoregressive LMs.", exit_on_error=False)
    add_commands(parser, commands)
    return parser


def add_commands(parser, commands: dict[str, Command | Group]) -> None:
    """A subcommand per entry: a function's parameters are its options; a group holds its own subcommands."""
    from jsonargparse import ArgumentParser

    subcommands = parser.add_subcommands(required=True, dest="command")
    for name, command in commands.items():
        sub = ArgumentParser(exit_on_error=False)
        if isinstance(command, Group):  # jsonargparse wants the group added before its own subcommands
            subcommands.add_subcommand(name, sub, help=command.help)
            add_commands(sub, command.commands)
            continue
        sub.add_argument("--config", action="config", help="YAML file with any of the options below.")
        if command.flat_config:
            sub.add_class_arguments(command.flat_config, nested_key=None, as_group=False)
        else:
            positional = command.positional
            if positional:
                sub.add_argument(positional, nargs="*", type=str, default=[], help=POSITIONAL_HELP[positional])
            sub.add_function_arguments(
                command.fn, as_group=False, as_positional=True, skip={positional} if positional else None
            )
        subcommands.add_subcommand(name, sub, help=command.help)


def chosen(init, commands: dict[str, Command | Group]) -> tuple[Command, dict]:
    """(the command, its keyword arguments) of a parsed command line, through any groups."""
    name = init.command
    command, node = commands[name], init[name]
    if isinstance(command, Group):
        return chosen(node, command.commands)
    return command, {k: v for k, v in vars(node).items() if k != "config"}


def gather_lists(argv: list[str]) -> list[str]:
    """`--tasks a b` → `--tasks ["a", "b"]`; values run up to the next option (put positionals first)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in LIST_OPTIONS:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values = argv[i + 1 : j]
            if len(values) == 1 and values[0].lstrip().startswith("["):
                out += [arg, values[0]]  # already a JSON/YAML list
            else:
                out += [arg, json.dumps(values)]
            i = j
        else:
            out.append(arg)
            i += 1
    return out


def migrate_flags(argv: list[str]) -> list[str]:
    """Flags from before the groupings keep working: --sampler.method → --sampler.commit.method, and (with a
    warning, for one release) --train.lr → --train.optim.lr, also inside a --config file."""
    from unmask.cli.hub import FLAG_ALIASES
    from unmask.config import TRAIN_FLAT_NAMES, warn_flat_name
    from unmask.sampling.config import FLAT_NAMES

    out = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        flag = FLAG_ALIASES.get(flag, flag)  # unmask import --as → --kind (a Python keyword)
        arg = flag + eq + value
        if flag.startswith("--sampler."):
            group, key = FLAT_NAMES.get(flag.removeprefix("--sampler."), (None, None))
            arg = f"--sampler.{group}.{key}{eq}{value}" if group else arg
        elif flag.startswith("--train.") and flag.removeprefix("--train.") in TRAIN_FLAT_NAMES:
            group, key = TRAIN_FLAT_NAMES[flag.removeprefix("--train.")]
            warn_flat_name(old=flag, new=f"--train.{group}.{key}")
            arg = f"--train.{group}.{key}{eq}{value}"
        elif flag == "--config" and eq:
            arg = f"--config={regrouped_config(path=value)}"
        elif i > 0 and argv[i - 1] == "--config":
            arg = regrouped_config(path=arg)
        out.append(arg)
    return out


def regrouped_config(path: str) -> str:
    """A --config file's path, or, when its train section uses flat names, the regrouped YAML text itself
    (jsonargparse takes either)."""
    from pathlib import Path

    import yaml

    from unmask.config import TRAIN_FLAT_NAMES, regroup_train

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
        return path  # jsonargparse names the problem
    train = raw.get("train") if isinstance(raw, dict) else None
    if not isinstance(train, dict) or not set(train) & set(TRAIN_FLAT_NAMES):
        return path
    return yaml.safe_dump({**raw, "train": regroup_train(values=train, where=f"{path}: ")}, sort_keys=False)


def explain(message: str, parser, commands: dict[str, Command | Group], argv: list[str]) -> str:
    """Make jsonargparse's errors name the allowed keys / values (and the closest match to a typo)."""
    import difflib
    import re

    typo = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", message)
    words, sub, node = [], parser, Group("", commands)
    for arg in argv:  # down the groups: unmask finetune sft → the sft parser
        if isinstance(node, Group) and arg in node.commands:
            words.append(arg)
            sub, node = sub._subcommands_action.choices[arg], node.commands[arg]
    command = " ".join(words)
    if typo and command and isinstance(node, Command):
        key = typo.group(1) or typo.group(2)
        positional = [a.dest for a in sub._actions if not a.option_strings]
        if key in positional:
            return f"{key} is positional: unmask {command} {' '.join(p.upper() for p in positional)} [options]"
        dests = {a.dest for a in sub._actions} - {"help", "config", "print_config", "==SUPPRESS=="}
        allowed = sorted(d for d in dests if not any(o.startswith(d + ".") for o in dests))  # leaves, not groups
        group = key.rsplit(".", 1)[0] + "." if "." in key else ""
        siblings = [a for a in allowed if a.startswith(group) and a.count(".") == key.count(".")] or allowed
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown option '{key}' for unmask {command}; {hint}allowed: {', '.join(siblings)}"
    wrong_type = re.search(r'Parser key "([\w.]+)": Expected a <class \'(\w+)\'>\. Got value: (.*)', message)
    if wrong_type:
        return f"{wrong_type.group(1)}={wrong_type.group(3)!r}: expected {wrong_type.group(2)}"
    literal = re.search(r'Parser key "([\w.]+)": Expected a typing.Literal\[(.*?)\]\. Got value: (.*)', message)
    if literal:
        return f"{literal.group(1)}={literal.group(3)!r} is not allowed; choose one of {literal.group(2)}"
    return message
