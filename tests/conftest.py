"""Shared fixtures: a tiny prepared slice of the embedded corpus, a tiny model, and tiny trained runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from unmask.config import DataConfig, ModelConfig, TrainConfig
from unmask.data import TokenData, prepare

TINY_DATA = DataConfig(
    unique_tokens=3_000, val_tokens=1_000, vocab_size=384, seq_len=32, tokenizer_train_bytes=400_000, seed=0
)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)  # bitwise-reproducible CPU runs, and fair on 2-core CI


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    return prepare(TINY_DATA, tmp_path_factory.mktemp("data") / "tiny", quiet=True)


@pytest.fixture(scope="session")
def tiny_data(tiny_data_dir) -> TokenData:
    return TokenData(tiny_data_dir)


def tiny_model_config(data: TokenData, causal: bool = True) -> ModelConfig:
    return ModelConfig(size="tiny", vocab_size=data.vocab_size, seq_len=data.seq_len, causal=causal)


def tiny_train_config(**overrides) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=3e-3, eval_every=10, eval_mc_passes=2, final_mc_passes=2, eval_batch_size=32)
    return TrainConfig.from_flat(**{**base, **overrides})


@dataclass(frozen=True)
class TinyRuns:
    """A tiny AR and a tiny MDM run and the copy of the tiny data they were trained on, all under `root`."""

    root: Path
    data: Path
    runs: dict[str, Path]
    """'ar' -> root/tiny-ar, 'mdm' -> root/tiny-mdm (a server names them by their folders)."""


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, tiny_data_dir) -> TinyRuns:
    """One epoch of a tiny AR and a tiny MDM run (tiny_model_config, tiny_train_config(epochs=1)), trained once for
    the whole session and shared by every suite that needs a trained run: never change them; a test that damages,
    resumes or edits a run works on its own copy (shutil.copytree)."""
    from unmask.training import train

    torch.set_num_threads(1)  # set up before the first case's _single_thread
    root = tmp_path_factory.mktemp("trained_runs")
    data_dir = Path(shutil.copytree(tiny_data_dir, root / "data"))  # its own copy: suites snapshot `root` whole
    data = TokenData(data_dir)
    runs = {
        objective: train(
            data_dir,
            root / f"tiny-{objective}",
            tiny_model_config(data, causal=objective == "ar"),
            tiny_train_config(objective=objective, epochs=1),
            quiet=True,
            tensorboard=False,
        )
        for objective in ("ar", "mdm")
    }
    return TinyRuns(root, data_dir, runs)
