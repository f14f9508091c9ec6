"""`unmask study`: a 4-point sweep end to end — runs, resumes, table, fit (or its refusal), figures, report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from unmask import cli

STUDY = """
name: {name}
out: {out}
data: {{vocab_size: 300, seq_len: 32, val_tokens: 512}}
model: {{}}
train: {{batch_size: 8, eval: {{mc_passes: 2, final_mc_passes: 4}}}}
objectives: [ar, mdm]
sizes: [tiny]
unique_tokens: [2000]
epochs: [1, 2]
workers: 2
runner: {runner}
"""


def write_study(tmp_path: Path, runner: str = "local") -> Path:
    path = tmp_path / f"{runner}.yaml"
    path.write_text(STUDY.format(name=f"mini-{runner}", out=tmp_path / runner, runner=runner))
    return path


def mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*.safetensors")}


def test_a_four_point_sweep_runs_resumes_fits_and_reports(tmp_path, capsys):
    config = write_study(tmp_path)
    assert cli.main(["study", "run", str(config)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "local" / "results.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert {(r["objective"], r["epochs"]) for r in rows} == {("ar", "1"), ("ar", "2"), ("mdm", "1"), ("mdm", "2")}
    for r in rows:
        assert int(r["tokens_seen"]) == 2000 * int(r["epochs"]) and float(r["flops"]) > 6 * int(r["params"]) * 2000
        assert float(r["final_val_loss"]) > 0 and r["config_hash"]
    if (tmp_path / "local" / "results.parquet").exists():
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "local" / "results.parquet").num_rows == 4

    before = mtimes(tmp_path / "local")
    assert cli.main(["study", "run", str(config)]) == 0  # resumable: nothing left to train
    assert mtimes(tmp_path / "local") == before

    assert cli.main(["study", "fit", str(config), "--n_boot", "0"]) == 0
    fitted = json.loads((tmp_path / "local" / "fit.json").read_text())
    for entry in fitted["protocols"].values():  # one size, one U, 1-2 epochs: too few points, and it says so
        for objective in ("ar", "mdm"):
            fit = entry["objectives"][objective]
            assert "error" in fit or fit["unidentified"], fit
            assert "2 budgets" in entry["repeated_runs"]["objectives"][objective]["error"]  # the variant says why
        assert entry["repeated_runs"]["label"].startswith("REPEATED-RUNS fit")

    assert cli.main(["study", "report", str(config)]) == 0
    report = tmp_path / "local" / "report"
    text = (report / "report.md").read_text()
    assert "unigram cross-entropy" in text and "MDM final loss" in text and "R_D*" not in text or "rd_star" in text
    findings = text.split("## Findings")[1].split("\n## ")[0]
    assert findings.count("REPEATED-RUNS fit") == 4  # one per protocol, labelled
    fitted_sections = [f for f in text.split("## Fit:")[1:] if "| parameter |" in f]
    assert fitted_sections and all("REPEATED-RUNS fit" in f for f in fitted_sections)
    for name in ("loss_vs_epochs", "loss_vs_flops"):
        assert (report / f"{name}.png").stat().st_size > 5_000 and (report / f"{name}.svg").exists()
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<table>" in html  # self-contained
    plateau = text.split("## Leaving the unigram plateau (MDM)")[1].split("##")[0]
    assert plateau.count("| 2,000 |") == 2  # MDM's two runs, each with its exit epoch or 'never'

    # a tuning grid added later keeps the runs at the shared value and trains only the new points
    config.write_text(config.read_text() + "tune: {lr: [0.002, 0.004]}\n")
    assert cli.main(["study", "run", str(config)]) == 0
    after = mtimes(tmp_path / "local")
    assert {k: v for k, v in after.items() if k in before} == before and len(after) > len(before)
    rows = list(csv.DictReader(open(tmp_path / "local" / "results.csv")))
    assert len(rows) == 8 and sum(r["name"].endswith("-lr0.004") for r in rows) == 4
    assert cli.main(["study", "fit", str(config), "--n_boot", "0"]) == 0
    assert cli.main(["study", "report", str(config)]) == 0
    text = (report / "report.md").read_text()
    assert "Results (each objective at its own best)" in text and "(lr 0.00" in text


@pytest.mark.slow
def test_the_same_sweep_runs_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'unmask[ray]'")
    config = write_study(tmp_path, "ray")
    assert cli.main(["study", "run", str(config)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ray" / "results.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    before = mtimes(tmp_path / "ray")
    assert cli.main(["study", "run", str(config)]) == 0  # a second invocation trains nothing
    assert mtimes(tmp_path / "ray") == before


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "studies").glob("*.yaml")), ids=str)
def test_every_study_preset_loads_into_a_grid(path):
    from unmask.study.grid import jobs, load_study

    study = load_study(path)
    points = jobs(study)
    assert len(points) == len({j.name for j in points}) > 0


def test_the_two_protocols_pick_the_shared_setting_and_each_objectives_best():
    from unmask.config import TrainConfig
    from unmask.study.grid import StudyConfig
    from unmask.study.pipeline import protocol_rows

    study = StudyConfig(train=TrainConfig.from_flat(lr=0.002), tune={"lr": [0.001, 0.002, 0.004]})

    def row(objective, lr, loss):
        tuned = json.dumps({"lr": lr})
        return {"objective": objective, "size": "demo", "unique_tokens": 1000, "epochs": 4, "seed": 0,
                "tuned": tuned, "final_val_loss": loss}  # fmt: skip

    rows = [row("ar", 0.001, 5.0), row("ar", 0.002, 5.2), row("ar", 0.004, 5.5),
            row("mdm", 0.001, 6.1), row("mdm", 0.002, 6.0), row("mdm", 0.004, 5.7)]  # fmt: skip
    identical = protocol_rows(rows, study, "identical")
    assert {(r["objective"], r["final_val_loss"]) for r in identical} == {("ar", 5.2), ("mdm", 6.0)}
    best = protocol_rows(rows, study, "own_best")
    assert {(r["objective"], r["final_val_loss"]) for r in best} == {("ar", 5.0), ("mdm", 5.7)}


def test_scaling_points_are_single_epoch_runs_at_every_size_and_budget_the_grid_lacks():
    from unmask.config import ConfigError, OptimConfig, TrainConfig
    from unmask.study.grid import ScalingPoints, StudyConfig, jobs

    study = StudyConfig(
        train=TrainConfig(optim=OptimConfig(schedule="wsd")),
        sizes=["demo"],
        unique_tokens=[1000],
        epochs={"ar": [1, 4], "mdm": [4, 16]},
        seeds=[0, 1],
        scaling=ScalingPoints(sizes=["demo", "tiny"], unique_tokens=[1000, 8000]),
    )
    grid = {j.name: j for j in jobs(study)}
    scaling = {n: j for n, j in grid.items() if not study.in_grid(_row(j))}
    # 2 objectives x 2 sizes x 2 budgets x 2 seeds, less AR's demo U1000 E1 points, which the grid has (a branch)
    assert len(scaling) == 16 - 2 and all(j.train.epochs == 1 and j.fork_of is None for j in scaling.values())
    assert grid["ar-demo-U1000-E1-s0"].fork_of == "ar-demo-U1000-E4-s0"
    assert {j.model.size for j in scaling.values()} == {"demo", "tiny"} and study.budgets() == [1000, 8000]
    assert all(j.data.endswith("U8000") for n, j in scaling.items() if "-U8000-" in n)
    for bad in (ScalingPoints(sizes=["demo"]), ScalingPoints(sizes=["huge"], unique_tokens=[10])):
        with pytest.raises(ConfigError, match="study.scaling"):
            StudyConfig(scaling=bad)


def test_more_epochs_lengthen_one_objective_at_one_budget_and_survive_the_json_stamp():
    import json

    from unmask.config import ConfigError, OptimConfig, TrainConfig, to_dict
    from unmask.study.grid import StudyConfig, jobs, study_from_dict

    study = StudyConfig(
        train=TrainConfig(optim=OptimConfig(schedule="wsd")),
        unique_tokens=[1000, 2000],
        epochs={"ar": [1, 4], "mdm": [4, 16]},
        more_epochs={"mdm": {2000: [64]}},
    )
    grid = {j.name: j for j in jobs(study)}
    assert study.epochs_at("mdm", 2000) == [4, 16, 64] and study.epochs_at("mdm", 1000) == [4, 16]
    assert "mdm-demo-U2000-E64-s0" in grid and "mdm-demo-U1000-E64-s0" not in grid
    # The longest run at that budget is the trunk of its shorter ones; elsewhere nothing changes.
    assert grid["mdm-demo-U2000-E16-s0"].fork_of == "mdm-demo-U2000-E64-s0"
    assert grid["mdm-demo-U1000-E4-s0"].fork_of == "mdm-demo-U1000-E16-s0"
    assert study.in_grid(_row(grid["mdm-demo-U2000-E64-s0"]))
    stamped = json.loads(json.dumps(to_dict(study)))  # a report's stamp: JSON keys are strings
    assert study_from_dict(stamped, warn_flat=False).more_epochs == {"mdm": {2000: [64]}}
    for bad, match in (({"lm": {1000: [8]}}, "not among the objectives"), ({"mdm": {3000: [8]}}, "not among unique"),
                       ({"mdm": {1000: [0]}}, ">= 1")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"study.more_epochs.*{match}"):
            StudyConfig(epochs={"ar": [1], "mdm": [4]}, unique_tokens=[1000], more_epochs=bad)


def _row(job) -> dict:
    return {"size": job.model.size, "unique_tokens": int(job.data.rsplit("U", 1)[1]), "epochs": job.train.epochs,
            "objective": job.train.objective}  # fmt: skip


@pytest.mark.slow
def test_single_epoch_scaling_points_identify_the_fits_first_stage_and_get_their_own_table(tmp_path):
    config = tmp_path / "scaling.yaml"
    config.write_text(
        STUDY.format(name="scaling", out=tmp_path / "out", runner="local").replace("epochs: [1, 2]", "epochs: [3]")
        + "scaling: {sizes: [tiny, demo], unique_tokens: [1000, 2000, 4000, 8000]}\n"
    )
    assert cli.main(["study", "run", str(config)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == 2 + 16 and {r["status"] for r in rows} == {"finished"}
    assert cli.main(["study", "fit", str(config), "--n_boot", "0"]) == 0
    fitted = json.loads((tmp_path / "out" / "fit.json").read_text())["protocols"]["identical"]
    for objective in ("ar", "mdm"):  # two sizes and four budgets at one epoch: stage 1 fits the data term, and the
        fit = fitted["objectives"][objective]  # size term too, unless these few steps show none (named, not A = 0)
        assert {"E", "B", "beta"} <= set(fit["values"])
        assert {"A", "alpha"} <= set(fit["values"]) or "model size term vanished" in fit["unidentified"]["A"]
    assert list(fitted["observed"]) == ["2000"]  # the comparison stays on the grid: U = 2,000 at 3 epochs
    assert cli.main(["study", "report", str(config)]) == 0
    text = (tmp_path / "out" / "report" / "report.md").read_text()
    scaling = text.split("## Single-epoch scaling points")[1].split("##")[0]
    assert "8,000" in scaling and "demo" in scaling and "tiny" in scaling
    assert "U = 8,000 unique tokens" not in text  # no per-epoch table for a budget only the scaling points have


def test_a_run_leaves_the_plateau_at_its_first_validation_enough_below_the_unigram_level(tmp_path):
    from unmask.study.pipeline import plateau_exit

    curve = [(1.6, 6.00), (3.2, 5.97), (4.8, 5.94), (6.4, 5.50), (8.0, 6.10)]
    lines = [{"step": 10, "loss": 6.5}] + [{"step": i, "epoch": e, "val_loss": v} for i, (e, v) in enumerate(curve)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert plateau_exit(tmp_path, level=6.0) == 4.8  # 5.94 is 0.06 below: the first at least 0.05 below
    assert plateau_exit(tmp_path, level=6.0, margin=0.2) == 6.4
    assert plateau_exit(tmp_path, level=5.0) is None


def test_an_own_best_table_names_list_valued_settings():
    from unmask.study.pipeline import _results_blocks
    from unmask.study.report import to_markdown

    row = {"objective": "mdm", "size": "demo", "unique_tokens": 1000, "epochs": 4, "seed": 0,
           "tuned": json.dumps({"local_prior": 5.0, "mdm_t_beta": [3.0, 3.0]}), "final_val_loss": 5.5}  # fmt: skip
    text = to_markdown(_results_blocks([row], {1000: 6.0}, show_tuned=True))
    assert "5.5000 (local_prior 5, mdm_t_beta [3, 3])" in text


@pytest.mark.parametrize(("bound", "verdict"), [(77.4, "lies above AR's whole interval"), (20.0, "does not exceed")])
def test_an_mdm_lower_bound_is_compared_with_ars_interval(bound, verdict):
    from unmask.study.pipeline import findings

    fits = {"ar": {"values": {"rd_star": 9.2}, "intervals_95": {"rd_star": [5.9, 35.6]}, "unidentified": {}},
            "mdm": {"values": {}, "intervals_95": {}, "unidentified": {"rd_star": "no saturation: ..."},
                    "lower_bounds": {"rd_star": bound}}}  # fmt: skip
    lines = findings({"protocols": {"own_best": {"objectives": fits}}}, [], {})
    assert any("R_D* = 9.2 [5.9, 35.6] for AR" in line and f"R_D* ≥ {bound:.3g}" in line and verdict in line
               for line in lines), lines  # fmt: skip


def test_the_repeated_runs_fits_give_the_ratio_of_rd_stars_and_where_the_laws_cross():
    import numpy as np

    from unmask.study.fit import law_loss
    from unmask.study.pipeline import repeated_runs_fit

    laws = {"ar": {"E": 1.5, "B": 50.0, "beta": 0.18, "rd_star": 5.0},  # better per fresh token, decays fast
            "mdm": {"E": 1.5, "B": 56.0, "beta": 0.18, "rd_star": 40.0}}  # fmt: skip
    epochs = {"ar": [2, 4, 8, 16, 32], "mdm": [8, 24, 96, 192, 384]}
    noise = np.random.default_rng(0).normal(0, 0.003, 200)
    rows = [{"objective": o, "non_embedding_params": 3e5, "tokens_seen": e * U, "unique_tokens": U,
             "best_val_loss": law_loss(law, 3e5, e * U, U) * np.exp(noise[i % 200])}
            for o, law in laws.items() for i, (U, e, _) in enumerate(
                (U, e, s) for U in (6250, 12500, 25000, 50000) for e in epochs[o] for s in range(3))]  # fmt: skip
    fitted = repeated_runs_fit(rows, "best_val_loss", n_boot=8)
    ratio = fitted["ratio_mdm_over_ar"]
    assert 4 < ratio["estimate"] < 16 and ratio["interval_95"][0] > 1  # 40 / 5 = 8
    crossings = fitted["critical_compute"]["per_U"]
    assert set(crossings) == {"6250", "12500", "25000", "50000"} and all(c["compute"] for c in crossings.values())
    for U, c in crossings.items():  # where the generating laws cross, at the fits' model size
        gap = lambda C, U=int(U): law_loss(laws["mdm"], 3e5, C / 1.8e6, U) - law_loss(laws["ar"], 3e5, C / 1.8e6, U)
        assert gap(c["compute"] / 1.3) > 0 > gap(c["compute"] * 1.3)
    from unmask.study.pipeline import _repeated_runs_text

    assert "MDM's repeated data keep their value longer" in _repeated_runs_text(fitted)
