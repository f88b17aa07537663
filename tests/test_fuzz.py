"""Random byte-level corruptions of real files, fed to `learnviz run`, `status` and the dashboard.

Bounded: a fixed number of seeded cases (no time limit, no open-ended search). Each case damages
one file of the middle checkpoint of a real three-checkpoint run (its weights, its config, its
tokenizer) or one real archive, then checks the promise of the README's reliability section: no
traceback and no crash; the corrupted item is reported as failed (or unreadable) with a reason that
names it; every good item is still archived.

The corruptions are random but chosen to be detectable: bytes inside the safetensors header or a
cut, JSON that no longer parses, an HDF5 superblock overwritten or a file cut short. (Bytes flipped
inside a tensor's data give a valid, different checkpoint: nothing can tell that from training.)
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import pytest

from learnviz import archive as arc
from learnviz import pipeline, readout
from learnviz.cli import main
from learnviz.results import EXTRACT

SEEDS = range(3)          # cases per kind of file: bounded, and the same on every run
TARGET = 20               # the middle checkpoint of (10, 20, 30)


def _run(settings, capsys) -> tuple[int, str, str]:
    code = main(["-q", "run", "--checkpoints", settings.checkpoints,
                 "--archive", settings.archive, "--settle-seconds", "0", "--device", "cpu"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _status(settings, capsys) -> tuple[int, str]:
    code = main(["status", "--archive", settings.archive, "--json"])
    return code, capsys.readouterr().out


def _corrupt_weights(path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    kind = rng.choice(["header-bytes", "length-field", "cut"])
    if kind == "header-bytes":            # garbage inside the JSON header
        for _ in range(rng.randint(4, 32)):
            data[8 + rng.randrange(n)] = rng.randrange(256)
        try:
            json.loads(bytes(data[8:8 + n]))
            data[8] = ord("}")            # the random bytes happened to keep it valid: break it for sure
        except ValueError:
            pass
    elif kind == "length-field":          # the header's length is garbage (as text overwriting it)
        data[:8] = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    else:                                 # cut short, as a crashed save leaves it
        data = data[: rng.choice([0, 4, rng.randrange(8, len(data) - 1)])]
    path.write_bytes(bytes(data))
    return kind


def _corrupt_json(path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    while True:
        broken = bytearray(data)
        if rng.random() < 0.5:
            broken = broken[: rng.randrange(1, len(broken) - 1)]
            kind = "cut"
        else:
            for _ in range(rng.randint(1, 16)):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            kind = "bytes"
        try:
            json.loads(bytes(broken).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            path.write_bytes(bytes(broken))
            return kind


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tokenizer):
    """A real run of three tiny checkpoints, archived once (every stage), kept pristine."""
    from helpers import make_checkpoint

    from learnviz.settings import load_settings

    root = tmp_path_factory.mktemp("fuzz")
    for i, step in enumerate((10, 20, 30)):
        make_checkpoint(root / "run" / f"checkpoint-{step}", tokenizer, step=step, seed=i)
    settings = load_settings(environ={}, overrides={"checkpoints": str(root / "run"),
                                                    "archive": str(root / "archive"),
                                                    "settle_seconds": 0.0, "device": "cpu"})
    report = pipeline.update(settings, require_checkpoints=True, progress=False)
    assert report.ok and len(report.done) == 3
    return root


@pytest.fixture
def fresh(clean_run, tmp_path):
    """A copy of the clean run, its archives included."""
    from learnviz.settings import load_settings

    shutil.copytree(clean_run / "run", tmp_path / "run")
    shutil.copytree(clean_run / "archive", tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    return load_settings(environ={}, overrides={"checkpoints": str(tmp_path / "run"),
                                                "archive": str(tmp_path / "archive"),
                                                "settle_seconds": 0.0, "device": "cpu"})


def _dashboard_failures(settings) -> list[dict]:
    from dashboard import create_app

    client = create_app(test_config={"LEARNVIZ_ARCHIVE": settings.archive, "TESTING": True}).test_client()
    for url in ("/", "/checkpoints", f"/checkpoints/{TARGET}", "/hard-examples", "/api/status.json",
                f"/api/checkpoints/{TARGET}.json", "/api/history.json", "/api/hard_examples.json"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.get_data(as_text=True)[:300])
    return client.get("/api/status.json").get_json()["failures"]


def _good_ones_archived(settings):
    by_step = {a.step: a for a in arc.list_archives(settings.archive)}
    for step in (10, 30):
        assert readout.extracted(by_step[step]), f"checkpoint {step} lost its archive"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_corrupted_checkpoint_file_fails_alone(fresh, capsys, target, seed):
    settings = fresh
    path = Path(settings.checkpoints) / f"checkpoint-{TARGET}" / target
    corrupt = _corrupt_weights if target.endswith(".safetensors") else _corrupt_json
    kind = corrupt(path, random.Random(f"{target}:{seed}"))
    code, out, err = _run(settings, capsys)
    assert "Traceback" not in out + err, (kind, err)
    assert code == 1, (kind, out, err)                        # a failure stands, and is said
    _good_ones_archived(settings)
    (a,) = [a for a in arc.list_archives(settings.archive) if a.step == TARGET]
    info = a.stage(EXTRACT)
    assert info is not None and not info.ok, (kind, info)
    named = "tokenizer" if target == "tokenizer.json" else target
    assert named in info.reason, (kind, info.reason)
    code, text = _status(settings, capsys)
    rows = {r["step"]: r for r in json.loads(text)}
    assert code == 0 and rows[TARGET]["stages"][EXTRACT] == "failed" and named in rows[TARGET]["reason"]
    assert rows[10]["stages"][EXTRACT] == rows[30]["stages"][EXTRACT] == "ok"
    failures = _dashboard_failures(settings)
    assert [f["step"] for f in failures] == [TARGET] and named in failures[0]["reason"]


def _corrupt_archive(path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        path.write_bytes(bytes(data[: rng.randrange(0, len(data) // 2)]))
        return "cut"
    for i in range(8):                   # the HDF5 signature, then more of the superblock
        data[i] = rng.randrange(256) if data[i] != 0 else 1
    for _ in range(rng.randint(0, 32)):
        data[rng.randrange(8, 96)] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return "superblock"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_corrupted_archive_is_reported_then_rebuilt_without_loss(fresh, capsys, seed):
    settings = fresh
    path = readout.series(settings.archive)[1].path
    assert path.name == f"checkpoint-{TARGET}.h5"
    kind = _corrupt_archive(path, random.Random(f"archive:{seed}"))
    damaged = path.read_bytes()

    code, text = _status(settings, capsys)
    rows = {r["step"]: r for r in json.loads(text)}
    assert code == 0 and rows[TARGET]["stages"] == {"archive": "unreadable"}, (kind, rows.get(TARGET))
    assert path.name in rows[TARGET]["reason"]
    failures = _dashboard_failures(settings)
    assert [f["step"] for f in failures] == [TARGET], (kind, failures)

    code, out, err = _run(settings, capsys)               # the checkpoint is still there: rebuilt
    assert "Traceback" not in out + err and code == 0, (kind, out, err)
    assert (path.parent / (path.name + ".corrupt")).read_bytes() == damaged     # nothing lost
    assert all(readout.stage_ok(a, s) for a in arc.list_archives(settings.archive)
               for s in ("extract", "analysis", "geometry"))
    assert _dashboard_failures(settings) == []
