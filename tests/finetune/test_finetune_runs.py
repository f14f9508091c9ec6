"""Fine-tuning end to end from the command line: instruction folders for a base run, SFT runs that start from
the base and resume like pre-training, chat sampling, and the metrics table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_cli import assert_one_line_error, unmask
from unmask.cli import finetune as finetune_commands
from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.data import prepare
from unmask.data.instructions import InstructionData
from unmask.finetune import tasks
from unmask.model import read_weights
from unmask.run import Run
from unmask.training import train

DATA = DataConfig(unique_tokens=4_000, val_tokens=1_000, vocab_size=512, seq_len=64, tokenizer_train_bytes=400_000)
SFT = [
    "--train.epochs",
    "1",
    "--train.batch_size",
    "16",
    "--train.eval.mc_passes",
    "2",
    "--train.eval.final_mc_passes",
    "2",
]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, str]:
    """An MDM and an AR base run (tiny, one epoch) on a 64-token slice of the embedded corpus."""
    root = tmp_path_factory.mktemp("bases")
    data = prepare(DATA, root / "data", quiet=True)
    runs = {}
    for objective in ("mdm", "ar"):
        model = ModelConfig(size="tiny", causal=objective == "ar")
        cfg = TrainConfig.from_flat(objective=objective, epochs=1, batch_size=8, eval_mc_passes=2, final_mc_passes=2)
        runs[objective] = str(train(data, root / objective, model, cfg, quiet=True, tensorboard=False))
    return runs


@pytest.fixture(scope="module")
def folder(bases, tmp_path_factory) -> str:
    """The shipped set (40 conversations per task) prepared for the MDM base."""
    out = tmp_path_factory.mktemp("sft") / "data"
    assert finetune_commands.prepare(bases["mdm"], str(out), per_task=40) == str(out)
    return str(out)


def test_the_folder_extends_the_base_tokenizer_and_keeps_its_special_ids(bases, folder):
    data, base = InstructionData(folder), Run(bases["mdm"])
    base_vocab, vocab = base.tokenizer().get_vocab(), data.tokenizer().get_vocab()
    assert all(vocab[t] == i for t, i in base_vocab.items())
    assert sorted(set(vocab) - set(base_vocab)) == ["<|assistant|>", "<|system|>", "<|user|>"]
    assert min(data.manifest["role_ids"].values()) >= len(base_vocab)
    ids = base.special_ids
    assert (data.eod_id, data.mask_id, data.pad_id) == (ids.eod_id, ids.mask_id, ids.pad_id)
    batch = data.batch("train", [0, 1, 2])  # tokens, learned flags as the loss mask
    assert batch.tokens.shape == batch.loss_mask.shape == (3, 64) and batch.loss_mask.dtype == torch.bool
    assert data.n_sequences("train") + data.n_sequences("val") + data.manifest["dropped"]["train"]["count"] == 200


def test_long_conversations_are_dropped_with_a_report_or_refused(bases, tmp_path, capsys):
    rows = [{"prompt": "a b c", "response": "c b a"}] * 3 + [{"prompt": "word " * 80, "response": "too long"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, out, _ = unmask(capsys, "finetune", "prepare", bases["mdm"], "--data", path, "--out", tmp_path / "a")
    assert code == 0 and "dropped 1 train conversation(s) longer than 64 tokens" in out and "d.jsonl:4" in out
    args = ["finetune", "prepare", bases["mdm"], "--data", path, "--out", tmp_path / "b", "--drop_long", "false"]
    code, _, err = unmask(capsys, *args)
    assert_one_line_error(code, err, "d.jsonl:4", "longer than the sequence (64)", "--drop_long true")
    assert not (tmp_path / "b").exists()


BAD_DATA = {
    "missing field": ('{"prompt": "hi"}', "missing field 'response'"),
    "empty response": ('{"prompt": "hi", "response": ""}', "empty assistant response"),
    "unknown role": ('{"messages": [{"role": "robot", "content": "x"}]}', "unknown role 'robot'"),
    "not JSON": ("{oops", "not valid JSON"),
    "wrong type": ('{"prompt": "hi", "response": ["a"]}', 'expected {"role"'),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_instruction_data_is_one_line_and_nothing_written(bases, tmp_path, capsys, case):
    line, expected = BAD_DATA[case]
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n' + line + "\n")
    code, _, err = unmask(capsys, "finetune", "prepare", bases["mdm"], "--data", path, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "d.jsonl:2", expected)
    assert list(tmp_path.iterdir()) == [path]  # no folder, no temporary left behind


def test_prepare_never_replaces_a_folder_it_did_not_write(bases, folder, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = unmask(capsys, "finetune", "prepare", bases["mdm"], "--out", mine, "--per_task", "5")
    assert_one_line_error(code, err, "holds other files")
    assert (mine / "notes.txt").read_text() == "keep me"
    code, _, err = unmask(capsys, "finetune", "prepare", bases["mdm"], "--out", folder, "--per_task", "5")
    assert_one_line_error(code, err, "--overwrite true")


def test_sft_starts_from_the_base_and_resumes_like_pretraining(bases, folder, tmp_path, capsys):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    lr = ["--train.optim.lr", "5e-4"]  # given when the run starts, not when it resumes: the run's own value holds
    code, out, _ = unmask(capsys, "finetune", "sft", bases["mdm"], "--data", folder, "--out", whole, *SFT, *lr)
    assert code == 0 and "final validation ELBO" in out
    run = Run(whole)
    assert run.objective.name == "sft_mdm" and run.train_config.init_from == str(Path(bases["mdm"]).resolve())
    assert run.config["init_from_sha256"]
    # the base's embedding rows carried over; the new chat rows started at their mean (checked on step-0 weights)
    from unmask.training.init import start_from

    _, start = start_from(bases["mdm"], InstructionData(folder), run.objective)
    base = read_weights(Run(bases["mdm"]).weights("last"))["embed.weight"]
    assert torch.equal(start["embed.weight"][: len(base)], base)
    new_rows = start["embed.weight"][len(base) :]
    assert len(new_rows) > 0 and torch.allclose(new_rows, base.mean(0).expand_as(new_rows))
    steps = run.budget()["total_steps"]
    unmask(capsys, "finetune", "sft", bases["mdm"], "--data", folder, "--out", halves, *SFT, *lr,
           "--train.checkpoint.stop_at_step", str(steps // 2))  # fmt: skip
    code, _, _ = unmask(capsys, "finetune", "sft", bases["mdm"], "--data", folder, "--out", halves, *SFT,
                        "--resume", "true")  # fmt: skip
    assert code == 0
    a, b = read_weights(whole / "last.safetensors"), read_weights(halves / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stopped_sft_run_resumes_without_its_base_but_not_with_another(bases, folder, tmp_path, capsys):
    base, out = tmp_path / "base", tmp_path / "sft"
    shutil.copytree(bases["mdm"], base)
    code, _, _ = unmask(capsys, "finetune", "sft", base, "--data", folder, "--out", out, *SFT,
                        "--train.checkpoint.stop_at_step", "2")  # fmt: skip

    def last_step() -> int:
        return max(r["step"] for r in Run(out).metrics() if "loss" in r)

    assert code == 0 and last_step() == 2
    code, _, err = unmask(capsys, "finetune", "sft", bases["ar"], "--data", folder, "--out", out, "--resume", "true")
    assert_one_line_error(code, err, f"fine-tunes {base.resolve()}", "resume it with that base path")
    shutil.rmtree(base)  # the base is gone: its weights are in the run's checkpoint
    code, out_text, _ = unmask(capsys, "finetune", "sft", base, "--data", folder, "--out", out, "--resume", "true")
    assert code == 0 and "final validation ELBO" in out_text
    assert last_step() == Run(out).budget()["total_steps"]


def test_an_ar_base_is_tuned_on_its_answers_alone(bases, folder, tmp_path, capsys):
    # the folder is bound to a tokenizer, not to one base: the AR base shares the MDM base's
    code, out, _ = unmask(capsys, "finetune", "sft", bases["ar"], "--data", folder, "--out", tmp_path / "ar", *SFT)
    assert code == 0 and "final validation NLL" in out and Run(tmp_path / "ar").objective.name == "sft_ar"


def test_sft_refuses_data_of_another_tokenizer_and_objectives_it_cannot_tune(bases, folder, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens swap ids: the base's rows would mean other tokens
    (other / "tokenizer.json").write_text(json.dumps(tok))
    code, _, err = unmask(capsys, "finetune", "sft", bases["mdm"], "--data", other, "--out", tmp_path / "x", *SFT)
    assert_one_line_error(code, err, "not the base run's", "unmask finetune prepare --run")
    assert not (tmp_path / "x").exists()  # refused before anything is written
    sft_run = tmp_path / "sft"
    unmask(capsys, "finetune", "sft", bases["mdm"], "--data", folder, "--out", sft_run, *SFT,
           "--train.checkpoint.stop_at_step", "1")  # fmt: skip
    code, _, err = unmask(capsys, "finetune", "sft", sft_run, "--data", folder, "--out", tmp_path / "y", *SFT)
    assert_one_line_error(code, err, "sft_mdm", "SFT starts from an 'mdm' or 'ar' run")


def test_chat_sampling_answers_after_the_template_and_a_base_run_is_refused(bases, folder, tmp_path, capsys):
    out = tmp_path / "sft"
    unmask(capsys, "finetune", "sft", bases["mdm"], "--data", folder, "--out", out, *SFT)
    args = ["--prompt", "What is the first word of: Emma smiled.", "--length", "16", "--json", "true"]
    code, text, _ = unmask(capsys, "sample", out, "--chat", "true", *args)
    result = json.loads(text)
    assert code == 0 and "What is the first word" not in result["texts"][0] and "<|" not in result["texts"][0]
    code, _, err = unmask(capsys, "sample", bases["mdm"], "--chat", "true", *args)
    assert_one_line_error(code, err, "no chat tokens", "unmask finetune")


def test_the_metrics_table_has_one_row_per_run(bases, folder, tmp_path, capsys):
    report = tmp_path / "eval.json"
    args = ["--per_task", "2", "--length", "8", "--tasks", "first_word", "next_word", "--out", report]
    code, out, _ = unmask(capsys, "finetune", "eval", bases["mdm"], bases["ar"], *args)
    assert code == 0 and "accuracy" in out and "rep_2" in out and "acc_first_word" in out
    rows = json.loads(report.read_text())["rows"]
    assert [r["objective"] for r in rows] == ["mdm", "ar"] and all(r["n"] == 4 for r in rows)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["eos_rate"] <= 1 for r in rows)


def test_the_cli_pool_is_the_tasks_pool():
    assert finetune_commands.POOL == tasks.POOL


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "epochs", "lr"), [("ar", 3, 2e-3), ("mdm", 10, 3e-3)])
def test_sft_raises_test_accuracy_over_the_base(bases, tmp_path, objective, epochs, lr):
    """One task (first_word), ~1,900 conversations: the base never answers (it never stops); after SFT the
    run answers in the template and stops. At this size it mostly learns the likeliest first words (measured
    0.16 AR, 0.14 MDM against 0.0), not yet to copy: the margin asserted is what that gives, with room."""
    from unmask.finetune.evaluate import evaluate_instructions
    from unmask.finetune.prepare import prepare_instructions
    from unmask.finetune.sft import sft

    data, _ = prepare_instructions(bases[objective], tmp_path / "data", per_task=2000, tasks=["first_word"])
    cfg = TrainConfig.from_flat(
        epochs=epochs, batch_size=32, lr=lr, warmup_frac=0.05, eval_mc_passes=2, final_mc_passes=2
    )
    run = sft(bases[objective], data.path, tmp_path / "sft", cfg, quiet=True, tensorboard=False)
    base_row, _ = evaluate_instructions(bases[objective], per_task=50, length=16, tasks=["first_word"])
    sft_row, _ = evaluate_instructions(run, per_task=50, length=16, tasks=["first_word"])
    print(f"{objective}: base accuracy {base_row['accuracy']:.3f}, after SFT {sft_row['accuracy']:.3f}")
    assert sft_row["accuracy"] >= base_row["accuracy"] + 0.08
    assert sft_row["stopped"] > 0.9 > base_row["stopped"]  # it learned where an answer ends


def test_a_long_prompt_keeps_its_instruction_and_an_mdm_answer_window_shrinks_instead(bases):
    from unmask.finetune.evaluate import MIN_WINDOW, respond

    short, long = "Reverse the words: a b c", "Repeat the last sentence: " + "She was very happy indeed. " * 6
    for objective in ("mdm", "ar"):
        run = Run(bases[objective])
        n_long = len(run.tokenizer().encode(long).ids)
        _, windows = respond(run, [short, long], length=40)
        expected = max(MIN_WINDOW, (64 - n_long) // 8 * 8) if objective == "mdm" else 40  # whole blocks of 8
        assert [len(w) for w in windows] == [40, expected], objective
    assert 64 - n_long < 40  # the long prompt did leave an MDM less room than asked


def test_shrunken_windows_hold_whole_blocks_and_keep_the_tokens_per_step(bases):
    from unmask.finetune.evaluate import _scaled, respond
    from unmask.sampling.config import SamplerConfig

    long = "Repeat the last sentence: " + "She was very happy indeed. " * 6
    blocks = SamplerConfig.from_flat(block_length=8)
    _, windows = respond(Run(bases["mdm"]), [long], length=40, sampler=blocks)
    assert len(windows[0]) % 8 == 0 and len(windows[0]) < 40
    assert _scaled(SamplerConfig.from_flat(steps=10), 20, 40).commit.steps == 5
    assert _scaled(SamplerConfig.from_flat(steps=10, block_length=8), 16, 40).commit.steps == 4
