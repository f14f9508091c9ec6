"""Instruction data → a prepared instruction folder for one base run (`unmask finetune prepare`).

The base run fixes the tokenizer (its own copy, plus the chat template's role tokens appended) and
the sequence length. Every conversation is read and templated before anything is written, so bad
data is one error line and no folder; conversations longer than the sequence are dropped with a
report (or, with drop_long false, refused naming their line). Without a file, the shipped
instruction set is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken

from unmask.config import ConfigError
from unmask.data.chat import ROLE_TOKENS, Message, encode_conversation
from unmask.data.instructions import InstructionData, is_instruction_folder, write_instruction_folder
from unmask.data.tokenizer import model_vocab_size
from unmask.finetune.chat import InstructionDataError, read_numbered
from unmask.finetune.tasks import POOL, TASKS, instruction_set
from unmask.run import Run

Encoded = tuple[list[int], list[bool]]


@dataclass
class Dropped:
    """What length filtering left out of one split."""

    count: int = 0
    longest: int = 0
    where: list[str] = field(default_factory=list)
    """The first few dropped conversations (file:line, or task#index for the shipped set)."""

    def add(self, where: str, length: int) -> None:
        self.count += 1
        self.longest = max(self.longest, length)
        if len(self.where) < 5:
            self.where.append(where)


def chat_tokenizer(run: Run):
    """The base run's tokenizer with the role tokens appended (special: never produced from text), and their ids."""
    tok = run.tokenizer()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ROLE_TOKENS.values()])
    return tok, {role: tok.token_to_id(t) for role, t in ROLE_TOKENS.items()}


def shipped(split: str, per_task: int, tasks: list[str] | None = None) -> list[tuple[str, list[Message]]]:
    return [
        (f"{e.task}#{i}", [Message("user", e.prompt), Message("assistant", e.response)])
        for i, e in enumerate(instruction_set(split, per_task, tasks=tasks))
    ]


def prepare_instructions(
    run: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    val: str | Path | None = None,
    val_share: float = 0.05,
    per_task: int = POOL,
    drop_long: bool = True,
    overwrite: bool = False,
    seed: int = 0,
    tasks: list[str] | None = None,
) -> tuple[InstructionData, dict[str, Dropped]]:
    """Template, filter and write `data` (JSONL; None = the shipped set's train split, all tasks or `tasks`)
    for base run `run`.

    val: held-out conversations (default: a seeded val_share of the training file's, at least one).
    Returns the opened folder and what was dropped per split."""
    if not 1 <= per_task <= POOL:
        raise ConfigError(f"per_task={per_task}: must be in [1, {POOL}] (shipped examples per task)")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed={seed}: must be in [0, 2**63)")
    base, out = Run(run), Path(out)
    _check_out(out, overwrite)
    if not 0 < val_share < 1:
        raise ConfigError(f"val_share={val_share}: must be in (0, 1)")
    tok, role_ids = chat_tokenizer(base)
    ids, seq_len = base.special_ids, base.model_config.seq_len

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    def templated(rows) -> tuple[list[Encoded], Dropped]:
        kept, dropped = [], Dropped()
        for where, conversation in rows:
            ids_, learned = encode_conversation(conversation, encode, role_ids, ids.eod_id)
            if len(ids_) <= seq_len:
                kept.append((ids_, learned))
            elif drop_long:
                dropped.add(where, len(ids_))
            else:
                raise InstructionDataError(
                    f"{where}: the conversation is {len(ids_)} tokens, longer than the sequence ({seq_len}); "
                    "shorten it, or pass --drop_long true to leave such conversations out with a report"
                )
        return kept, dropped

    if data is not None and tasks is not None:
        raise ConfigError("--tasks selects from the shipped instruction set; leave it out with --data")
    train_rows = read_numbered(data) if data is not None else shipped("train", per_task, tasks)
    train, dropped_train = templated(train_rows)
    if val is not None:
        held_out, dropped_val = templated(read_numbered(val))
    else:
        if len(train) < 2:
            raise InstructionDataError(f"{len(train)} conversation(s) fit the sequence: too few to hold one out "
                                       "for validation; give more, or a --val file")  # fmt: skip
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(val_share * len(train)))
        held = set(order[:n_val])
        held_out = [e for i, e in enumerate(train) if i in held]
        train, dropped_val = [e for i, e in enumerate(train) if i not in held], Dropped()
    for split, rows, dropped in (("training", train, dropped_train), ("validation", held_out, dropped_val)):
        if not rows:
            raise InstructionDataError(
                f"no {split} conversation fits the sequence of {seq_len} tokens ({dropped.count} dropped, longest "
                f"{dropped.longest}); shorten them"
            )
    folder = write_instruction_folder(
        out,
        tok.to_str(),
        {"train": train, "val": held_out},
        seq_len,
        {"eod_id": ids.eod_id, "mask_id": ids.mask_id, "pad_id": ids.pad_id},
        max(base.model_config.vocab_size, model_vocab_size(tok)),
        {
            "base_run": str(base.path.resolve()),
            "source": str(Path(data).resolve())
            if data is not None
            else f"shipped instruction set ({per_task}/task: {', '.join(tasks or TASKS)})",
            "role_ids": role_ids,
            "tokenizer_vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "dropped": {"train": vars(dropped_train), "val": vars(dropped_val)},
        },
    )
    return InstructionData(folder), {"train": dropped_train, "val": dropped_val}


def _check_out(out: Path, overwrite: bool) -> None:
    """Never replace what this command did not write; replace what it did only when asked."""
    target, cwd = out.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents or target == Path.home().resolve():
        raise ConfigError(
            f"--out {out} is {target}, the current folder, one above it or the home folder; an "
            "instruction folder is written as a folder of its own: choose e.g. --out data/sft"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pick another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_instruction_folder(out):
            raise ConfigError(f"--out {out} holds other files (not an instruction folder): pick another --out")
        if not overwrite:
            raise ConfigError(f"--out {out} already holds an instruction folder; pass --overwrite true to replace it")
