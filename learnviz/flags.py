"""The command-line flags every learnviz command shares, in one public place.

learnviz/cli.py and the adapters' commands (workers/cli.py, dashboard/cli.py) build their parsers
with these, so a flag is written once and means the same everywhere. A flag's `dest` is the name
of the setting it overrides (learnviz.settings); `settings_from` turns parsed flags into settings.
"""

from __future__ import annotations

import argparse

from .errors import LearnvizError
from .settings import Settings, load_settings

EPILOG = """\
Settings come from defaults, then config/learnviz.yaml (or `learnviz --config FILE COMMAND`: before
the command; or $LEARNVIZ_CONFIG), then LEARNVIZ_<KEY> environment variables, then these flags.
`learnviz config` shows them all.
"""
FORMATTER = argparse.RawDescriptionHelpFormatter


def examples(*lines: str, epilog: str = EPILOG) -> str:
    """A command's epilog: worked examples (each a whole command line), then `epilog`."""
    return "Examples:\n" + "".join(f"  {line}\n" for line in lines) + "\n" + epilog

# Every flag whose dest is a setting: `settings_from` passes these on when a command has them.
SETTING_FLAGS = ("checkpoints", "archive", "probes", "hard_examples", "tokenizer", "base_model", "device", "dtype",
                 "status_dir", "batch_size", "layers", "settle_seconds", "retry_failed", "trust_remote_code",
                 "demo_out", "demo_steps", "demo_checkpoints", "demo_seed", "broker_url", "cpu_concurrency",
                 "scan_interval", "dashboard_host", "dashboard_port", "dashboard_allowed_hosts")


def add_paths(p: argparse.ArgumentParser, *, checkpoints: bool = True) -> None:
    """--checkpoints DIR and --archive DIR."""
    if checkpoints:
        p.add_argument("--checkpoints", metavar="DIR",
                       help="folder holding checkpoint-N/ (or step_N/, stepN/, iter_N/, epoch=E-step=N/, ...) folders")
    p.add_argument("--archive", metavar="DIR", help="archive folder (default: <checkpoints>/learnviz-archive)")


def _layers(text: str) -> list:
    return [int(x) if x.lstrip("-").isdigit() else x for x in text.split(",")]


def add_extract_flags(p: argparse.ArgumentParser, *, status_dir: bool = True) -> None:
    """The flags that shape extraction: probe set, device, dtype, batch, layers, settling.
    `status_dir`: also --status-dir, which only the embedded pipeline reads (`learnviz run` and the
    figure commands ingest the status files; the distributed mode does not)."""
    p.add_argument("--probes", metavar="FILE", help="probe file, JSONL/JSON/YAML (default: the SYLLO probe set)")
    p.add_argument("--hard-examples", metavar="FILE",
                   help="hard-example YAML (default: config/hard_examples.yaml; '' for none)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer folder for checkpoints saved without one "
                        "(default: the run folder's or its parent's)")
    if status_dir:
        p.add_argument("--status-dir", metavar="DIR",
                       help="folder of the training's status files (training_status.json, ...) to ingest")
    p.add_argument("--base-model", metavar="DIR",
                   help="base model folder of PEFT adapter checkpoints (default: the one their adapter config names)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--batch-size", type=int, metavar="N", help="probes per forward pass (default: 64)")
    p.add_argument("--layers", metavar="L,L", type=_layers,
                   help="layers to pool, e.g. mid,last or 0,6,-1 (default: mid,last)")
    p.add_argument("--settle-seconds", type=float, metavar="S",
                   help="skip checkpoints changed less than S seconds ago (default: 10)")
    p.add_argument("--retry-failed", action="store_true", default=None, help="re-run stages recorded as failed")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="let checkpoints run their own Python code (only for checkpoints you trust)")


def add_checkpoint_choice(p: argparse.ArgumentParser, default: str | None, help_default: str) -> None:
    """--checkpoint latest|STEP|all."""
    p.add_argument("--checkpoint", default=default, metavar="latest|STEP|all",
                   help=f"which checkpoint (default: {help_default})")


# settings whose flag is not --<setting-name> (an error names the flag the user typed)
FLAG_NAMES = {"scan_interval": "--interval", "demo_out": "--out", "demo_steps": "--steps",
              "demo_checkpoints": "--checkpoints-count", "demo_seed": "--seed"}


def missing_run_folder(path) -> LearnvizError:
    """What `status` and `serve` say when the checkpoint folder given does not exist and neither
    does its archive folder (a typo: nothing to show)."""
    return LearnvizError("no such folder, and no archive folder either", path=path, field="checkpoints",
                         hint="check the --checkpoints path (or pass --archive DIR)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the layers (defaults, file, environment) with the flags on top."""
    overrides = {k: getattr(args, k) for k in SETTING_FLAGS if hasattr(args, k)}
    return load_settings(getattr(args, "config", None), overrides, flag_names=FLAG_NAMES)
