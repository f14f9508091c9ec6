"""Published numbers are the committed results' numbers, and the code still produces them.

The fast tests tie every quoted number to a committed result file: the README's demo block is the demo's
report of docs/demo/results.json, each study report's tables and findings are what its results.csv and
fit.json give, and the README's quotes of a report are lines of it. An edit by hand to any of them fails.
The slow test re-runs the demo's smallest AR and MDM points and the mini-study points behind its verdict at
the smallest budget and compares them with the committed numbers (regenerate everything with
`bash scripts/regenerate_published.sh`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "docs" / "demo" / "results.json"
REPORTS = sorted(p.parent for p in (ROOT / "docs" / "study").glob("*/stamp.json"))
QUOTING = [ROOT / "README.md", ROOT / "docs" / "study.md"]
TOLERANCE = 5e-3
"""Nats. Same machine type and torch build: bitwise equal (0); this allows another CPU's rounding over a short run."""


def readme_demo_block() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- demo output: docs/demo/results.json -->")
    body = text[start:].split("```", 2)[1]
    return body.removeprefix("\n")


def test_the_readme_demo_block_is_the_demo_report_of_the_committed_results():
    from unmask.report import demo_summary

    expected = demo_summary(json.loads(DEMO.read_text()))
    strip = lambda text: [line.rstrip() for line in text.strip().splitlines()]  # noqa: E731
    assert strip(readme_demo_block()) == strip(expected)


def report_pieces(report_dir: Path) -> list[str]:
    """What `unmask study report` writes from the committed table, fit and stamp: results tables and findings."""
    from unmask.study.grid import study_from_dict
    from unmask.study.pipeline import _results_blocks, findings, protocol_rows
    from unmask.study.report import to_markdown
    from unmask.study.results import read_table
    from unmask.study.stamp import read_stamp, stamp_text

    stamp = read_stamp(report_dir)
    study = study_from_dict(stamp["study"])
    rows = [r for r in read_table(report_dir / "results.csv") if r["status"] == "finished"]
    fitted = json.loads((report_dir / "fit.json").read_text())
    unigram = {int(U): level for U, level in stamp["unigram"].items()}
    identical = protocol_rows(rows, study, "identical")
    pieces = [stamp_text(stamp), to_markdown(_results_blocks(identical, unigram)).strip()]
    if study.tune:
        own_best = protocol_rows(rows, study, "own_best")
        pieces.append(to_markdown(_results_blocks(own_best, unigram, show_tuned=True)).strip())
    return pieces + findings(fitted, identical, unigram)


@pytest.mark.parametrize("report_dir", REPORTS, ids=lambda p: p.name)
def test_a_committed_reports_tables_and_findings_are_its_results(report_dir):
    report = (report_dir / "report.md").read_text()
    missing = [piece[:120] for piece in report_pieces(report_dir) if piece not in report]
    assert not missing, f"{report_dir / 'report.md'} differs from its results.csv / fit.json / stamp.json"


def quotes(path: Path) -> list[tuple[Path, str]]:
    """(source, line) for each line between `<!-- quote: SOURCE -->` and `<!-- end quote -->`."""
    out = []
    for source, body in re.findall(r"<!-- quote: (\S+) -->\n(.*?)<!-- end quote -->", path.read_text(), re.S):
        for line in body.splitlines():
            line = re.sub(r"^(> ?)?([-*] )?", "", line).strip()
            if line:
                out.append((ROOT / source, line))
    return out


@pytest.mark.parametrize("path", QUOTING, ids=lambda p: p.name)
def test_quoted_report_lines_are_lines_of_the_report(path):
    quoted = quotes(path)
    for source, line in quoted:
        assert line in source.read_text(), f"{path.name} quotes {source.name} but it does not say: {line[:100]}"


def test_the_readme_quotes_the_mini_study():
    assert any(source.parent.name == "mini" for source, _ in quotes(ROOT / "README.md"))


# --- the code still produces them ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demos_smallest_points_and_the_mini_studys_smallest_budget_verdict_reproduce(tmp_path):
    import dataclasses

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
    smallest = min(r["unique_tokens"] for r in rows)
    names = [n for n in verdict_points(rows, study_from_dict(read_stamp(mini)["study"])) if f"-U{smallest}-" in n]
    checks = verify_study(mini, points=",".join(names), tolerance=TOLERANCE, workers=2, quiet=True)
    assert [c.name for c in checks if c.problem] == []
