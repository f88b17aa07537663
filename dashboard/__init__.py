"""The learnviz dashboard: a small read-only Flask app over one run's archive folder
(`dashboard.app`: `create_app`, the host checks); `learnviz serve` (dashboard.cli) runs it.

The names of dashboard.app are read from here on first use, so that importing the package (every
`learnviz` command does, to register `learnviz serve`) does not import Flask: a tenth of a second
off `learnviz status` and `learnviz run`.
"""

from __future__ import annotations

from typing import Any

_APP_NAMES = ("create_app", "host_name", "host_config", "flask_config", "REFRESH_KEY", "REFRESH_SECONDS",
              "HOSTS_KEY", "ADDRESSES_KEY", "LOOPBACK", "EVERY_INTERFACE", "CSP", "PLOT_CSP")
__all__ = list(_APP_NAMES)


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
