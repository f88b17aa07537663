"""Shared fixtures: tiny real checkpoints (random init, seconds) and the trained demo series
(trained once per session, about a minute, shared by every test that needs learning)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import make_checkpoint, tiny_tokenizer  # noqa: E402

from learnviz.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def ckpt_root(tmp_path, tokenizer) -> Path:
    """Three tiny random-init GPT-2 checkpoints (steps 10, 20, 30) in the HF Trainer layout."""
    root = tmp_path / "run"
    for i, step in enumerate((10, 20, 30)):
        make_checkpoint(root / f"checkpoint-{step}", tokenizer, step=step, seed=i)
    return root


@pytest.fixture
def settings(ckpt_root, tmp_path) -> Settings:
    """Settings for a run over `ckpt_root`: no settle wait, the default probe set, on the CPU."""
    return load_settings(overrides={"checkpoints": str(ckpt_root), "archive": str(tmp_path / "archive"),
                                    "settle_seconds": 0.0, "device": "cpu"}, environ={})


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The trained demo series: checkpoints, archives and the settings they ran with.

    TEST_DEMO_OUT=DIR (for a developer iterating on demo tests): use DIR as the demo's
    folder; checkpoints already there are not trained again (`learnviz demo` reuses them), only
    brought through the pipeline."""
    from learnviz.demo.run import run_demo

    out = os.environ.get("TEST_DEMO_OUT") or tmp_path_factory.mktemp("demo")
    base = dataclasses.replace(load_settings(environ={}), demo_out=str(out))
    return run_demo(base, serve=False, progress=False)
