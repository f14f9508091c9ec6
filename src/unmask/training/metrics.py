"""metrics.jsonl (one strict-JSON record per line) and TensorBoard scalars."""

from __future__ import annotations

import json
import math
from pathlib import Path

from unmask.checkpoint import atomic_write_text
from unmask.run import read_metrics


def strict(record: dict) -> dict:
    """Non-finite floats become null: JSON has no NaN, and every JSON reader must accept the file."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


class MetricsWriter:
    """Appends records to OUT/metrics.jsonl (flushed per record) and, optionally, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool = True):
        self.path = Path(out) / "metrics.jsonl"
        self.file = open(self.path, "a")
        self.tb = _tensorboard(out) if tensorboard else None

    def log(self, record: dict) -> None:
        self.file.write(json.dumps(strict(record), allow_nan=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(out: Path, step: int) -> None:
    """Keep only records up to `step`, the checkpoint a run resumes from, so the log has no duplicates.

    The file is rewritten only when something goes (later records, a torn line): a finished run
    that is resumed leaves its log untouched.
    """
    path = Path(out) / "metrics.jsonl"
    records = read_metrics(out)
    keep = [json.dumps(r) for r in records if r["step"] <= step]
    if path.exists() and len(keep) < len(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a stripped install should still train
        return None
    return SummaryWriter(str(Path(out) / "tb"))
