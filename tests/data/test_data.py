"""Data: exact budgets, disjoint splits, readers, tokenizer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_DATA
from unmask.config import ConfigError, DataConfig
from unmask.data import TokenData, prepare
from unmask.data.corpus import iter_documents
from unmask.data.prepare import assign_splits
from unmask.data.tokenizer import MASK, load_tokenizer, special_ids


def test_training_split_has_exactly_U_tokens(tiny_data):
    assert tiny_data.n_tokens("train") == TINY_DATA.unique_tokens
    assert tiny_data.manifest["unique_tokens"] == TINY_DATA.unique_tokens
    assert tiny_data.n_tokens("val") == TINY_DATA.val_tokens


def test_sequences_cover_the_budget_once_with_padding_only_at_the_end(tiny_data):
    n = tiny_data.n_sequences("train")
    batch = tiny_data.batch("train", np.arange(n))
    assert batch.loss_mask is None  # plain sequences: every real token counts
    tokens = batch.tokens
    real = tokens != tiny_data.pad_id
    assert int(real.sum()) == TINY_DATA.unique_tokens
    assert real[:-1].all()  # only the last sequence is padded
    assert np.array_equal(tokens[real].numpy(), np.asarray(tiny_data.tokens["train"], dtype=np.int64))


def test_validation_and_training_documents_are_disjoint(tiny_data):
    """Reconstruct each split's documents and check no document (or long span) is shared."""
    tok = tiny_data.tokenizer()
    eod = tiny_data.eod_id

    def docs(split):
        ids = np.asarray(tiny_data.tokens[split]).tolist()
        out, cur = [], []
        for t in ids:
            if t == eod:
                out.append(tok.decode(cur))
                cur = []
            else:
                cur.append(t)
        return out + ([tok.decode(cur)] if cur else [])

    train_docs, val_docs = docs("train"), docs("val")
    assert train_docs and val_docs
    for v in val_docs:
        for t in train_docs:
            assert v[:200] not in t and t[:200] not in v


def test_split_assignment_is_fixed_by_the_seed():
    docs = [f"doc {i}" for i in range(200)]
    a = [v for v, _ in assign_splits(iter(docs), 0.2, seed=7)]
    b = [v for v, _ in assign_splits(iter(docs), 0.2, seed=7)]
    c = [v for v, _ in assign_splits(iter(docs), 0.2, seed=8)]
    assert a == b and a != c
    assert 20 < sum(a) < 60


def test_manifest_records_budget_vocabulary_and_input_hash(tiny_data):
    m = tiny_data.manifest
    for key in ("unique_tokens", "vocab_size", "mask_id", "eod_id", "pad_id", "documents_sha256", "inputs"):
        assert key in m
    assert m["vocab_size"] % 64 == 0 and m["vocab_size"] >= m["tokenizer_vocab_size"]


def test_prepare_is_reproducible(tmp_path):
    cfg = DataConfig(unique_tokens=500, val_tokens=200, vocab_size=300, seq_len=16, tokenizer_train_bytes=200_000)
    a, b = prepare(cfg, tmp_path / "a", quiet=True), prepare(cfg, tmp_path / "b", quiet=True)
    assert (a / "train.bin").read_bytes() == (b / "train.bin").read_bytes()
    assert (a / "val.bin").read_bytes() == (b / "val.bin").read_bytes()


def test_readers_text_blank_separator_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first para\nline two\n\nsecond para\n")
    (tmp_path / "b.txt").write_text("x\n===\ny\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "j1"}) + "\n\n" + json.dumps({"body": "j2"}) + "\n")
    blank = DataConfig(inputs=[str(tmp_path / "a.txt")], doc_split="blank")
    assert list(iter_documents(blank)) == ["first para\nline two", "second para"]
    sep = DataConfig(inputs=[str(tmp_path / "b.txt")], doc_split="===")
    assert list(iter_documents(sep)) == ["x", "y"]
    jsonl = DataConfig(inputs=[str(tmp_path / "c.jsonl")], text_field="body")
    assert list(iter_documents(jsonl)) == ["j1", "j2"]
    folder = DataConfig(inputs=[str(tmp_path)], text_field="body")
    assert len(list(iter_documents(folder))) == 4  # a.txt, b.txt whole files + two JSONL records


def test_default_corpus_is_six_novels_of_chapters():
    docs = list(iter_documents(DataConfig()))
    assert 260 <= len(docs) <= 280
    assert docs[0].startswith("The family of Dashwood")
    assert 3.9e6 < sum(map(len, docs)) < 4.1e6


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_tokenizer_round_trips_any_unicode_and_never_emits_the_mask(tiny_data, text):
    tok = tiny_data.tokenizer()
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert tiny_data.mask_id not in ids and tiny_data.pad_id not in ids


def test_literal_special_token_text_is_encoded_as_plain_bytes(tiny_data):
    tok = tiny_data.tokenizer()
    text = f"a {MASK} b <|pad|> <|endoftext|>"
    ids = tok.encode(text).ids
    assert {tiny_data.mask_id, tiny_data.pad_id, tiny_data.eod_id}.isdisjoint(ids)
    assert tok.decode(ids) == text


def test_loading_a_tokenizer_without_mask_adds_one(tmp_path, tiny_data_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers

    plain = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    plain.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    ids = special_ids(tok)
    assert len({ids.mask_id, ids.pad_id, ids.eod_id}) == 3
    assert ids.mask_id not in tok.encode(f"hello {MASK} world").ids


@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(vocab_size=10), "data.vocab_size=10"),
        (dict(val_fraction=1.5), "data.val_fraction=1.5"),
        (dict(unique_tokens=0), "data.unique_tokens=0"),
    ],
)
def test_impossible_data_settings_name_the_field(cfg, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**cfg)


def test_reading_back_requires_a_prepared_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a prepared data folder"):
        TokenData(tmp_path)


def test_parquet_reader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one doc", "", "two doc"], "id": [1, 2, 3]}), tmp_path / "c.parquet")
    assert list(iter_documents(DataConfig(inputs=[str(tmp_path / "c.parquet")]))) == ["one doc", "two doc"]
    with pytest.raises(ConfigError, match="has no column 'body'"):
        list(iter_documents(DataConfig(inputs=[str(tmp_path / "c.parquet")], text_field="body")))


def test_manifest_says_whether_the_last_training_document_was_cut(tiny_data):
    ends_with_eod = int(tiny_data.tokens["train"][-1]) == tiny_data.eod_id
    assert tiny_data.manifest["last_train_document_truncated"] == (not ends_with_eod)


def test_the_tokenizer_counts_against_the_budget_it_never_sees_text_beyond_u(tmp_path):
    """By default the BPE learns from the text the U unique tokens cover: text after it changes nothing."""
    import gzip

    from unmask.data.corpus import default_corpus_path

    chapters = [json.loads(line) for line in gzip.open(default_corpus_path(), "rt")]
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_text("".join(json.dumps(c) + "\n" for c in chapters[:12]))
    large.write_text("".join(json.dumps(c) + "\n" for c in chapters[:60]))  # the same start, much more after it
    cfg = DataConfig(unique_tokens=3_000, val_tokens=500, vocab_size=300, seq_len=16)
    a = prepare(dataclasses.replace(cfg, inputs=[str(small)]), tmp_path / "a", quiet=True)
    b = prepare(dataclasses.replace(cfg, inputs=[str(large)]), tmp_path / "b", quiet=True)
    for name in ("tokenizer.json", "train.bin"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    info = json.loads((a / "manifest.json").read_text())["tokenizer"]
    assert info["source"] == "trained" and info["rule"] == "the text of the U unique tokens"
    assert abs(info["train_bytes"] - info["unique_token_bytes"]) <= 0.02 * info["unique_token_bytes"]
    assert 3_000 < info["unique_token_bytes"] < 3_000 * 8  # a few bytes per token


def test_a_single_text_file_splits_into_paragraphs_so_validation_gets_documents(tmp_path):
    novel = tmp_path / "novel.txt"
    novel.write_text("\n\n".join(f"Paragraph {i} of a story, with several words in it." for i in range(400)))
    out = prepare(DataConfig(inputs=[str(novel)], unique_tokens=1_000, val_tokens=300, vocab_size=300, seq_len=16),
                  tmp_path / "data", quiet=True)  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["val_tokens"] == 300 and manifest["documents"]["val"] > 1


def test_unmask_prepare_as_a_process_never_imports_torch(tmp_path):
    # Preparing data needs the tokenizer and numpy only; importing torch cost ~4 s and ~400 MB per run.
    import subprocess
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Chapter {i}. It was a truth universally acknowledged." * 20 for i in range(40)))
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
        "sys.argv = ['unmask'] + sys.argv[1:]\n"
        "runpy.run_module('unmask', run_name='__main__', alter_sys=True)\n"
    )
    args = ["prepare", str(corpus), "--out", str(tmp_path / "data"), "--data.unique_tokens", "3000"]
    args += ["--data.val_tokens", "300", "--data.vocab_size", "300", "--data.seq_len", "16"]
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3,000 training tokens" in done.stdout
    assert "torch imported: False" in done.stdout
