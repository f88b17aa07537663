"""learnviz: see what a language model learns, checkpoint by checkpoint.

The core: plain functions and dataclasses. It imports neither celery nor flask; the adapters in
workers/, beat/ and dashboard/ import it.

`learnviz.open_run(path)` opens a run's archives for a notebook (learnviz/notebook.py, docs/api.md).
It is imported on first use, so `import learnviz` stays cheap (no h5py, no pandas).
"""

from .version import __version__

__all__ = ["Run", "__version__", "open_run"]

_LAZY = {"open_run": "learnviz.notebook", "Run": "learnviz.notebook"}


def __getattr__(name: str):
    # PEP 562: the notebook API (and with it h5py, numpy) is imported on first use only
    if name in _LAZY:
        from . import notebook
        return getattr(notebook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
