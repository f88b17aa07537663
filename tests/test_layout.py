"""The shape the design card fixes, checked against the real files."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_a_wheel_install_finds_the_shipped_config(tmp_path):
    """A non-editable install (a wheel, no source tree beside it) still finds config/: the probe
    set, the hard examples and the default settings travel as data-files under share/learnviz."""
    source = tmp_path / "source"            # what the wheel is built from; setuptools writes build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source)
    for name in ("config", "learnviz", "workers", "beat", "dashboard"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_dir = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                    "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies come from this environment's site-packages (a plain path entry: its .pth
    # files, among them the editable install's mapping to this checkout, are not read)
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "h5py").is_dir())
    (site_dir / "deps.pth").write_text(f"{deps}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", *map(str, wheels.glob("learnviz-*.whl"))],
                   check=True, capture_output=True, timeout=300)
    run = lambda *a: subprocess.run([str(venv / "bin" / "learnviz"), *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=tmp_path, timeout=120)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import learnviz.settings as s; print(s.__file__); "
                            "print(s.SHIPPED_CONFIG_DIR)"], capture_output=True, text=True, cwd=tmp_path, check=True)
    module, config = where.stdout.split()
    assert module.startswith(str(venv)) and config == str(venv / "share" / "learnviz" / "config")
    probes = run("probes")
    assert probes.returncode == 0, probes.stderr
    assert "syllo_easy" in probes.stdout and "hard_examples" in probes.stdout
    shown = run("config")
    assert shown.returncode == 0, shown.stderr
    assert str(venv / "share" / "learnviz" / "config" / "learnviz.yaml") in shown.stdout


def test_tests_build_what_they_read():
    """No test reads a fixed path such as /tmp/...: such a test passes or skips depending on what an
    earlier run left on the machine, not on the code (the demo series is the `demo` fixture)."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "tests").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"[\"']/tmp/", line)]
    assert not offenders, offenders
