"""Readers of an archive folder they cannot write: the results copied to another machine and
mounted read-only (a read-only bind, NFS or a snapshot). `learnviz status`, the notebook API, the
dashboard and an export to another folder read it; the caches they would keep (the folder's index,
the board mark) are best effort and must not stop them.

The folder is made read-only for real, with a read-only bind mount in a mount namespace of the
test's own (`unshare`; as root, or through a user namespace): chmod does not stop root, and a
read-only mount refuses even what a folder's permissions let through (removing a file that is not
there fails with EROFS)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import learnviz_run as run
from helpers import write_small_probes

REPO = Path(__file__).resolve().parents[1]


def _unshare() -> list[str] | None:
    """The unshare command that gives this process a mount namespace of its own, or None."""
    if shutil.which("unshare") is None:
        return None
    for cmd in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        if subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    return None


def _read_only(source: Path, mount: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the Python `code` with `source` bind-mounted read-only at `mount`."""
    cmd = _unshare()
    if cmd is None:
        pytest.skip("no mount namespace here (unshare --mount refused)")
    script = tmp_path / "readers.py"
    script.write_text(textwrap.dedent(code))
    shell = (f'mount --bind "{source}" "{mount}" && mount -o remount,ro,bind "{mount}" && '
             f'! touch "{mount}/.probe" 2>/dev/null && exec "{sys.executable}" "{script}"')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*cmd, "sh", "-c", shell], env=env, capture_output=True, text=True, timeout=300)


def test_every_reader_works_on_a_read_only_copy_of_the_results(settings, tmp_path):
    settings = dataclasses.replace(settings, probes=str(write_small_probes(tmp_path / "probes.jsonl")),
                                   hard_examples="")
    run(settings, progress=False)
    copy = tmp_path / "downloaded"          # another file system's copy: the index's entries are stale
    shutil.copytree(settings.archive_dir(), copy)
    mount, out = tmp_path / "ro", tmp_path / "export"
    mount.mkdir()
    result = _read_only(copy, mount, f"""
        import subprocess, sys
        for args in (["status"], ["status", "--json"], ["status", "--flags", "all"],
                     ["export", "parquet", "--out", {str(out / "tables")!r}],
                     ["export", "npz", "--out", {str(out / "npz")!r}]):
            p = subprocess.run([sys.executable, "-m", "learnviz.cli", *args, "--archive", {str(mount)!r}],
                               capture_output=True, text=True)
            assert p.returncode == 0 and "Traceback" not in p.stderr, (args, p.stdout, p.stderr)
            print(args[0], "ok")

        import learnviz
        r = learnviz.open_run({str(mount)!r})
        assert len(r.checkpoints) == 3 and len(r.probes("latest")) and r.steps == [10, 20, 30]

        from dashboard.app import create_app
        client = create_app(test_config={{"LEARNVIZ_ARCHIVE": {str(mount)!r}, "TESTING": True}}).test_client()
        for url in ("/", "/dynamics", "/checkpoints", "/checkpoints/30", "/hard-examples", "/api/status.json",
                    "/api/history.json", "/api/checkpoints/30.json", "/api/runs/_root/metrics.json",
                    "/api/runs/_root/umap.json", "/api/runs/_root/board.json"):
            assert client.get(url).status_code == 200, url
        print("readers ok")
    """, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "readers ok" in result.stdout
    assert (out / "tables" / "checkpoints.parquet").exists() and (out / "npz" / "embeddings").is_dir()
