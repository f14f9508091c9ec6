"""Instruction folders: rows read back exactly as written, and every damage is one ConfigError line."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unmask.config import ConfigError
from unmask.data.dataset import TokenData, open_data
from unmask.data.instructions import InstructionData, write_instruction_folder
from unmask.data.tokenizer import EOD, MASK, PAD, train_bpe

SPECIALS = {"eod_id": 0, "mask_id": 1, "pad_id": 2}
ROWS = {
    "train": [([5, 6, 7, 0], [False, True, True, True]), ([8, 9, 0], [False, False, True])],
    "val": [([5, 0], [False, True])],
}


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    tok = train_bpe(["a small text to train on, a small text"], 300)
    assert [tok.token_to_id(t) for t in (EOD, MASK, PAD)] == [0, 1, 2]
    return tok.to_str()


@pytest.fixture
def folder(tmp_path, tokenizer_json):
    return write_instruction_folder(tmp_path / "d", tokenizer_json, ROWS, 6, SPECIALS, 320, {"role_ids": {}})


def test_rows_come_back_as_written_padded_and_flagged(folder):
    data = open_data(folder)
    assert isinstance(data, InstructionData) and not list(folder.parent.glob(".d.tmp*"))
    batch = data.batch("train", [1, 0])
    assert batch.tokens.tolist() == [[8, 9, 0, 2, 2, 2], [5, 6, 7, 0, 2, 2]]
    assert batch.loss_mask.int().tolist() == [[0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    assert data.n_sequences("train") == 2 and data.n_tokens("train") == 7 and data.n_sequences("val") == 1
    data.verify()


DAMAGE = {
    "manifest not JSON": lambda d: (d / "manifest.json").write_text("{"),
    "manifest a list": lambda d: (d / "manifest.json").write_text("[]"),
    "seq_len a string": lambda d: _edit(d, seq_len="6"),
    "negative n_train": lambda d: _edit(d, n_train=-1),
    "no training rows": lambda d: _edit(d, n_train=0),
    "mask id outside the vocabulary": lambda d: _edit(d, mask_id=10**6),
    "unknown dtype": lambda d: _edit(d, dtype="float16"),
    "tokens truncated": lambda d: (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:-1]),
    "flags missing": lambda d: (d / "val.learned").unlink(),
    "tokens a folder": lambda d: ((d / "train.bin").unlink(), (d / "train.bin").mkdir()),
}


def _edit(folder, **changes):
    m = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**m, **changes}))


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_folder_is_one_error_line(folder, case):
    DAMAGE[case](folder)
    opener = TokenData if case.startswith("manifest") else InstructionData  # not an instruction manifest any more
    with pytest.raises(ConfigError) as e:
        opener(folder)
    assert "\n" not in str(e.value)


def test_a_changed_file_fails_verification(folder):
    data = (folder / "train.bin").read_bytes()
    (folder / "train.bin").write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(ConfigError, match="does not match manifest.json"):
        InstructionData(folder).verify()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["seq_len", "n_train", "n_val", "pad_id", "vocab_size", "dtype", "kind"]),
                       st.one_of(st.integers(-5, 10**7), st.text(max_size=5), st.none(), st.booleans())))  # fmt: skip
def test_fuzzed_manifests_open_or_fail_with_one_line(tmp_path_factory, tokenizer_json, changes):
    folder = tmp_path_factory.mktemp("f") / "d"
    write_instruction_folder(folder, tokenizer_json, ROWS, 6, SPECIALS, 320, {})
    _edit(folder, **changes)
    try:
        data = open_data(folder)
        data.batch("train", [0])
    except ConfigError as e:
        assert "\n" not in str(e)
    shutil.rmtree(folder)
