"""The demo series: real checkpoints in the HF Trainer layout, and learning visible on the probes."""

import json
import subprocess
import sys
from pathlib import Path

from learnviz.checkpoints import discover
from learnviz.readout import status_rows


def test_checkpoints_in_trainer_layout(demo):
    cks = discover(demo.checkpoints, settle_seconds=0)
    assert len(cks) >= 8 and all(c.complete for c in cks)
    for c in cks:
        names = {p.name for p in c.path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.json"} <= names
        state = json.loads((c.path / "trainer_state.json").read_text())
        assert state["global_step"] == c.step
        assert (any("loss" in row for row in state["log_history"])
                and any("eval_loss" in row for row in state["log_history"]))
    assert not [p for p in Path(demo.checkpoints).iterdir() if p.name.startswith(".tmp")]


def test_learning_is_visible_in_status(demo):
    rows = status_rows(demo.archive_dir())
    assert len(rows) >= 8 and all(r.stages == {"extract": "ok", "analysis": "ok", "geometry": "ok"} for r in rows)
    easy = [r.skills["syllo_easy"] for r in rows]
    hard = [r.skills["syllo_hard"] for r in rows]
    middle = len(rows) // 2
    assert easy[0] <= 0.6, easy
    assert easy[-1] >= 0.9, easy
    assert hard[middle] < easy[middle], (hard, easy)
    out = subprocess.run([sys.executable, "-m", "learnviz.cli", "status", "--archive", str(demo.archive_dir())],
                         capture_output=True, text=True, check=True).stdout
    assert "syllo_easy" in out and f"{easy[-1]:.2f}" in out


def test_a_hard_example_goes_from_wrong_to_right(demo):
    from learnviz import archive as arc
    archives = arc.list_archives(demo.archive_dir())
    first, last = (a.read("extract", ["correct", "probe_skill", "probe_ids"]) for a in (archives[0], archives[-1]))
    hard = [i for i, s in enumerate(first["probe_skill"]) if s == "hard_examples"]
    assert any(not first["correct"][i] and last["correct"][i] for i in hard)
