"""Run directories: atomic writes, training state for exact resume, loading back.

A run directory holds:
  config.json        resolved model + train config and the data folder
  budget.json        U, E, sequences, steps: the exact budget of this run
  tokenizer.json     copied from the data folder
  best.safetensors   weights at the best validation loss   (+ model_config.json)
  last.safetensors   weights at the last step
  state.pt           optimiser, step, RNG states: everything --resume needs
  metrics.jsonl      one JSON record per step / validation
  provenance.json    git SHA, versions, hardware
  tb/                TensorBoard scalars
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from unmask import __version__
from unmask.config import ConfigError, ModelConfig, TrainConfig, from_dict
from unmask.model import Transformer, load_model


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code


def provenance() -> dict[str, Any]:
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "git_sha": sha,
        "unmask": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "argv": sys.argv,
    }


def read_run_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run} is not a run directory (no config.json); train one with unmask train")
    return json.loads(path.read_text())


def load_run(run: str | Path, which: str = "best", device: str = "cpu") -> tuple[Transformer, dict[str, Any]]:
    """(model in eval mode, run config) for the `best` or `last` weights of a run."""
    config = read_run_config(run)
    weights = Path(run) / f"{which}.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{weights} does not exist; choose --which best|last or finish the run")
    return load_model(weights, device), config


def run_configs(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    return (
        from_dict(ModelConfig, {**config["model"], "size": None}),
        from_dict(TrainConfig, config["train"]),
    )
