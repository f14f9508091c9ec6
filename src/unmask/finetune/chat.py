"""Instruction data and the chat template.

A JSONL file holds one conversation per line, either {"prompt": ..., "response": ...} or
{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]} ending with an
assistant turn. The template puts a role token before each turn and the run's end-of-text token
after each assistant turn:

    <|user|>Reverse the words: a b c<|assistant|>c b a<eos>

Only assistant turns (and their end-of-text) are learned; the rest is the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from unmask.config import ConfigError

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
"""The chat template's special tokens, added to a run's tokenizer for fine-tuning."""


class InstructionDataError(ConfigError):
    """A bad line of an instruction file, named with its number and what to fix."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def read_conversations(path: str | Path) -> list[list[Message]]:
    """Every conversation of a JSONL instruction file; the first bad line is one InstructionDataError."""
    path = Path(path)
    if not path.is_file():
        raise InstructionDataError(f"instruction file {path} does not exist (JSONL: prompt/response or messages)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InstructionDataError(f"instruction file {path} is not UTF-8 text; save it as UTF-8 JSONL") from None
    conversations = [_conversation(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not conversations:
        raise InstructionDataError(f"instruction file {path} holds no conversation (one JSON object per line)")
    return conversations


def _conversation(line: str, where: str) -> list[Message]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InstructionDataError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
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
    if role not in ROLE_TOKENS:
        raise InstructionDataError(f"{where}: unknown role {role!r}; use one of {', '.join(ROLE_TOKENS)}")
    if role == "assistant" and not m["content"].strip():
        raise InstructionDataError(f"{where}: empty assistant response; drop the line or write the response")
    return Message(role, m["content"])


def encode_conversation(
    messages: list[Message], encode, role_ids: dict[str, int], eos_id: int
) -> tuple[list[int], list[bool]]:
    """Token ids of the templated conversation and, per token, whether it is learned (assistant text + EOS).

    encode: text -> token ids (the run's tokenizer, no special tokens added)."""
    ids: list[int] = []
    learned: list[bool] = []
    for m in messages:
        body = list(encode(m.content))
        is_answer = m.role == "assistant"
        ids += [role_ids[m.role], *body] + ([eos_id] if is_answer else [])
        learned += [False] + [is_answer] * len(body) + ([True] if is_answer else [])
    return ids, learned


def prompt_ids(messages: list[Message], encode, role_ids: dict[str, int], eos_id: int) -> list[int]:
    """The template of a conversation so far, ending with the assistant's role token: what a chat generation
    continues (until the end-of-text token)."""
    ids, _ = encode_conversation(messages, encode, role_ids, eos_id) if messages else ([], [])
    return ids + [role_ids["assistant"]]
