"""docs/integrations.md's examples run: its command lines parse with the real parser, its status
files ingest without a problem into what the page says `learnviz status` prints. (Its
LearnvizCallback example runs in tests/test_hf_callback.py.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from helpers import doc_blocks

from learnviz import cli, readout, status_files

DOC = "integrations.md"


def test_every_command_line_parses():
    lines = [line for block in doc_blocks(DOC, "test: commands") for line in block.splitlines() if line.strip()]
    assert len(lines) >= 8
    parser = cli.build_parser()
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "learnviz", line
        args = parser.parse_args(words[1:])          # SystemExit on an unknown flag
        assert args.command in ("run", "status", "visualize"), line
    watch = parser.parse_args(shlex.split(next(x for x in lines if "--watch" in x))[1:])
    assert watch.watch and watch.scan_interval == 30.0 and watch.tokenizer == "runs/tokenizer"


def test_status_file_examples_ingest_into_the_status_lines(tmp_path):
    status = tmp_path / "status"
    status.mkdir()
    for name in status_files.FILES:
        (block,) = doc_blocks(DOC, f"file: {name}")
        json.loads(block)
        (status / name).write_text(block)
    got = status_files.ingest(status, tmp_path / "archive")
    assert got.appended == list(status_files.FILES) and not got.malformed
    text = (Path(__file__).resolve().parents[1] / "docs" / DOC).read_text()
    shown = re.search(r"`learnviz status` then ends with:\n\n```text\n(.*?)```", text, re.S).group(1)
    assert readout.format_training_status(readout.training_status(tmp_path / "archive")) == shown.splitlines()
