"""WSD decay branches: one long run (the trunk) gives a run of every shorter epoch count.

Under `schedule: wsd` a run of E epochs is warm-up, the peak learning rate until its decay starts, then its own
decay. Up to that step it is the same computation as any longer WSD run with the same warm-up: the same
initial weights, data order (a function of seed and epoch) and noise (of seed and step). So a branch is the
trunk stopped at the branch's decay start (`stop_at_step`), copied into a new run directory whose budget is E
epochs, then resumed: bitwise the run a separate `train` of E epochs would give (tested), for the cost of its
decay alone. Its config.json records `forked_from` (trunk and step): WSD branches are labelled, never taken
for the cosine protocol.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from unmask.checkpoint import Checkpoints, atomic_write_text
from unmask.config import ConfigError
from unmask.model import count_params
from unmask.run import Run
from unmask.training.optim import Budget, decay_start


def branch_step(run: Run, epochs: int) -> int:
    """The step where an `epochs`-epoch branch of `run` leaves it: its own decay start."""
    cfg = dataclasses.replace(run.train_config, epochs=epochs)
    return decay_start(Budget.of(run.data(verify=False), cfg), cfg.optim)


def fork_run(trunk: str | Path, out: str | Path, epochs: int) -> Path:
    """Copy `trunk`, stopped at the decay start of an `epochs`-epoch branch, into the new run `out`; resuming `out`
    (train(None, out, resume=True)) trains the branch's decay. Returns `out`."""
    trunk, out = Path(trunk), Path(out)
    run = Run(trunk)
    cfg = run.train_config
    if cfg.optim.schedule != "wsd":
        raise ConfigError(
            f"run {trunk}: train.optim.schedule={cfg.optim.schedule!r}; only a WSD run has decay branches"
        )
    if not cfg.optim.warmup_steps:
        raise ConfigError(
            f"run {trunk}: a branch must share its trunk's warm-up; train it with train.optim.warmup_steps > 0"
        )
    if not 1 <= epochs < cfg.epochs:
        raise ConfigError(f"a branch of {trunk} needs fewer epochs than its {cfg.epochs} (got {epochs})")
    if out.exists():
        raise ConfigError(f"{out} exists; a branch is written into a new folder")
    data, branch = run.data(verify=False), dataclasses.replace(cfg, epochs=epochs)
    budget = Budget.of(data, branch)
    step = decay_start(budget, branch.optim)
    latest = Checkpoints(trunk).latest()
    if latest is None or latest["step"] != step:
        at = "no checkpoint" if latest is None else f"its latest checkpoint at step {latest['step']}"
        raise ConfigError(
            f"run {trunk} has {at}; a {epochs}-epoch branch leaves it at step {step}: train it with "
            f"--train.checkpoint.stop_at_step {step} first"
        )
    trunk_warmup = Budget.of(data, cfg).warmup_steps
    if budget.warmup_steps != trunk_warmup:
        raise ConfigError(f"a {epochs}-epoch branch of {trunk} is shorter than its {trunk_warmup} warm-up steps")
    tmp = out.with_name(f".{out.name}.fork-tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a fork of ours that a kill interrupted
    shutil.copytree(trunk, tmp, ignore=shutil.ignore_patterns(".lock", "tb"))
    config = {**run.config, "train": {**run.config["train"], "epochs": epochs}}
    config["forked_from"] = {"run": str(trunk.resolve()), "step": step, "trunk_epochs": cfg.epochs}
    atomic_write_text(
        tmp / "budget.json",
        json.dumps({**dataclasses.asdict(budget), "params": count_params(run.model_config)}, indent=2),
    )
    atomic_write_text(tmp / "config.json", json.dumps(config, indent=2))
    tmp.rename(out)
    return out
