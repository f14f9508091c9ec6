"""`unmask demo`: the data-constrained comparison, small enough for a laptop CPU.

Prepare a small unique-token budget of the embedded corpus, train AR and MDM of
the same size with identical settings for several epoch counts (each run its own
cosine schedule), then print the table, save the plot and show samples.
Runs go to a process pool (one CPU thread each); finished runs are reused, so a
second `unmask demo` only redraws the results.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from unmask.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, check, to_dict


@dataclass
class DemoConfig:
    """What the demo trains; both objectives share every setting but the objective."""

    out: str = "runs/demo"
    """Folder for the data, the runs, results.json and the plot."""
    data: DataConfig = field(default_factory=lambda: DataConfig(unique_tokens=25_000, val_tokens=8_192))
    """The corpus and its budget (default: 25K unique tokens of the embedded Jane Austen corpus)."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(local_prior=5.0))
    """Model shared by AR and MDM (default: the 0.43M 'demo' size, with the local attention prior that lets
    MDM leave the unigram plateau early; see docs/study.md)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(eval=EvalConfig(every=0, mc_passes=4)))
    """Settings shared by all runs; objective and epochs are set per run."""
    ar_epochs: list[int] = field(default_factory=lambda: [1, 4, 12, 32])
    """Epoch counts of the AR runs (each its own run and schedule)."""
    mdm_epochs: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    """Epoch counts of the MDM runs."""
    workers: int = 0
    """Parallel runs, one CPU thread each; 0 = number of CPU cores."""
    samples: int = 2
    """Samples shown from the best run of each objective."""

    def __post_init__(self) -> None:
        check(all(e >= 1 for e in self.ar_epochs + self.mdm_epochs), "demo: every epoch count must be >= 1")
        check(self.workers >= 0, f"demo.workers={self.workers}: must be >= 0")


def demo(cfg: DemoConfig | None = None) -> dict:
    """Run the whole demo; returns the results dict also written to OUT/results.json."""
    from unmask.data.prepare import prepare
    from unmask.study import Job, run_jobs

    cfg = cfg or DemoConfig()
    out = Path(cfg.out)
    data_dir = out / "data"
    if not _same_data(data_dir, cfg.data):
        print(f"preparing {cfg.data.unique_tokens:,} unique tokens of the corpus → {data_dir}")
        prepare(cfg.data, data_dir, overwrite=True)
        for stale in out.glob("*-E*"):  # the demo's runs, trained on other data
            if (stale / "config.json").is_file():
                shutil.rmtree(stale)
    jobs = [
        Job(
            f"{objective}-E{epochs}",
            str(data_dir),
            str(out / f"{objective}-E{epochs}"),
            cfg.model,
            dataclasses.replace(cfg.train, objective=objective, epochs=epochs),
        )
        for objective, epochs in [("ar", e) for e in cfg.ar_epochs] + [("mdm", e) for e in cfg.mdm_epochs]
    ]
    run_jobs(jobs, cfg.workers, replace_stale=True)  # the demo's own folder: stale runs are replaced
    results = summarise(jobs, out)
    from unmask.report import plot_demo, print_demo_report

    plot_demo(results, out / "loss_vs_epochs.png")
    results["samples"] = demo_samples(results, cfg)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_demo_report(results, out)
    return results


def _same_data(data_dir: Path, data_cfg: DataConfig) -> bool:
    manifest = data_dir / "manifest.json"
    return manifest.exists() and json.loads(manifest.read_text())["config"] == to_dict(data_cfg)


def summarise(jobs: list, out: Path) -> dict:
    """Per run (a study.Job): best validation loss, the epoch where it occurred, and the final loss."""
    from unmask.run import Run

    runs = []
    for job in sorted(jobs, key=lambda j: (j.train.objective, j.train.epochs)):
        run = Run(job.out)
        evals = [r for r in run.metrics() if "val_loss" in r]
        best = min(evals, key=lambda r: r["val_loss"])
        budget = run.budget()
        runs.append(
            {
                "objective": job.train.objective,
                "epochs": job.train.epochs,
                "run": job.out,
                "tokens_seen": budget["tokens_to_see"],
                "params": budget["params"],
                "best_val_loss": best["val_loss"],
                "best_epoch": best["epoch"],
                "final_val_loss": run.final_result()["loss"],  # MDM: final_mc_passes (32) MC passes
                "last_val_loss": evals[-1]["val_loss"],  # on the curve's estimator, to compare with best_val_loss
                "curve": [(r["epoch"], r["val_loss"]) for r in evals],
            }
        )
    by_obj = {o: [r for r in runs if r["objective"] == o] for o in ("ar", "mdm")}
    best = {o: min(rs, key=lambda r: r["final_val_loss"]) for o, rs in by_obj.items() if rs}  # the best run
    from unmask.study.pipeline import unigram_cross_entropy

    return {
        "unigram": unigram_cross_entropy(Path(jobs[0].data)),
        "runs": runs,
        "best": {
            o: {k: r[k] for k in ("epochs", "final_val_loss", "best_val_loss", "best_epoch", "run")}
            for o, r in best.items()
        },
        "out": str(out),
    }


def demo_samples(results: dict, cfg: DemoConfig) -> dict[str, list[str]]:
    """Samples (temperature 1) from the best run of each objective, continuing the same prompt."""
    from unmask.sampling.text import generate_text

    length = min(48, cfg.data.seq_len - 16)  # MDM denoises prompt + answer in one window of seq_len
    return {
        objective: generate_text(best["run"], "She was", n=cfg.samples, length=length, temperature=1.0)
        for objective, best in results["best"].items()
    }
