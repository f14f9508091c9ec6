"""Fuzzing the run-directory reader (hypothesis): any mutation of config.json, tokenizer.json, the weights or the
model config opens as a usable run or raises one ConfigError line, never anything else."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.bad_input.contract import DROP
from tests.bad_input.test_run_dirs import CONFIG_KEYS
from unmask.config import TRAIN_FLAT_NAMES, TRAIN_GROUPS, ConfigError, ModelConfig, TrainConfig
from unmask.run import Run

# ---------------------------------------------------------------------------------------------
# Fuzzing the run-directory reader: any mutation opens correctly or is one ConfigError line

FUZZ_FILES = ("config.json", "tokenizer.json", "last.safetensors", "model_config.json")
CONFIG_PATHS = [
    *((key,) for key in CONFIG_KEYS),
    *(("model", f.name) for f in dataclasses.fields(ModelConfig)),
    *(("train", f.name) for f in dataclasses.fields(TrainConfig)),
    *(("train", group, f.name) for group, cls in TRAIN_GROUPS.items() for f in dataclasses.fields(cls)),
    *(("train", name) for name in TRAIN_FLAT_NAMES),  # a flat name beside its group: refused in one line
    *(("specials", key) for key in ("eod_id", "mask_id", "pad_id")),
    ("data_identity", "manifest_sha256"),
    *(("data_identity", "files", name, key) for name in ("train.bin", "val.bin", "tokenizer.json")
      for key in ("bytes", "sha256")),
]  # fmt: skip
TOKENIZER_KEYS = ("model", "added_tokens", "pre_tokenizer", "decoder", "normalizer", "post_processor", "version")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
config_edits = st.lists(
    st.tuples(st.sampled_from(["replace", "remove", "insert"]), st.sampled_from(CONFIG_PATHS), json_values),
    max_size=3,
)
tokenizer_edits = st.lists(
    st.tuples(st.sampled_from(TOKENIZER_KEYS) | st.text(max_size=5), st.just(DROP) | json_values), max_size=2
)
byte_edits = st.lists(
    st.tuples(
        st.sampled_from(FUZZ_FILES),
        st.sampled_from(["truncate", "flip", "append", "replace"]),
        st.integers(0, 1 << 20),
        st.binary(min_size=1, max_size=40),
    ),
    max_size=2,
)


def _edit_tree(tree, op: str, path: tuple, value) -> None:
    """Replace, remove or insert (a new key beside) the value at `path`; a path that no longer exists is skipped."""
    parent = tree
    for key in path[:-1]:
        if not isinstance(parent, dict) or key not in parent:
            return
        parent = parent[key]
    if not isinstance(parent, dict):
        return
    if op == "replace":
        parent[path[-1]] = value
    elif op == "remove":
        parent.pop(path[-1], None)
    else:
        parent[f"{path[-1]}_new"] = value


def _edit_bytes(path: Path, op: str, at: int, payload: bytes) -> None:
    old = path.read_bytes()
    at %= max(len(old), 1)
    new = {
        "truncate": old[:at],
        "flip": old[:at] + bytes([old[at] ^ 0xFF]) + old[at + 1 :] if old else payload,
        "append": old + payload,
        "replace": payload,
    }[op]
    path.write_bytes(new)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    config_edit=config_edits,
    tokenizer_edit=tokenizer_edits,
    byte_edit=byte_edits,
    keep_checksum=st.booleans(),
)
def test_fuzzed_run_directories_open_or_raise_config_error_never_anything_else(
    pristine, config_edit, tokenizer_edit, byte_edit, keep_checksum
):
    """Run(path) + load_model() + tokenizer() + special_ids: a usable run, or one ConfigError line."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        for name in FUZZ_FILES:
            shutil.copyfile(pristine.runs["ar"] / name, run / name)
        config = json.loads((run / "config.json").read_text())
        for op, path, value in config_edit:
            _edit_tree(config, op, path, value)
        if not keep_checksum:  # a run from before checksums: the tokenizer itself gets read
            config.pop("tokenizer_sha256", None)
        (run / "config.json").write_text(json.dumps(config))
        if tokenizer_edit:
            tokenizer = json.loads((run / "tokenizer.json").read_text())
            for key, value in tokenizer_edit:
                _edit_tree(tokenizer, "remove" if value is DROP else "replace", (key,), value)
            (run / "tokenizer.json").write_text(json.dumps(tokenizer))
        for name, op, at, payload in byte_edit:
            _edit_bytes(run / name, op, at, payload)
        try:
            opened = Run(run)
            model = opened.load_model()
            tok = opened.tokenizer()
            ids = opened.special_ids
        except ConfigError as e:
            assert str(e) and "\n" not in str(e), str(e)
            event("refused")
            return
        event("opened")  # then it is usable as it claims
        vocab = opened.model_config.vocab_size
        assert all(0 <= i < vocab for i in (ids.eod_id, ids.mask_id, ids.pad_id))
        assert len({ids.eod_id, ids.mask_id, ids.pad_id}) == 3
        assert tok.get_vocab_size(with_added_tokens=True) <= vocab
        with torch.no_grad():
            assert model(torch.tensor([tok.encode("She was").ids or [ids.eod_id]])).shape[-1] == vocab
