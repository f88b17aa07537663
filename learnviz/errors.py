"""Errors a user can meet. Each names the file, the field and what to do."""

from __future__ import annotations


class LearnvizError(Exception):
    """An error caused by user input (a file, a setting, a checkpoint).

    The CLI prints it without a traceback; everything else is a bug and keeps its traceback.
    """

    def __init__(self, message: str, *, path: object = None, field: str | None = None,
                 line: int | None = None, hint: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        self.line = line
        self.hint = hint
        where = self.path or ""
        if line is not None:
            where += f" line {line}" if where else f"line {line}"
        if field:
            where += f" field '{field}'" if where else f"field '{field}'"
        text = f"{where}: {message}" if where else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ConfigError(LearnvizError):
    """A setting is unknown or has the wrong type."""


class ProbeError(LearnvizError):
    """A probe file is malformed."""


class CheckpointError(LearnvizError):
    """A checkpoint cannot be read (truncated weights, bad config)."""
