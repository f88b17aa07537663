"""The demo series: real checkpoints in the HF Trainer layout, and learning visible on the probes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def test_the_planted_fault_is_flagged_and_no_other_checkpoint(demo):
    from learnviz.demo.train import DemoConfig, planted_fault_step
    fault = planted_fault_step(DemoConfig(steps=demo.demo_steps, n_checkpoints=demo.demo_checkpoints,
                                          seed=demo.demo_seed))
    state = json.loads((Path(demo.checkpoints) / f"checkpoint-{fault}" / "trainer_state.json").read_text())
    assert state["learnviz_demo"]["planted_fault"] is True
    rows = status_rows(demo.archive_dir())
    flagged = {r.step: r.flags for r in rows if r.flags}
    assert list(flagged) == [fault], flagged
    assert {"accuracy_drop", "regression_burst"} <= set(flagged[fault])


def test_data_impact_finds_syllo_hard_the_skill_hard_chains_help_most(demo):
    from learnviz.demo.train import DemoConfig, planted_fault_step
    from learnviz.plots.sources import Run, impact_data
    from learnviz.readout import read_data_impact
    d = read_data_impact(demo.archive_dir())
    sources = [str(s) for s in d["sources"]]
    assert sorted(sources) == ["easy_chains", "hard_chains"]
    acc = d["accuracy"]
    j = [str(t) for t in acc["targets"]].index("syllo_hard")
    # Of every skill, syllo_hard is the one the hard chains help most (the demo's data story). Which
    # source ranks first for syllo_hard itself is not asked: easy chains come first and carry
    # syllo_hard's early chance flickers, and with 9 intervals that ranking followed the training's
    # float noise from one machine to another.
    hard = acc["beta"][sources.index("hard_chains")]
    assert int(np.argmax(hard)) == j, ([str(t) for t in acc["targets"]], hard, str(acc["note"]))
    fault = planted_fault_step(DemoConfig(steps=demo.demo_steps, n_checkpoints=demo.demo_checkpoints,
                                          seed=demo.demo_seed))
    assert d["excluded_steps"].tolist() == [fault]            # the broken checkpoint measures no training
    assert impact_data(Run(demo.archive_dir()))["skills"][j] == "syllo_hard"


def test_demo_out_of_a_real_run_keeps_its_checkpoints(tmp_path, capsys):
    """`learnviz demo --out DIR` deleted DIR/checkpoints whole to train into it: `--out` pointed at a
    project whose Trainer writes to checkpoints/ lost every checkpoint. A folder holding anything an
    earlier demo did not write is now left as it is, with an error naming it; an earlier demo's
    folder (its checkpoints say learnviz_demo in trainer_state.json) is still trained into again."""
    import json

    from learnviz import cli
    from learnviz.demo.run import not_the_demos
    real = tmp_path / "project" / "checkpoints" / "checkpoint-500"
    real.mkdir(parents=True)
    (real / "model.safetensors").write_bytes(b"weights")
    (real / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    assert cli.main(["demo", "--out", str(tmp_path / "project"), "--no-serve"]) == 2
    err = capsys.readouterr().err
    assert str(real.parent) in err and "checkpoint-500" in err and "--out" in err
    assert (real / "model.safetensors").read_bytes() == b"weights"

    earlier = tmp_path / "old-demo" / "checkpoints"
    (earlier / "checkpoint-40").mkdir(parents=True)
    (earlier / "checkpoint-40" / "trainer_state.json").write_text(json.dumps({"learnviz_demo": {"steps": 40}}))
    (earlier / ".tmp-checkpoint-80").mkdir()
    (earlier / "data_log.jsonl").write_text("")
    assert not_the_demos(earlier) is None and not_the_demos(tmp_path / "absent") is None
    (earlier / "notes.txt").write_text("mine")
    assert not_the_demos(earlier) == "notes.txt"
