"""Checkpoint folders named by trainers other than the HF Trainer: Pythia's `step1000`, OLMo's
`step1000-unsharded` (beside its sharded `step1000`), Megatron-LM's `iter_0001000`, Lightning's
`epoch=3-step=1200`, zero-padded `checkpoint-000100`; a `latest` link and a `final/` model beside
them. Each name that says its step is archived under it, end to end (run, status, export, the
dashboard); a name that says none is reported with what to do, never guessed.

(Names learnviz refuses, a step beyond what JSON holds, an archive name too long, are in
tests/test_names.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from learnviz.archive import step_from_file_name
from learnviz.checkpoints import step_from_name


@pytest.mark.parametrize("name, step", [
    ("checkpoint-100", 100), ("checkpoint-000100", 100), ("step_100", 100), ("step-100", 100),
    ("step100", 100), ("step1000-unsharded", 1000), ("global_step100", 100), ("iter_0001000", 1000),
    ("epoch=3-step=1200", 1200), ("step=1200", 1200), ("step0", 0),
    # names that do not say their step unambiguously: never read for one
    ("final", None), ("best", None), ("latest", None), ("last", None), ("epoch=3", None), ("epoch3", None),
    ("run3_1000", None), ("step1000-sharded", None), ("iter-1000", None), ("checkpoint-100-old", None),
    ("stepper100", None), ("epoch=3-step=1200-v1", None), ("step_", None),
])
def test_which_names_say_their_step(name, step):
    """The folder names and the archive file names that keep them read the same step: the archive
    side had a pattern of its own, which knew none of the names added to the scan's."""
    assert step_from_name(name) == step
    assert step_from_file_name(Path(f"{name}.h5")) == step
    assert step_from_file_name(Path(f"run-a__{name}.h5")) == step
