"""Entry-point plugins: how the adapters (workers/, beat/, dashboard/) add to the core's CLI.

The core never imports its adapters. An adapter declares, in pyproject.toml,
  [project.entry-points."learnviz.commands"]   name = "package.module:register"
where `register(subparsers)` adds its subcommands (`learnviz serve`, `learnviz worker`, ...), and
  [project.entry-points."learnviz.serve"]      dashboard = "package.module:serve"
where `serve(settings)` shows the results (the demo calls it last).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable


def _group(name: str):
    return sorted(entry_points(group=name), key=lambda ep: ep.name)


def register_commands(subparsers) -> None:
    for ep in _group("learnviz.commands"):
        ep.load()(subparsers)


def serve_hook() -> Callable | None:
    eps = _group("learnviz.serve")
    return eps[0].load() if eps else None
