"""Instruction files: one conversation per JSONL line, either {"prompt": ..., "response": ...} or
{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]} ending with an
assistant turn. Every bad line is one InstructionDataError naming file:line. The template that turns
a conversation into tokens is unmask.data.chat.
"""

from __future__ import annotations

import json
from pathlib import Path

from unmask.config import ConfigError
from unmask.data.chat import ROLE_TOKENS, Message, encode_conversation, prompt_ids


class InstructionDataError(ConfigError):
    """A bad line of an instruction file, named with its number and what to fix."""


def read_conversations(path: str | Path) -> list[list[Message]]:
    """Every conversation of a JSONL instruction file; the first bad line is one InstructionDataError."""
    return [conversation for _, conversation in read_numbered(path)]


def read_numbered(path: str | Path) -> list[tuple[str, list[Message]]]:
    """("file:line", conversation) of every non-blank line of a JSONL instruction file."""
    path = Path(path)
    if path.is_dir():
        raise InstructionDataError(f"instruction file {path} is a folder; give a JSONL file of conversations")
    if not path.is_file():
        raise InstructionDataError(f"instruction file {path} does not exist (JSONL: prompt/response or messages)")
    try:  # lines end at \n alone: JSON strings may hold other line separators (U+2028, \x1c, ...) unescaped
        lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    except UnicodeDecodeError:
        raise InstructionDataError(f"instruction file {path} is not UTF-8 text; save it as UTF-8 JSONL") from None
    numbered = [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise InstructionDataError(f"instruction file {path} holds no conversation (one JSON object per line)")
    return [(where, _conversation(line, where)) for where, line in numbered]


def _conversation(line: str, where: str) -> list[Message]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InstructionDataError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
    except (ValueError, RecursionError) as e:  # a 5000-digit number; [[[[... nested past the parser's depth
        what = "nested too deep" if isinstance(e, RecursionError) else "a number too long to read"
        raise InstructionDataError(f"{where}: not valid JSON ({what}); write one flat JSON object per line") from None
    if not isinstance(row, dict):
        raise InstructionDataError(f"{where}: expected a JSON object with prompt/response or messages")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise InstructionDataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        conversation = [_message(m, f"{where}: message {i + 1}") for i, m in enumerate(messages)]
    elif "prompt" in row or "response" in row:
        missing = [k for k in ("prompt", "response") if k not in row]
        if missing:
            raise InstructionDataError(f"{where}: missing field {missing[0]!r} (give both prompt and response)")
        conversation = [_message({"role": "user", "content": row["prompt"]}, f"{where}: prompt"),
                        _message({"role": "assistant", "content": row["response"]}, f"{where}: response")]  # fmt: skip
    else:
        raise InstructionDataError(f"{where}: no 'messages' and no 'prompt'/'response' fields (got {sorted(row)})")
    if conversation[-1].role != "assistant":
        raise InstructionDataError(f"{where}: the last message must be the assistant's (it is what is learned)")
    return conversation


def _message(m: object, where: str) -> Message:
    if not isinstance(m, dict) or not isinstance(m.get("content"), str):
        raise InstructionDataError(f'{where}: expected {{"role": ..., "content": "text"}}')
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLE_TOKENS:
        raise InstructionDataError(f"{where}: unknown role {role!r}; use one of {', '.join(ROLE_TOKENS)}")
    if role == "assistant" and not m["content"].strip():
        raise InstructionDataError(f"{where}: empty assistant response; drop the line or write the response")
    return Message(role, m["content"])


__all__ = ["ROLE_TOKENS", "InstructionDataError", "Message", "encode_conversation", "prompt_ids", "read_conversations",
           "read_numbered"]  # fmt: skip
