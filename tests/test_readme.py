"""The README's Python API example runs: its own code, with the tiny corpus and model of tests/conftest.py."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import TINY_DATA
from unmask.config import EvalConfig

README = Path(__file__).parents[1] / "README.md"
TINY = {
    "DataConfig(unique_tokens=25_000)": "TINY_DATA",
    'ModelConfig(size="demo")': 'ModelConfig(size="tiny")',
    "epochs=8": "epochs=1, batch_size=8, eval=EvalConfig(every=10, mc_passes=2, final_mc_passes=2)",
    "length=24": "length=8",
}
"""The README's settings → the fixtures' (seconds on a CPU instead of minutes); each must be in the example."""


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "import" in b]
    for setting, tiny in TINY.items():
        assert setting in example, f"the README's example no longer has {setting}: update TINY"
        example = example.replace(setting, tiny)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {"TINY_DATA": TINY_DATA, "EvalConfig": EvalConfig})
    printed = capsys.readouterr().out.splitlines()
    assert any(re.fullmatch(r"\d+\.\d+", line) for line in printed), printed  # the validation loss
    assert (tmp_path / "runs" / "mdm-E8" / "config.json").is_file()
