"""The chat template: role tokens before each turn, the run's end-of-text after each assistant turn.

    <|user|>Reverse the words: a b c<|assistant|>c b a<|endoftext|>

Only assistant turns (and their end-of-text) are learned; the rest is the prompt. The role tokens are
special tokens appended to a run's tokenizer when its instruction data is prepared
(unmask.finetune.prepare), so a fine-tuned run's own tokenizer carries them and a chat prompt
(`unmask sample --chat`) is built from the run alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from unmask.config import ConfigError

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
"""The chat template's special tokens, added to a run's tokenizer for fine-tuning."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def role_ids(tok) -> dict[str, int]:
    """The role tokens' ids in a tokenizer, or one ConfigError when it has none (a run not fine-tuned)."""
    ids = {role: tok.token_to_id(token) for role, token in ROLE_TOKENS.items()}
    if any(i is None for i in ids.values()):
        raise ConfigError("the run's tokenizer has no chat tokens: --chat needs a run fine-tuned with unmask finetune")
    return ids


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


def chat_prompt(tok, text: str, eos_id: int) -> list[int]:
    """A one-turn chat prompt for the user's `text`, ready for the assistant's answer."""
    return prompt_ids([Message("user", text)], lambda s: tok.encode(s, add_special_tokens=False).ids, role_ids(tok),
                      eos_id)  # fmt: skip
