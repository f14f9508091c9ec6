"""A small shipped zero-shot task: sentence endings of *Persuasion*, four choices each.

Cut from the embedded corpus at run time, deterministic (one seed), so nothing is downloaded and every
machine scores the same items. *Persuasion* is the corpus's last novel and a budget takes documents in
order, so no unique-token budget below ~700K tokens trains on it (the demo's and the studies' are 6K-50K).
Each item is a sentence of 12-24 words: the context is all but its last three words, the choices are
its own ending and the endings of three other sentences (a fixed shuffle). Chance is 0.25.

    python -c 'from unmask.evaluation.cloze import write_cloze; write_cloze("cloze.jsonl")'
    unmask eval RUN --tasks cloze.jsonl
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

from unmask.data.corpus import default_corpus_path

BOOK = "Persuasion"
ENDING_WORDS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def cloze_items(n: int = 400, seed: int = 0, book: str = BOOK) -> list[dict]:
    """n items {"context", "choices", "label"} from `book` of the embedded corpus."""
    sentences = []
    with gzip.open(default_corpus_path(), "rt", encoding="utf-8") as f:
        for line in f:
            chapter = json.loads(line)
            if chapter["book"] == book:
                for s in _SENTENCE_END.split(chapter["text"]):
                    words = s.split()
                    if 12 <= len(words) <= 24 and '"' not in s:
                        sentences.append(words)
    rng = random.Random(seed)
    chosen = rng.sample(range(len(sentences)), min(n, len(sentences)))
    items = []
    for i in chosen:
        words = sentences[i]
        gold = " ".join(words[-ENDING_WORDS:])
        others = set()
        while len(others) < 3:
            other = " ".join(sentences[rng.randrange(len(sentences))][-ENDING_WORDS:])
            if other != gold:
                others.add(other)
        choices = [gold, *sorted(others)]
        rng.shuffle(choices)
        items.append({"context": " ".join(words[:-ENDING_WORDS]), "choices": choices, "label": choices.index(gold)})
    return items


def write_cloze(path: str | Path, n: int = 400, seed: int = 0) -> Path:
    """The task as JSONL at `path` (for `unmask eval --tasks` or lm-eval); returns the path."""
    path = Path(path)
    path.write_text("".join(json.dumps(item) + "\n" for item in cloze_items(n, seed)), encoding="utf-8")
    return path
