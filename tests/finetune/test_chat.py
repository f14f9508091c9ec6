"""Instruction files: every bad line is one clear error naming it; the template learns only the answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unmask.finetune.chat import InstructionDataError, Message, encode_conversation, prompt_ids, read_conversations

ROLE_IDS = {"system": 900, "user": 901, "assistant": 902}
EOS = 0


def encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_prompt_response_and_chat_messages_are_read(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "hi", "response": "hello"},
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
                          {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                          {"role": "assistant", "content": "d"}]}]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    first, second = read_conversations(path)
    assert first == [Message("user", "hi"), Message("assistant", "hello")]
    assert [m.role for m in second] == ["system", "user", "assistant", "user", "assistant"]


BAD_LINES = {
    "not json": ("{prompt: hi}", "line 1: not valid JSON"),
    "a list": ("[1, 2]", "expected a JSON object"),
    "missing response": ('{"prompt": "hi"}', "missing field 'response'"),
    "missing prompt": ('{"response": "hi"}', "missing field 'prompt'"),
    "empty response": ('{"prompt": "hi", "response": "  "}', "empty assistant response"),
    "response not text": ('{"prompt": "hi", "response": 3}', 'expected {"role"'),
    "neither field": ('{"text": "hi"}', "no 'messages' and no 'prompt'/'response'"),
    "empty messages": ('{"messages": []}', "non-empty list"),
    "unknown role": ('{"messages": [{"role": "bot", "content": "x"}]}', "unknown role 'bot'"),
    "ends with the user": ('{"messages": [{"role": "user", "content": "x"}]}', "last message must be the assistant"),
    "message not an object": ('{"messages": ["hi"]}', "message 1: expected"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_a_bad_line_is_one_error_naming_it(tmp_path, case):
    line, expected = BAD_LINES[case]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "response": "fine"}) + "\n" + line + "\n")
    with pytest.raises(InstructionDataError, match="d.jsonl:2") as e:
        read_conversations(path)
    assert expected.replace("line 1: ", "") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("content", "expected"), [(b"", "holds no conversation"), (b"\xff\xfe", "not UTF-8")])
def test_empty_or_binary_files_are_refused(tmp_path, content, expected):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(InstructionDataError, match=expected):
        read_conversations(path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_line_is_read_or_refused_with_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    try:
        read_conversations(path)
    except InstructionDataError as e:
        assert "\n" not in str(e)


def test_only_assistant_turns_and_their_end_of_text_are_learned():
    conversation = [Message("user", "ab"), Message("assistant", "c"), Message("user", "d"), Message("assistant", "ef")]
    ids, learned = encode_conversation(conversation, encode, ROLE_IDS, EOS)
    assert ids == [901, 97, 98, 902, 99, EOS, 901, 100, 902, 101, 102, EOS]
    assert [i for i, on in zip(ids, learned, strict=True) if on] == [99, EOS, 101, 102, EOS]
    assert prompt_ids(conversation[:1], encode, ROLE_IDS, EOS) == [901, 97, 98, 902]  # a chat continues here
