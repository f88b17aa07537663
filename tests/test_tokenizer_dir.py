"""Checkpoints saved without tokenizer files (the Trainer saves them only when given a tokenizer):
--tokenizer DIR, the run folder and its parent, and the tokenizer as part of the checkpoint's key."""

from __future__ import annotations

import json

import pytest
from helpers import learnviz_run, make_checkpoint, run_settings, write_small_probes

from learnviz import archive as arc
from learnviz import cli
from learnviz.checkpoints import TOKENIZER_FILES, fingerprint, inspect, tokenizer_dir
from learnviz.results import EXTRACT


def _bare_checkpoint(path, tokenizer, step):
    """A checkpoint folder as the Trainer writes it when it was given no tokenizer."""
    make_checkpoint(path, tokenizer, step=step)
    for name in TOKENIZER_FILES:
        (path / name).unlink(missing_ok=True)
    return path


@pytest.fixture
def bare_run(tmp_path, tokenizer):
    root = tmp_path / "out" / "run"
    _bare_checkpoint(root / "checkpoint-4", tokenizer, 4)
    tok = tmp_path / "tok"
    tokenizer.save_pretrained(tok)
    return root, tok, write_small_probes(tmp_path / "probes.jsonl", every=50)


def test_without_a_tokenizer_the_error_names_the_flag(bare_run, capsys):
    root, _, probes = bare_run
    rc = cli.main(["-q", "run", "--checkpoints", str(root), "--probes", str(probes), "--hard-examples", "",
                   "--settle-seconds", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 1 and "tokenizer files are missing" in out and "--tokenizer DIR" in out
    # a --tokenizer folder without files is named as such (the same files, none: the failure is
    # current, so ask for it again)
    report = learnviz_run(run_settings(root, probes, tokenizer=str(root), retry_failed=True), cpu_stages=False,
                          progress=False)
    (path, reason), = report.failed
    assert "missing in the --tokenizer folder" in reason and f"{root}" in reason


def test_tokenizer_flag_and_fallback_folders(bare_run, tokenizer):
    root, tok, probes = bare_run
    ck = root / "checkpoint-4"
    assert tokenizer_dir(ck) is None and tokenizer_dir(ck, tok) == tok
    report = learnviz_run(run_settings(root, probes, tokenizer=str(tok)), cpu_stages=False, progress=False)
    assert report.ok and len(report.done) == 1
    a = arc.Archive(report.done[0])
    assert a.stage(EXTRACT).ok and len(a.read(EXTRACT, ["correct"])["correct"]) == 10
    # the same tokenizer again: current, nothing redone
    again = learnviz_run(run_settings(root, probes, tokenizer=str(tok)), cpu_stages=False, progress=False)
    assert not again.done and len(again.current) == 1
    # the tokenizer is part of the key: files in the run's parent folder, no flag -> found there; the
    # key is the same as with the flag (same files), and a changed file changes it
    tokenizer.save_pretrained(root.parent)
    assert tokenizer_dir(ck) == root.parent
    assert fingerprint(inspect(ck, settle_seconds=0)) == fingerprint(inspect(ck, settle_seconds=0), tok)
    cfg = json.loads((root.parent / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 77
    (root.parent / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert fingerprint(inspect(ck, settle_seconds=0)) != fingerprint(inspect(ck, settle_seconds=0), tok)
    redone = learnviz_run(run_settings(root, probes), cpu_stages=False, progress=False)
    assert redone.ok and len(redone.done) == 1
    # the run folder comes before its parent; the checkpoint's own files before either
    tokenizer.save_pretrained(root)
    assert tokenizer_dir(ck) == root
    tokenizer.save_pretrained(ck)
    assert tokenizer_dir(ck, tok) == ck
