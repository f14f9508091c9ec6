"""A committed study is stamped (commit, command, config hash, machine) and `unmask study verify` re-runs its
points from the report folder alone: it passes on an unchanged study and fails, naming the point, when the
table, a run's config or the code's training noise changes."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.study.test_study import STUDY
from unmask import cli
from unmask.checkpoint import cpu_model
from unmask.study.results import read_table
from unmask.study.verify import choose, verify_study


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A finished 4-point study's report folder, copied elsewhere as a user commits it into docs/."""
    root = tmp_path_factory.mktemp("study")
    config = root / "tiny.yaml"
    config.write_text(STUDY.format(name="tiny", out=root / "out", runner="local") + "downstream: 12\n")
    for action in ("run", "fit", "report"):
        assert cli.main(["study", action, str(config), *(["--n_boot", "0"] if action == "fit" else [])]) == 0
    committed = shutil.copytree(root / "out" / "report", root / "docs" / "tiny")
    shutil.rmtree(root / "out")  # verify needs nothing but the committed folder
    return committed


def copy_of(report: Path, tmp_path: Path) -> Path:
    return shutil.copytree(report, tmp_path / "report")


def first_paragraph(report) -> str:
    return (report / "report.md").read_text().split("\n\n")[1]


def test_the_report_folder_is_stamped_with_commit_command_config_hash_and_machine(report):
    stamp = json.loads((report / "stamp.json").read_text())
    assert stamp["commands"][0].startswith("unmask study run ") and len(stamp["config_sha256"]) == 64
    assert set(stamp["machine"]) == {"platform", "cpu", "cpu_count", "python", "torch", "cuda"}
    assert stamp["machine"]["cpu"] == cpu_model() and stamp["machine"]["cpu"] in first_paragraph(report)
    assert sum(stamp["runs_trained_at"].values()) == 4 and stamp["study"]["name"] == "tiny"
    opening = first_paragraph(report)
    assert opening.startswith("Produced by `unmask study run") and stamp["config_sha256"][:12] in opening
    rows = read_table(report / "results.csv")
    assert len(rows) == 4 and all(r["git_sha"] and r["config_hash"] for r in rows)
    assert (report / "fit.json").is_file()


def test_verify_reproduces_an_unchanged_study_bitwise(report, capsys):
    checks = verify_study(report, points="all", tolerance=0.0, workers=2, quiet=True)
    assert len(checks) == 4 and all(c.problem is None and c.rerun == c.committed for c in checks)
    assert cli.main(["study", "verify", str(report), "--points", "2", "--tolerance", "0"]) == 0
    assert "2/2 reproduce" in capsys.readouterr().out


def test_verify_fails_naming_the_point_whose_committed_number_was_edited(report, tmp_path, capsys):
    edited = copy_of(report, tmp_path)
    table = list(csv.DictReader(open(edited / "results.csv")))
    table[1]["final_val_loss"] = str(float(table[1]["final_val_loss"]) - 0.01)
    with open(edited / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    assert cli.main(["study", "verify", str(edited), "--points", "all"]) == 1
    out, err = capsys.readouterr()
    assert f"{table[1]['name']}: committed" in out and "DOES NOT REPRODUCE: final loss +0.0100 nats" in out
    assert err.strip() == "unmask: error: 1 of 4 points do not reproduce"


def test_verify_fails_when_the_study_config_changes(report, tmp_path, capsys):
    edited = copy_of(report, tmp_path)
    stamp = json.loads((edited / "stamp.json").read_text())
    stamp["study"]["train"].setdefault("optim", {})["lr"] = 0.004  # what the committed runs were not trained with
    (edited / "stamp.json").write_text(json.dumps(stamp))
    assert cli.main(["study", "verify", str(edited), "--points", "ar-tiny-U2000-E1-s0"]) == 1
    out = capsys.readouterr().out
    assert "ar-tiny-U2000-E1-s0" in out and "config hash" in out and "final loss" in out


def test_verify_fails_when_the_codes_training_noise_changes(report, monkeypatch):
    """A change to how MDM draws its masks moves the MDM points and only them."""
    import unmask.training.step as step

    seed_of = step.noise_seed
    monkeypatch.setattr(step, "noise_seed", lambda seed, step, k: seed_of(seed, step, k) + 1)
    checks = {c.name: c for c in verify_study(report, points="all", workers=1, quiet=True)}  # in-process: patched
    assert {n for n, c in checks.items() if c.problem} == {"mdm-tiny-U2000-E1-s0", "mdm-tiny-U2000-E2-s0"}


def test_the_verdict_points_are_each_objectives_best_and_longest_run(report):
    from unmask.study.grid import study_from_dict

    study = study_from_dict(json.loads((report / "stamp.json").read_text())["study"], warn_flat=False)
    rows = read_table(report / "results.csv")
    chosen = choose(rows, study, "verdict", seed=0)
    for objective in ("ar", "mdm"):
        mine = [r for r in rows if r["objective"] == objective]
        assert min(mine, key=lambda r: r["final_val_loss"])["name"] in chosen
        assert max(mine, key=lambda r: r["epochs"])["name"] in chosen
    assert choose(rows, study, "3", seed=1) == choose(rows, study, "3", seed=1)  # seeded


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / "stamp.json").unlink(), "stamp.json is missing"),
        (lambda d: (d / "stamp.json").write_text("{"), "stamp.json is not valid JSON"),
        (lambda d: (d / "stamp.json").write_text("[]"), "no study config"),
        (lambda d: (d / "results.csv").write_text("name,x\n"), "not a results table"),
        (lambda d: (d / "results.csv").unlink(), "results.csv is missing"),
    ],
)
def test_a_damaged_report_folder_is_one_line(report, tmp_path, capsys, damage, words):
    damaged = copy_of(report, tmp_path)
    damage(damaged)
    assert cli.main(["study", "verify", str(damaged)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


@pytest.mark.parametrize("points", ["0", "99", "nope", ","])
def test_bad_points_are_one_line(report, capsys, points):
    assert cli.main(["study", "verify", str(report), "--points", points]) == 2
    assert "--points" in capsys.readouterr().err


def test_the_early_stopped_fits_are_labelled_in_every_table_finding_and_json_field(report):
    fitted = json.loads((report / "fit.json").read_text())
    for protocol, entry in fitted["protocols"].items():
        early = protocol.endswith("_early_stopped")
        assert entry["loss"] == ("best_val_loss" if early else "final_val_loss")
    text = (report / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## Fit: ")]
    assert sum("EARLY-STOPPED" in h for h in headings) == 2 and len(headings) == 4
    early_lines = [line for line in text.splitlines() if "lowest validation loss (best checkpoint)" in line]
    assert early_lines and all("EARLY-STOPPED" in line for line in early_lines)


def test_the_report_scores_each_objectives_best_runs_on_the_shipped_cloze_task(report):
    text = (report / "report.md").read_text()
    section = text.split("## Downstream: zero-shot cloze")[1]
    assert "12 sentence endings of Persuasion" in section and "chance 0.25" in section
    rows = [line for line in section.splitlines() if line.startswith("| identical settings")]
    assert {line.split(" | ")[1].split("-")[0] for line in rows} == {"ar", "mdm"}
    assert all(re.search(r"\| \d\.\d{3} ± \d\.\d{3} \| \[\d\.\d{3}, \d\.\d{3}\] \|$", line) for line in rows)
