"""The dashboard tests' run: what it holds, how it is built, and a real server's helpers.

Three random-init tiny GPT-2 checkpoints (steps 10, 20, 30) and a broken one (step 25, a
config.json that is not JSON, so its extraction is recorded as failed with a reason); six probes
in three skills and two hard examples, one of which carries HTML in its prompt and expected answer
(escaping). `learnviz.pipeline.update` archives them, runs the CPU stages (UMAP included: >= 5
probes) and draws every figure, GIFs included: about 30 s, most of it UMAP's first compilation.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from helpers import make_checkpoint, tiny_tokenizer

STEPS = (10, 20, 30)        # archived checkpoints whose every stage succeeds
BROKEN_STEP = 25            # archived with a failed extraction
XSS_PROMPT = "<script>alert('probe')</script> Do cats bark?"
XSS_EXPECTED = "<b>No</b>"
PROBES = [   # (prompt, expected, skill, category)
    ("All cats are dogs. All dogs are pets. What follows about cats and pets?", "All cats are pets.",
     "easy", "barbara"),
    ("No cats are dogs. All dogs are pets. What follows about cats and pets?", "Nothing follows.",
     "hard", "negation"),
    ("Some cats are dogs. All dogs are pets. What follows about cats and pets?", "Some cats are pets.",
     "easy", "darii"),
    ("All owls are birds. No birds are fish. What follows about owls and fish?", "No owls are fish.",
     "medium", "celarent"),
    ("Some bees are insects. No insects are mammals. What follows?", "Some bees are not mammals.", "medium", "ferio"),
    ("All ants are bugs. All bugs are small. What follows about ants?", "All ants are small.", "easy", "barbara"),
]
HARD_EXAMPLES = """\
examples:
  - {id: xss_1, prompt: %s, expected: %s, category: negation}
  - {id: double_neg_1, prompt: "It is not true that no birds fly. Do some birds fly?", expected: "Yes",
     category: double_negation}
""" % (json.dumps(XSS_PROMPT), json.dumps(XSS_EXPECTED))
N_PROBES = len(PROBES) + 2


def build(root: Path, probes=PROBES, hard_examples: str = HARD_EXAMPLES, gifs: bool = True) -> Path:
    """Build the run under `root` (other probes or hard examples: a variant of it); returns its archive folder."""
    from learnviz import pipeline
    from learnviz.settings import load_settings

    tok = tiny_tokenizer()
    for i, step in enumerate(STEPS):
        make_checkpoint(root / "run" / f"checkpoint-{step}", tok, step=step, seed=i, loss=2.0 - 0.4 * i)
    broken = make_checkpoint(root / "run" / f"checkpoint-{BROKEN_STEP}", tok, step=BROKEN_STEP, seed=9)
    (broken / "config.json").write_text("{not json")
    (root / "probes.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "prompt": p, "expected": e, "skill": s, "category": c}) + "\n"
        for i, (p, e, s, c) in enumerate(probes)))
    (root / "hard.yaml").write_text(hard_examples)
    settings = load_settings(overrides={
        "checkpoints": str(root / "run"), "archive": str(root / "archive"), "probes": str(root / "probes.jsonl"),
        "hard_examples": str(root / "hard.yaml"), "settle_seconds": 0.0, "device": "cpu"}, environ={})
    report = pipeline.update(settings, progress=False, figures=pipeline.Figures(gifs=gifs))
    assert len(report.done) == len(STEPS) and len(report.failed) == 1, report
    assert not report.visualizations["failed"], report.visualizations
    return root / "archive"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learnviz_command() -> list[str]:
    """The installed `learnviz` script of this interpreter (else `python -m learnviz.cli`)."""
    script = Path(sys.executable).parent / "learnviz"
    return [str(script)] if script.exists() else [sys.executable, "-m", "learnviz.cli"]


def make_app(archive_dir: Path):
    """The app as `learnviz serve --archive DIR` builds it: from the learnviz settings."""
    from dashboard import create_app
    from learnviz.settings import load_settings

    settings = load_settings(overrides={"archive": str(archive_dir)}, environ={})
    return create_app(settings, test_config={"TESTING": True})
