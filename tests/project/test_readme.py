"""The README's library example runs as printed and does what it says."""

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def test_readme_example_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves a file
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "global:" in out
    assert "3.weight:  70.01% of       4,608 zero" in out  # round(0.7 * 4608) zeros


def test_readme_test_command_matches_ci():
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "python -m pytest tests" in README.read_text()
    assert "\npython -m pytest tests\n" in ci
