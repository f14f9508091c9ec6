"""Layers point one way (pyproject.toml [tool.importlinter]): the contract holds, and it bites."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency: pip install -e '.[dev]'")


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(LINT), str(config), "--no-cache"], capture_output=True, text=True, env=env, cwd=package_parent
    )


def test_the_package_keeps_its_layers():
    result = lint_imports(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unmask layers KEPT" in result.stdout


@pytest.mark.parametrize(
    "scratch, upward",
    [
        ("sampling/_scratch.py", "unmask.training"),  # side by side: sampling never imports training
        ("evaluation/_scratch.py", "unmask.sampling"),
        ("model.py", "unmask.objectives"),  # the model sits below the objectives
        ("data/_scratch.py", "unmask.model"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, scratch, upward):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "unmask", copy / "unmask", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "unmask" / scratch, "a") as f:  # a new scratch module, or a line added to a real one
        f.write(f"\nimport {upward}  # deliberately upward\n")
    result = lint_imports(copy, ROOT / "pyproject.toml")
    assert result.returncode != 0
    scratch_module = "unmask." + scratch.removesuffix(".py").replace("/", ".")
    assert "unmask layers BROKEN" in result.stdout
    assert f"- {scratch_module} -> {upward} (l." in result.stdout, result.stdout
