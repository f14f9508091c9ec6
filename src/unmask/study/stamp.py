"""What produced a committed study result: commits, command, config hash, machine.

`unmask study report` writes OUT/report/stamp.json beside the report, and the report's first paragraph says
the same. `unmask study verify REPORT_DIR` rebuilds the study from the stamp alone, so a report folder copied
into docs/ can be re-checked from a clean clone.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from unmask.config import ConfigError, to_dict
from unmask.study.grid import StudyConfig

STAMP = "stamp.json"


def head_commit() -> tuple[str | None, bool]:
    """The checkout's commit and whether its tracked files differ from it (None outside a git checkout)."""
    here = Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=here)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    return sha, bool(sha and git("status", "--porcelain", "--untracked-files=no", "--", "src"))


def make_stamp(study: StudyConfig, config_path: Path, rows: list[dict], provenance: dict, unigram: dict) -> dict:
    """The stamp of a report: everything `study verify` needs to re-run its points, and what to cite."""
    sha, dirty = head_commit()
    config_text = config_path.read_bytes()
    return {
        "study": to_dict(study),
        "config_file": str(config_path),
        "config_sha256": hashlib.sha256(config_text).hexdigest(),
        "commands": [f"unmask study {action} {config_path}" for action in ("run", "fit", "report")],
        "runs_trained_at": dict(Counter(r.get("git_sha") or "unknown" for r in rows).most_common()),
        "report_commit": sha,
        "report_commit_dirty": dirty,
        "machine": {k: provenance.get(k) for k in ("platform", "cpu", "cpu_count", "python", "torch", "cuda")},
        "date": datetime.date.today().isoformat(),
        "unigram": {str(U): level for U, level in unigram.items()},
    }


def stamp_text(stamp: dict) -> str:
    """The stamp as the report's opening paragraph."""
    trained = ", ".join(f"{sha[:10]} ({n} runs)" for sha, n in stamp["runs_trained_at"].items())
    machine = stamp["machine"]
    commit = (stamp["report_commit"] or "unknown")[:10] + (
        " with uncommitted changes" if stamp["report_commit_dirty"] else ""
    )
    return (
        f"Produced by `{' && '.join(stamp['commands'])}` (config SHA-256 {stamp['config_sha256'][:12]}); runs "
        f"trained at commit {trained}; report written at {commit} on {stamp['date']}; machine: "
        f"{machine['platform']}, {cpu_of(machine)}{machine['cpu_count']} CPU cores, torch {machine['torch']}, "
        f"{machine['cuda'] or 'no GPU'}. Re-check any point with `unmask study verify <this folder>`."
    )


def cpu_of(machine: dict) -> str:
    return f"{machine['cpu']}, " if machine.get("cpu") else ""  # stamps before it was recorded: none


def read_stamp(report_dir: Path) -> dict[str, Any]:
    from unmask.run import read_json

    stamp = read_json(Path(report_dir) / STAMP, "the stamp `unmask study report` writes; write the report again")
    if not isinstance(stamp, dict) or not isinstance(stamp.get("study"), dict):
        raise ConfigError(f"{Path(report_dir) / STAMP}: no study config in it; write the report again")
    return stamp
