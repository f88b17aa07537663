"""The shape the design card fixes, checked against the real files."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {"celery", "flask", "workers", "beat", "dashboard", "kombu", "redis"}


def test_top_level_layout():
    for name in ("learnviz", "workers", "beat", "dashboard", "config", "tests", "pyproject.toml", "README.md",
                 "docs/archive.md", "bench/extract.py", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_core_imports_no_adapter_or_framework():
    for path in (ROOT / "learnviz").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in ADAPTERS, f"{path.relative_to(ROOT)} imports {n}"


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", text, re.S)[:2]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    first, second = _readme_commands()
    assert "learnviz demo" in first and "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.strip() in ci
    assert "redis-server" in ci and "torch==2.13.0" in ci
