"""Data reliability: every damaged input is one ConfigError line, and nothing is lost.

The promise tested here: a bad corpus, a damaged prepared folder or a dangerous --out
gives one clear line (never a traceback), never deletes or half-writes data, and a
prepared folder can prove it is unchanged (identity, verify). Memory stays flat on a
document of any length.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unmask.config import ConfigError, DataConfig
from unmask.data import TokenData, prepare
from unmask.data.corpus import iter_documents
from unmask.data.prepare import split_pieces
from unmask.data.tokenizer import load_tokenizer

SMALL = DataConfig(unique_tokens=400, val_tokens=100, vocab_size=300, seq_len=16, tokenizer_train_bytes=100_000)
FILES = ("train.bin", "val.bin", "tokenizer.json", "manifest.json")


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (hidden ones too) with its kind and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refuses(fn, *args, **kwargs) -> str:
    """Call fn, require a one-line ConfigError, return its message."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture
def data(tmp_path, tiny_data_dir) -> Path:
    """A private copy of the session's tiny prepared folder, free to damage."""
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))


# ---------------------------------------------------------------------------------------------
# A generated catalogue of damaged data folders


def _edit_manifest(key, value):
    def mutate(folder: Path) -> None:
        m = json.loads((folder / "manifest.json").read_text())
        if value is _DELETE:
            m.pop(key, None)
        else:
            m[key] = value(m) if callable(value) else value
        (folder / "manifest.json").write_text(json.dumps(m))

    return mutate


def _truncate(name, length):
    def mutate(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: length(path.stat().st_size)])

    return mutate


def _delete(name):
    return lambda folder: (folder / name).unlink()


def _make_dir(name):
    def mutate(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return mutate


def _write(name, content: bytes):
    return lambda folder: (folder / name).write_bytes(content)


_DELETE = object()
REQUIRED = ("seq_len", "pad_id", "mask_id", "eod_id", "vocab_size", "dtype", "unique_tokens", "val_tokens")
WRONG_TYPES = ("64", 1.5, None, True, [], {})
OUT_OF_RANGE = {
    "seq_len": [0, 1, -5, 2**21],
    "pad_id": [-1, lambda m: m["vocab_size"], 2**40, lambda m: m["mask_id"]],
    "mask_id": [-1, lambda m: m["vocab_size"], lambda m: m["eod_id"]],
    "eod_id": [-1, lambda m: m["vocab_size"] + 7, lambda m: m["pad_id"]],
    "vocab_size": [0, -1, 2**33, lambda m: m["mask_id"]],
    "dtype": ["int8", "float32", "uint64", "", "uint32"],
    "unique_tokens": [0, -1, lambda m: m["unique_tokens"] + 1, lambda m: m["unique_tokens"] - 1, 10**30],
    "val_tokens": [-1, lambda m: m["val_tokens"] + 1, lambda m: m["val_tokens"] - 1, 0],
    "files": ["x", [], {"../../elsewhere": {"bytes": 1, "sha256": "0" * 64}}, {"train.bin": {"bytes": -1}},
              {"train.bin": {"bytes": 6000, "sha256": "short"}}, {"train.bin": {"bytes": 7, "sha256": "0" * 64}},
              {"val.bin": None}],
}  # fmt: skip


def damage_catalogue():
    cases = {}
    for name in FILES:
        for label, length in (("empty", lambda n: 0), ("1 byte", lambda n: 1), ("half", lambda n: n // 2),
                              ("one byte short", lambda n: n - 1)):  # fmt: skip
            cases[f"{name} truncated to {label}"] = _truncate(name, length)
        cases[f"{name} deleted"] = _delete(name)
        cases[f"{name} replaced by a folder"] = _make_dir(name)
    cases["train.bin one byte longer"] = lambda f: (f / "train.bin").write_bytes((f / "train.bin").read_bytes() + b"\0")
    for label, content in {"empty": b"", "not JSON": b"{", "a list": b"[]", "null": b"null", "a number": b"3",
                           "not UTF-8": b"\xff\xfe{}", "nested too deep": b"[" * 100_000,
                           "a 5000-digit number": b'{"seq_len": ' + b"9" * 5000 + b"}"}.items():  # fmt: skip
        cases[f"manifest.json {label}"] = _write("manifest.json", content)
    for key in REQUIRED:
        cases[f"manifest lacks {key}"] = _edit_manifest(key, _DELETE)
        for value in WRONG_TYPES if key != "dtype" else (16, None, [], {}):
            cases[f"manifest {key}={value!r}"] = _edit_manifest(key, value)
    for key, values in OUT_OF_RANGE.items():
        for i, value in enumerate(values):
            cases[f"manifest {key} out of range #{i}"] = _edit_manifest(key, value)
    return cases


CATALOGUE = damage_catalogue()


@pytest.mark.parametrize("damage", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_every_damaged_data_folder_is_one_config_error_and_nothing_changes(data, damage):
    damage(data)
    before = snapshot(data)
    refuses(TokenData, data)
    assert snapshot(data) == before


def test_a_missing_folder_or_a_file_instead_of_a_folder_is_refused(tmp_path):
    assert "does not exist" in refuses(TokenData, tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert "is a file" in refuses(TokenData, tmp_path / "file")


def test_a_truncated_train_bin_is_refused_naming_the_file_and_both_sizes(data):
    size = (data / "train.bin").stat().st_size
    _truncate("train.bin", lambda n: n - 100)(data)
    message = refuses(TokenData, data)
    assert "train.bin" in message and f"{size - 100:,}" in message and f"{size:,}" in message


# Any mutation of the manifest or of the files' bytes: loads, or one ConfigError line.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
manifest_edits = st.tuples(st.sampled_from([*REQUIRED, "files", "format", "new"]), json_values | st.just(_DELETE))
byte_edits = st.tuples(
    st.sampled_from(FILES),
    st.sampled_from(["truncate", "flip", "append", "replace"]),
    st.integers(0, 1 << 16),
    st.binary(min_size=1, max_size=40),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest_edit=st.none() | manifest_edits, byte_edit=st.none() | byte_edits)
def test_fuzzed_data_folders_load_or_raise_config_error_never_anything_else(tiny_data_dir, manifest_edit, byte_edit):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(tiny_data_dir, Path(tmp) / "data"))
        if manifest_edit:
            _edit_manifest(*manifest_edit)(folder)
        changed_data = False
        if byte_edit:
            name, op, at, payload = byte_edit
            path = folder / name
            old = path.read_bytes()
            at %= len(old)
            new = {
                "truncate": old[:at],
                "flip": old[:at] + bytes([old[at] ^ 0xFF]) + old[at + 1 :],
                "append": old + payload,
                "replace": payload,
            }[op]
            path.write_bytes(new)
            changed_data = name != "manifest.json" and new != old
        checksums_kept = not manifest_edit or manifest_edit[0] != "files"
        try:
            loaded = TokenData(folder)
            loaded.verify()
            loaded.tokenizer()
            loaded.batch("train", np.arange(loaded.n_sequences("train")))
        except ConfigError as e:
            assert "\n" not in str(e)
            return
        # It loaded and verified: then no data file changed behind the manifest's checksums.
        assert not (changed_data and checksums_kept)


# ---------------------------------------------------------------------------------------------
# Identity and verify


def test_identity_records_what_prepare_wrote(data):
    loaded = TokenData(data)
    identity = loaded.identity()
    assert identity["files"] == loaded.manifest["files"]
    assert identity["manifest_sha256"] == hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    loaded.verify()


def test_verify_and_identity_detect_a_modified_train_bin(data):
    original = TokenData(data).identity()
    tokens = bytearray((data / "train.bin").read_bytes())
    tokens[10] ^= 1  # same size: only the checksum can tell
    (data / "train.bin").write_bytes(bytes(tokens))
    loaded = TokenData(data)
    assert loaded.identity()["files"]["train.bin"] != original["files"]["train.bin"]
    assert "train.bin" in refuses(loaded.verify)


def test_verify_detects_a_file_truncated_after_loading(data):
    loaded = TokenData(data)
    _truncate("val.bin", lambda n: n - 2)(data)
    assert "val.bin" in refuses(loaded.verify)


def test_an_old_manifest_without_checksums_passes_with_sizes_checked(data):
    m = json.loads((data / "manifest.json").read_text())
    del m["files"]
    (data / "manifest.json").write_text(json.dumps(m))
    TokenData(data).verify()
    _truncate("train.bin", lambda n: n - 2)(data)
    assert "train.bin" in refuses(TokenData, data)


def test_verify_finds_a_token_outside_the_vocabulary(data):
    m = json.loads((data / "manifest.json").read_text())
    del m["files"]  # an old manifest: no checksum to catch the edit first
    (data / "manifest.json").write_text(json.dumps(m))
    tokens = np.fromfile(data / "train.bin", dtype=m["dtype"])
    tokens[123] = m["vocab_size"]
    tokens.tofile(data / "train.bin")
    assert "outside the vocabulary" in refuses(TokenData(data).verify)


# ---------------------------------------------------------------------------------------------
# prepare never deletes what it did not write


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """home/proj/work (the current folder), a run, unrelated files; HOME points at home."""
    home = tmp_path / "home"
    work = home / "proj" / "work"
    work.mkdir(parents=True)
    (home / "notes.txt").write_text("keep me")
    (home / "proj" / "README").write_text("keep me too")
    (work / "script.py").write_text("print('mine')")
    run = home / "proj" / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (home / "proj" / "mine").mkdir()
    (home / "proj" / "mine" / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize(
    "out",
    [
        ".",
        "..",
        "../..",
        "/",
        "~",
        "../runs/r1",
        "../mine",
        "../README",
        "script.py",
        "script.py/sub",
        "",
        "./.",
        "../work",
    ],
)
def test_prepare_refuses_folders_it_did_not_write_and_deletes_nothing(tree, out, overwrite):
    out = os.path.expanduser(out)
    before = snapshot(tree.parent)
    refuses(prepare, SMALL, out, overwrite=overwrite, quiet=True)
    assert snapshot(tree.parent) == before


def test_prepare_refuses_a_prepared_looking_folder_with_anything_else_in_it(tree):
    data = prepare(SMALL, "data", quiet=True)
    (data / "notes.txt").write_text("mine")
    before = snapshot(tree)
    assert "never replaces" in refuses(prepare, SMALL, data, overwrite=True, quiet=True)
    assert snapshot(tree) == before
    (data / "notes.txt").unlink()
    (data / "manifest.json").write_text(json.dumps({"checkpoints": []}))  # some other tool's manifest
    before = snapshot(tree)
    refuses(prepare, SMALL, data, overwrite=True, quiet=True)
    assert snapshot(tree) == before


def test_prepare_replaces_its_own_folder_only_with_overwrite(tree):
    first = prepare(SMALL, "data", quiet=True)
    before = snapshot(tree)
    assert "already exists" in refuses(prepare, SMALL, "data", quiet=True)
    assert snapshot(tree) == before
    second = prepare(replace(SMALL, seed=1), "data", overwrite=True, quiet=True)
    assert second == first
    assert sorted(p.name for p in Path("data").iterdir()) == sorted(FILES)
    assert sorted(p.name for p in Path(".").iterdir()) == ["data", "script.py"]  # no temporary leftovers
    TokenData("data").verify()
    assert TokenData("data").manifest["config"]["seed"] == 1


def test_a_seq_len_that_reading_refuses_is_refused_by_the_config(tree):
    from unmask.config import MAX_SEQ_LEN

    with pytest.raises(ConfigError, match=r"data.seq_len=2097152: must be in \[2, 1048576\]"):
        replace(SMALL, seq_len=2 * MAX_SEQ_LEN)
    assert not Path("data").exists()


def test_prepare_into_an_empty_or_new_nested_folder(tree):
    Path("empty").mkdir()
    prepare(SMALL, "empty", quiet=True)
    prepare(SMALL, "a/b/c", quiet=True)
    TokenData("empty").verify()
    TokenData("a/b/c").verify()


def test_a_failed_prepare_leaves_the_old_data_whole(tree):
    prepare(SMALL, "data", quiet=True)
    before = snapshot(tree)
    too_big = replace(SMALL, unique_tokens=10**9)
    assert "larger than the corpus" in refuses(prepare, too_big, "data", overwrite=True, quiet=True)
    assert snapshot(tree) == before


def test_a_failed_swap_puts_the_old_data_back(tree, monkeypatch):
    prepare(SMALL, "data", quiet=True)
    before = snapshot(tree)
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".data.tmp-"):
            raise OSError(28, "No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    assert "nothing was replaced" in refuses(prepare, SMALL, "data", overwrite=True, quiet=True)
    assert snapshot(tree) == before


def test_the_cli_turns_a_dangerous_out_into_one_line_and_exit_2(tree, capsys):
    from unmask import cli

    before = snapshot(tree.parent)
    code = cli.main(["prepare", "--out", "..", "--overwrite", "true"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert snapshot(tree.parent) == before


# ---------------------------------------------------------------------------------------------
# Damaged corpus inputs and tokenizers


def _jsonl(n: int = 300) -> bytes:
    docs = list(iter_documents(DataConfig()))[:n]
    return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


def _corpus_cases(tmp: Path) -> dict[str, Path]:
    # Damage within the first documents: prepare stops reading once its budgets are full.
    good = gzip.compress(_jsonl(2))
    flipped = bytearray(good)
    flipped[40] ^= 0xFF
    cases = {
        "not gzip": (tmp / "a.jsonl.gz", b"this is not gzip at all" * 100),
        "truncated gzip": (tmp / "b.jsonl.gz", good[: len(good) // 2]),
        "corrupt gzip": (tmp / "c.jsonl.gz", bytes(flipped)),
        "gzip without its end": (tmp / "d.txt.gz", good[:-8]),
        "latin-1 text": (tmp / "e.txt", ("café " * 5000).encode("latin-1")),
        "latin-1 after a document": (tmp / "f.jsonl", _jsonl(2) + '{"text": "café"}\n'.encode("latin-1")),
        "bad JSON line": (tmp / "g.jsonl", _jsonl(2) + b"{oops\n"),
        "deeply nested JSON": (tmp / "h.jsonl", _jsonl(2) + b"[" * 100_000 + b"\n"),
        "JSON list record": (tmp / "i.jsonl", b"[1, 2]\n"),
        "binary": (tmp / "j.txt", b"\x00\x01\x02" * 100),
    }
    for path, content in cases.values():
        path.write_bytes(content)
    (tmp / "empty_folder.jsonl").mkdir()
    return {**{k: p for k, (p, _) in cases.items()}, "empty folder": tmp / "empty_folder.jsonl",
            "missing": tmp / "missing.txt"}  # fmt: skip


def test_every_damaged_corpus_input_is_one_config_error(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for label, path in _corpus_cases(inputs).items():
        before = snapshot(tmp_path)
        cfg = replace(SMALL, inputs=[str(path)])
        with pytest.raises(ConfigError) as info:
            prepare(cfg, tmp_path / "out", quiet=True)
        message = str(info.value)
        assert path.name in message and "\n" not in message, (label, message)
        assert snapshot(tmp_path) == before, label  # no output, no temporary leftovers


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_an_unreadable_input_is_one_config_error(tmp_path):
    path = tmp_path / "locked.txt"
    path.write_text("text")
    path.chmod(0)
    refuses(prepare, replace(SMALL, inputs=[str(path)]), tmp_path / "out", quiet=True)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"null", b'{"model": 3}', b"\xff\xfe", None],
    ids=["empty", "cut", "null", "odd", "bytes", "dir"],
)
def test_a_damaged_tokenizer_is_one_config_error(tmp_path, data, content):
    path = tmp_path / "tokenizer.json"
    path.mkdir() if content is None else path.write_bytes(content)
    refuses(load_tokenizer, path)
    refuses(prepare, replace(SMALL, tokenizer=str(path)), tmp_path / "out", quiet=True)
    m = json.loads((data / "manifest.json").read_text())
    del m["files"]  # an old manifest: the damage shows when the tokenizer is loaded
    (data / "manifest.json").write_text(json.dumps(m))
    (data / "tokenizer.json").unlink()
    shutil.move(path, data / "tokenizer.json")
    refuses(TokenData(data).tokenizer)


# ---------------------------------------------------------------------------------------------
# Flat memory, bounded pieces, light imports


def test_pieces_are_bounded_cut_before_whitespace_and_rejoin_exactly():
    doc = "word " * 50 + "x" * 120 + " tail"
    pieces = list(split_pieces(doc, limit=32))
    assert "".join(pieces) == doc
    assert all(0 < len(p) <= 32 for p in pieces)
    assert all(p.startswith(" ") for p in pieces[1:5])  # the space goes with the word after it
    assert list(split_pieces("short", limit=32)) == ["short"]


def test_a_long_document_tokenizes_in_pieces_almost_as_a_whole(tiny_data_dir):
    tok = load_tokenizer(Path(tiny_data_dir) / "tokenizer.json")
    doc = " ".join(list(iter_documents(DataConfig()))[:3])
    whole = tok.encode(doc).ids
    pieces = [i for p in split_pieces(doc, limit=5_000) for i in tok.encode(p).ids]
    assert tok.decode(pieces) == doc
    assert abs(len(pieces) - len(whole)) <= len(doc) // 5_000 + 1  # at most a merge lost per cut


@pytest.mark.slow
def test_a_48_mb_single_line_prepares_in_flat_memory(tmp_path):
    """Peak memory does not grow with the size of one giant line: 48 MB needs no more than 6 MB does. (Compared
    within one machine: the absolute peak varies with the host, 0.35 GB here and 1.1 GB on one CI host.)"""
    text = " ".join(d.replace("\n", " ") for d in iter_documents(DataConfig()))
    script = (
        "import resource, sys\n"
        "from unmask.config import DataConfig\n"
        "from unmask.data.prepare import prepare\n"
        "prepare(DataConfig(inputs=[sys.argv[1]], unique_tokens=5000), sys.argv[2], quiet=True)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"  # KiB on Linux
    )
    peak_mb = {}
    for n_mb in (6, 48):
        big = tmp_path / f"big{n_mb}.txt"
        big.write_text((text * (n_mb * 1_000_000 // len(text) + 1))[: n_mb * 1_000_000])
        out = tmp_path / f"out{n_mb}"
        done = subprocess.run([sys.executable, "-c", script, str(big), str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        peak_mb[n_mb] = int(done.stdout.split()[-1]) / 1024
        data = TokenData(out)
        data.verify()
        assert data.n_tokens("train") == 5000 and data.manifest["last_train_document_truncated"]
    assert peak_mb[48] < peak_mb[6] + 150 and peak_mb[48] < 2048, f"peak RSS {peak_mb} MB"


def test_importing_the_data_preparation_does_not_import_torch():
    code = "import sys, unmask.data.prepare; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
