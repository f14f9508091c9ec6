"""The shipped instruction set: rule-based tasks cut from the embedded Austen corpus, each with a scorer.

Every example is (task, prompt, response), short enough for the demo's 64-token sequences. The split
is fixed: a chapter belongs to the test split when the SHA-256 of "book/chapter" says so (one in
ten), so no test passage is ever seen in training. Generation is deterministic (one seed), so the
set is the same on every machine without shipping a second file; `unmask finetune tasks --out DIR`
writes it out as train.jsonl and test.jsonl.

    reverse      Reverse the words: a b c d            -> d c b a
    repeat_last  Repeat the last sentence: S1 S2       -> S2
    next_word    Which word follows "X" in: S          -> the word after X
    first_word   What is the first word of: S          -> its first word
    continue     Continue: w1 … w10                    -> the next 6 words (scored per word)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from unmask.config import ConfigError
from unmask.data.corpus import default_corpus_path

TEST_SHARE = 10
"""One chapter in TEST_SHARE is a test chapter."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_TITLE = re.compile(r"\b(Mr|Mrs|Dr|St|Col)\.$")
_WORD = re.compile(r"^[A-Za-z]+$")


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    response: str


def normalise(text: str) -> list[str]:
    """Lower-case words without surrounding punctuation: what the scorers compare."""
    return [w.strip(".,;:!?\"'()").lower() for w in text.split() if w.strip(".,;:!?\"'()")]


def exact(response: str, reference: str) -> float:
    return float(normalise(response) == normalise(reference))


def word_accuracy(response: str, reference: str) -> float:
    """Share of the reference's words the response has at the same place."""
    got, want = normalise(response), normalise(reference)
    return sum(g == w for g, w in zip(got, want, strict=False)) / max(len(want), 1)


def _reverse(sentence: str, rng: random.Random) -> Example | None:
    runs = _plain_runs(sentence.split(), 3, 5, rng)
    return runs and Example("reverse", f"Reverse the words: {' '.join(runs)}", " ".join(reversed(runs)))


def _repeat_last(pair: tuple[str, str], rng: random.Random) -> Example | None:
    first, last = pair
    if not (3 <= len(first.split()) <= 8 and 3 <= len(last.split()) <= 8):
        return None
    return Example("repeat_last", f"Repeat the last sentence: {first} {last}", last)


def _next_word(sentence: str, rng: random.Random) -> Example | None:
    words = sentence.split()
    if not 4 <= len(words) <= 14:
        return None
    plain = [w.lower() for w in words]
    once = [i for i in range(len(words) - 1) if _WORD.match(words[i]) and plain.count(plain[i]) == 1]
    if not once:
        return None
    i = rng.choice(once)
    return Example("next_word", f'Which word follows "{words[i]}" in: {sentence}', words[i + 1].strip(".,;:!?\"'()"))


def _first_word(sentence: str, rng: random.Random) -> Example | None:
    words = sentence.split()
    if not 3 <= len(words) <= 14 or not normalise(words[0]):
        return None
    return Example("first_word", f"What is the first word of: {sentence}", words[0].strip(".,;:!?\"'()"))


def _continue(sentence: str, rng: random.Random) -> Example | None:
    words = sentence.split()
    if len(words) < 16:
        return None
    return Example("continue", f"Continue: {' '.join(words[:10])}", " ".join(words[10:16]))


def _plain_runs(words: list[str], lo: int, hi: int, rng: random.Random) -> list[str]:
    """A random run of lo..hi consecutive words of letters only ([] when the sentence has none)."""
    n = rng.randint(lo, hi)
    starts = [i for i in range(len(words) - n + 1) if all(_WORD.match(w) for w in words[i : i + n])]
    return words[(s := rng.choice(starts)) : s + n] if starts else []


TASKS: dict[str, tuple[Callable[..., Example | None], Callable[[str, str], float], bool]] = {
    "reverse": (_reverse, exact, False),
    "repeat_last": (_repeat_last, exact, True),
    "next_word": (_next_word, exact, False),
    "first_word": (_first_word, exact, False),
    "continue": (_continue, word_accuracy, False),
}
"""name: (make an example from a sentence (or a pair of sentences), its scorer, whether it takes a pair)."""


def score(task: str, response: str, reference: str) -> float:
    """The task's score of a response in [0, 1] (exact match, or per-word accuracy for `continue`)."""
    return TASKS[task][1](response, reference)


def is_test_chapter(book: str, chapter: int) -> bool:
    digest = hashlib.sha256(f"{book}/{chapter}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % TEST_SHARE == 0


def _chapters(split: str) -> Iterator[str]:
    with gzip.open(default_corpus_path(), "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if is_test_chapter(row["book"], row["chapter"]) == (split == "test"):
                yield row["text"]


POOL = 2000
"""Examples generated per task and split; `per_task` takes the first ones."""


def instruction_set(split: str, per_task: int = POOL, seed: int = 0, tasks: list[str] | None = None) -> list[Example]:
    """The first `per_task` (at most POOL) examples of every task (or of `tasks`) from the chapters of `split`
    ('train' or 'test'), shuffled. A test prompt that also occurs in the training pool (a stock phrase) is
    left out."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: must be 'train' or 'test'")
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown or tasks == []:
        raise ConfigError(f"tasks={unknown or tasks}: choose from {', '.join(TASKS)}")
    pool = _pool(split, seed)
    if split == "test":
        seen = {e.prompt for examples in _pool("train", seed).values() for e in examples}
        pool = {task: [e for e in examples if e.prompt not in seen] for task, examples in pool.items()}
    examples = [e for task, task_examples in pool.items() if task in (tasks or TASKS) for e in task_examples[:per_task]]
    random.Random(f"{seed}/{split}/order").shuffle(examples)
    return examples


@functools.lru_cache(maxsize=4)
def _pool(split: str, seed: int) -> dict[str, list[Example]]:
    rng = random.Random(f"{seed}/{split}")
    sentences = [s for text in _chapters(split) for s in sentences_of(text)]
    pairs = list(zip(sentences, sentences[1:], strict=False))
    pool = {}
    for name, (make, _, takes_pair) in TASKS.items():
        sources = list(pairs if takes_pair else sentences)
        rng.shuffle(sources)
        pool[name] = list(_first_unique((make(source, rng) for source in sources), POOL))
    return pool


def sentences_of(text: str) -> list[str]:
    """Sentences of a chapter, whitespace collapsed; "Mr." and the like do not end one."""
    out: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = " ".join(piece.split())
        if out and _TITLE.search(out[-1]):
            out[-1] += " " + piece
        elif piece:
            out.append(piece)
    return out


def _first_unique(examples: Iterator[Example | None], n: int) -> Iterator[Example]:
    seen: set[str] = set()
    for e in examples:
        if len(seen) == n:
            return
        if e and e.prompt not in seen:
            seen.add(e.prompt)
            yield e


def write_instruction_set(out: str | Path, per_task: int = POOL, seed: int = 0) -> list[Path]:
    """train.jsonl and test.jsonl of {"task", "prompt", "response"} in `out`; returns their paths."""
    from unmask.checkpoint import atomic_write_text  # (torch: only when the files are written)

    if not 1 <= per_task <= POOL:
        raise ConfigError(f"per_task={per_task}: must be in [1, {POOL}] (training examples per task)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for train.jsonl and test.jsonl")
    mine = ("train.jsonl", "test.jsonl")
    others = sorted(p.name for p in out.iterdir() if p.name not in mine) if out.is_dir() else []
    if others:
        raise ConfigError(f"--out {out} holds other files ({', '.join(others[:3])}); give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "test"):
        path = out / f"{split}.jsonl"
        rows = instruction_set(split, per_task if split == "train" else max(1, per_task // 10), seed)
        atomic_write_text(path, "".join(json.dumps(asdict(e)) + "\n" for e in rows))
        paths.append(path)
    return paths
