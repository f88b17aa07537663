"""Acceptance on real runs (slow): every figure of the trained demo series, and `learnviz embed
--checkpoint latest` collecting a real checkpoint's embeddings before drawing its UMAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learnviz import archive as arc
from learnviz.cli import main
from learnviz.visualize import generate

from .test_visualize import GIFS, LATEST, RUN_LEVEL, gif_frames, not_blank, per_checkpoint

pytestmark = pytest.mark.slow


def test_demo_has_every_figure(demo):
    steps = [a.step for a in arc.list_archives(demo.archive_dir())]
    result = generate(demo, gifs=True)       # current already if the demo drew them: then nothing to do
    assert result["status"] == "ok" and not result["failed"], result
    out = demo.archive_dir() / "visualizations"
    for name in RUN_LEVEL + ["data_impact.png"] + per_checkpoint(steps) + LATEST:
        not_blank(out / name)
    for name in GIFS:
        frames = gif_frames(out / name)
        assert len(frames) == len(steps)
        assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    with Image.open(out / "hard_example_board.png") as im:
        assert im.height > 500                 # one row per hard example of the default set


def test_embed_latest_collects_then_draws(ckpt_root, tmp_path, capsys):
    archive = tmp_path / "archive"
    rc = main(["-q", "embed", "--checkpoints", str(ckpt_root), "--archive", str(archive), "--device", "cpu",
               "--settle-seconds", "0"])
    assert rc == 0
    assert sorted(p.name for p in archive.glob("*.h5")) == ["checkpoint-30.h5", "series.h5"]   # the latest only
    assert arc.Archive(archive / "checkpoint-30.h5").stage("geometry").ok
    not_blank(Path(archive) / "visualizations" / "umap_30.png")
    assert "umap_30.png" in capsys.readouterr().out
