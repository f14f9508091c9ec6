"""The shipped instruction set: deterministic, a fixed train/test split by chapter, scorers that can fail."""

from __future__ import annotations

import json
from collections import Counter

from unmask.finetune.tasks import TASKS, instruction_set, score, sentences_of, write_instruction_set


def test_the_set_is_the_same_on_every_call_and_covers_every_task():
    a, b = instruction_set("test", per_task=50), instruction_set("test", per_task=50)
    assert a == b
    assert Counter(e.task for e in a) == {name: 50 for name in TASKS}


def test_train_and_test_come_from_different_chapters():
    train = {e.prompt for e in instruction_set("train", per_task=500)}
    test = instruction_set("test", per_task=100)
    assert not train & {e.prompt for e in test}
    train_text = " ".join(train)
    passages = [e.prompt.split(": ", 1)[1] for e in test if e.task in ("repeat_last", "continue")]
    assert sum(p in train_text for p in passages) <= 2  # a stock phrase may recur in other chapters, rarely


def test_each_reference_scores_one_and_a_wrong_answer_less():
    for e in instruction_set("test", per_task=20):
        assert score(e.task, e.response, e.response) == 1.0
        assert score(e.task, "zebra " * 8, e.response) < 1.0
    assert score("reverse", "C b A.", "c b a") == 1.0  # case and edge punctuation do not count
    assert score("continue", "the cat sat on a mat", "the dog sat on the mat") == 4 / 6


def test_the_tasks_do_what_they_say():
    for e in instruction_set("train", per_task=30):
        body = e.prompt.split(": ", 1)[1]
        if e.task == "reverse":
            assert body.split() == e.response.split()[::-1]
        elif e.task == "repeat_last":
            assert body.endswith(e.response) and body != e.response
        elif e.task == "first_word":
            assert body.split()[0].strip(".,;:!?\"'()") == e.response
        elif e.task == "next_word":
            word = e.prompt.split('"')[1]
            words = [w.strip(".,;:!?\"'()") for w in body.split()]
            assert words[words.index(word.strip(".,;:!?\"'()")) + 1] == e.response


def test_titles_do_not_end_a_sentence():
    assert sentences_of("Then Mr. Knightley came.  Mrs. Weston smiled!") == [
        "Then Mr. Knightley came.",
        "Mrs. Weston smiled!",
    ]


def test_written_out_as_jsonl(tmp_path):
    train, test = write_instruction_set(tmp_path, per_task=20)
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    assert len(rows) == 2 * len(TASKS) and set(rows[0]) == {"task", "prompt", "response"}
    assert len(train.read_text().splitlines()) == 20 * len(TASKS)
