"""Published numbers are the committed results' numbers, and the code still produces them.

The fast tests tie every quoted number to a committed result file: the README's demo block is the demo's
report of docs/demo/results.json, each study report's tables and findings are what its results.csv and
fit.json give, and the README's quotes of a report are lines of it. An edit by hand to any of them fails.
The slow test re-runs the demo's smallest AR and MDM points and the mini-study points behind its verdicts at
the two smallest budgets (`unmask study verify docs/study/mini` re-runs all of them) and compares them with the
committed numbers (regenerate everything with
`bash scripts/regenerate_published.sh`).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "docs" / "demo" / "results.json"
REPORTS = sorted(p.parent for p in (ROOT / "docs" / "study").glob("*/stamp.json"))
QUOTING = [ROOT / "README.md", ROOT / "docs" / "study.md"]
TOLERANCE = 5e-3
CROSS_CPU_TOLERANCE = 0.15
"""Nats, for MDM's 96-epoch points re-run on another CPU than the study's: rounding alone (other kernels) moved
them by -0.057, -0.046 and +0.098 on an Intel Xeon (AVX-512) against the AMD EPYC the mini study was made on,
while AR's shorter runs stayed within 0.005 there. Same CPU: bitwise."""
"""Nats. Same machine type and torch build: bitwise equal (0); this allows another CPU's rounding over a short run."""


def demo_block_matches(readme: str, results: dict) -> bool:
    """Whether the README's demo block is the demo's report of `results`."""
    from unmask.report import demo_summary

    start = readme.index("<!-- demo output: docs/demo/results.json -->")
    block = readme[start:].split("```", 2)[1]
    lines = lambda text: [line.rstrip() for line in text.strip().splitlines()]  # noqa: E731
    summary = lines(demo_summary(results))
    return lines(block)[: len(summary)] == summary  # docs/study.md's block goes on with the samples


@pytest.mark.parametrize("path", QUOTING, ids=lambda p: p.name)
def test_the_demo_blocks_are_the_demo_report_of_the_committed_results(path):
    assert demo_block_matches(path.read_text(), json.loads(DEMO.read_text()))


def report_pieces(report_dir: Path) -> list[str]:
    """What `unmask study report` writes from the committed table, fit and stamp: results tables and findings."""
    from unmask.study.grid import study_from_dict
    from unmask.study.pipeline import _results_blocks, findings, protocol_rows
    from unmask.study.report import to_markdown
    from unmask.study.results import read_table
    from unmask.study.stamp import read_stamp, stamp_text

    stamp = read_stamp(report_dir)
    study = study_from_dict(stamp["study"], warn_flat=False)
    rows = [r for r in read_table(report_dir / "results.csv") if r["status"] == "finished"]
    fitted = json.loads((report_dir / "fit.json").read_text())
    unigram = {int(U): level for U, level in stamp["unigram"].items()}
    grid = [r for r in rows if study.in_grid(r)]  # the single-epoch scaling points have their own table
    identical = protocol_rows(grid, study, "identical")
    pieces = [stamp_text(stamp), to_markdown(_results_blocks(identical, unigram)).strip()]
    if study.tuned():
        own_best = protocol_rows(grid, study, "own_best")
        pieces.append(to_markdown(_results_blocks(own_best, unigram, show_tuned=True)).strip())
    grid_unigram = {U: level for U, level in unigram.items() if U in study.unique_tokens}
    return pieces + findings(fitted, identical, grid_unigram)


def report_mismatches(report_dir: Path) -> list[str]:
    report = (report_dir / "report.md").read_text()
    return [piece[:120] for piece in report_pieces(report_dir) if piece not in report]


@pytest.mark.parametrize("report_dir", REPORTS, ids=lambda p: p.name)
def test_a_committed_reports_tables_and_findings_are_its_results(report_dir):
    assert not report_mismatches(report_dir), f"{report_dir / 'report.md'} differs from its results / fit / stamp"


def quotes(text: str) -> list[tuple[Path, str]]:
    """(source, line) for each line between `<!-- quote: SOURCE -->` and `<!-- end quote -->`."""
    out = []
    for source, body in re.findall(r"<!-- quote: (\S+) -->\n(.*?)<!-- end quote -->", text, re.S):
        for line in body.splitlines():
            line = re.sub(r"^(> ?)?([-*] )?", "", line.strip()).strip()
            if line:
                out.append((ROOT / source, line))
    return out


def misquoted(text: str) -> list[str]:
    return [line for source, line in quotes(text) if line not in source.read_text()]


@pytest.mark.parametrize("path", QUOTING, ids=lambda p: p.name)
def test_quoted_report_lines_are_lines_of_the_report(path):
    assert not misquoted(path.read_text()), f"{path.name} quotes a report line the report does not hold"


def test_the_readme_quotes_the_mini_study():
    assert any(source.parent.name == "mini" for source, _ in quotes((ROOT / "README.md").read_text()))


def edit_a_number(text: str, after: str) -> str:
    """`text` with the first d.ddd number after `after` changed in its last digit, as a hand edit would."""
    at = text.index(after)
    match = re.compile(r"\d\.\d{3}").search(text, at)
    number = match.group()
    edited = number[:-1] + str((int(number[-1]) + 1) % 10)
    return text[: match.start()] + edited + text[match.end() :]


def adaptation_table_numbers(doc: str) -> list[float]:
    """The losses in docs/open_models.md's adaptation table (every x.xxx number after a colon)."""
    section = doc.split("## AR → diffusion adaptation", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and ":" in line]
    return [float(x) for row in rows for x in re.findall(r":\**\s*(\d\.\d{3})", row)]


def test_the_adaptation_table_is_the_committed_adaptation_results():
    results = json.loads((ROOT / "docs" / "finetune" / "adapt.json").read_text())
    committed = {
        round(run["final_loss"], 3)
        for case in results.values()
        for run in [case["ar_base"], case["mdm_scratch"], *case["adapted"]]
    }
    quoted = adaptation_table_numbers((ROOT / "docs" / "open_models.md").read_text())
    assert len(quoted) == 9 and set(quoted) <= committed


def test_a_number_edited_by_hand_anywhere_published_fails_these_checks(tmp_path):
    readme = (ROOT / "README.md").read_text()
    results = json.loads(DEMO.read_text())
    assert not demo_block_matches(edit_a_number(readme, "<!-- demo output"), results)
    assert misquoted(edit_a_number(readme, "<!-- quote: docs/study/mini/report.md -->"))
    mini = shutil.copytree(ROOT / "docs" / "study" / "mini", tmp_path / "mini")
    report = (mini / "report.md").read_text()
    (mini / "report.md").write_text(edit_a_number(report, "| 16 |"))  # a table cell
    assert report_mismatches(mini)
    (mini / "report.md").write_text(edit_a_number(report, "## Findings"))  # a finding
    assert report_mismatches(mini)
    (mini / "report.md").write_text(report)
    assert not report_mismatches(mini)
    rows = list(csv.DictReader(open(mini / "results.csv")))  # the table behind it (the slow test re-runs its points)
    row = next(r for r in rows if r["name"] == "mdm-demo-U6250-E96-s0")
    row["final_val_loss"] = str(float(row["final_val_loss"]) - 0.001)
    with open(mini / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert report_mismatches(mini)


# --- the code still produces them ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demos_smallest_points_and_the_mini_studys_verdicts_at_the_two_smallest_budgets_reproduce(tmp_path):
    import dataclasses

    from unmask.checkpoint import cpu_model
    from unmask.data.prepare import prepare
    from unmask.demo import DemoConfig
    from unmask.run import Run
    from unmask.study import Job, run_jobs
    from unmask.study.grid import study_from_dict
    from unmask.study.results import read_table
    from unmask.study.stamp import read_stamp
    from unmask.study.verify import verdict_points, verify_study

    demo = DemoConfig()
    data = prepare(demo.data, tmp_path / "demo-data", quiet=True)
    jobs = [
        Job(f"{o}-E1", str(data), str(tmp_path / f"{o}-E1"), demo.model, dataclasses.replace(demo.train, objective=o))
        for o in ("ar", "mdm")
    ]
    run_jobs(jobs, workers=2, quiet=True)
    committed = {(r["objective"], r["epochs"]): r["final_val_loss"] for r in json.loads(DEMO.read_text())["runs"]}
    for job in jobs:
        got = Run(job.out).final_result()["loss"]
        assert got == pytest.approx(committed[(job.train.objective, 1)], abs=TOLERANCE), job.name

    mini = ROOT / "docs" / "study" / "mini"
    rows = read_table(mini / "results.csv")
    small = sorted({r["unique_tokens"] for r in rows})[:2]  # 6,250 and 12,500: the larger ones take ~10 CPU minutes
    verdicts = verdict_points(rows, study_from_dict(read_stamp(mini)["study"], warn_flat=False))
    names = [n for n in verdicts if any(f"-U{U}-" in n for U in small)]
    same_cpu = read_stamp(mini)["machine"].get("cpu") == cpu_model()
    checks = verify_study(mini, points=",".join(names), tolerance=CROSS_CPU_TOLERANCE, workers=2, quiet=True)
    assert [c.name for c in checks if c.problem] == []
    for c in checks:  # AR's short runs reproduce tightly anywhere; MDM's long ones on the study's CPU only
        tight = same_cpu or c.name.startswith("ar-")
        assert abs(c.rerun - c.committed) <= (TOLERANCE if tight else CROSS_CPU_TOLERANCE), c
