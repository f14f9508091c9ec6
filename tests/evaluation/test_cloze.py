"""The shipped cloze task: deterministic, four distinct choices with the sentence's own ending, readable by --tasks."""

from __future__ import annotations

from unmask.evaluation.cloze import cloze_items, write_cloze
from unmask.evaluation.zeroshot import read_items


def test_the_cloze_task_is_deterministic_with_four_distinct_choices(tmp_path):
    items = cloze_items(n=50, seed=0)
    assert items == cloze_items(n=50, seed=0) and items != cloze_items(n=50, seed=1)
    for item in items:
        assert len(item["choices"]) == len(set(item["choices"])) == 4
        assert 9 <= len(item["context"].split()) <= 21 and len(item["choices"][item["label"]].split()) == 3
    assert 0.1 < sum(item["label"] == 0 for item in items) / 50 < 0.45  # the gold is shuffled among the choices
    parsed = read_items(write_cloze(tmp_path / "cloze.jsonl", n=50))
    assert [p.label for p in parsed] == [item["label"] for item in items]


def test_no_demo_or_study_budget_trains_on_the_cloze_book():
    """Budgets take documents in order; Persuasion is the corpus's last novel."""
    import gzip
    import json

    from unmask.data.corpus import default_corpus_path

    with gzip.open(default_corpus_path(), "rt") as f:
        books = [json.loads(line)["book"] for line in f]
    first = books.index("Persuasion")
    chars_before = 0
    with gzip.open(default_corpus_path(), "rt") as f:
        for i, line in enumerate(f):
            if i < first:
                chars_before += len(json.loads(line)["text"])
    assert books[-1] == "Persuasion" and chars_before > 3_000_000  # ~700K+ tokens at the demo's vocabulary
