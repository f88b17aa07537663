"""Errors a user can meet. Each names the file, the field and what to do."""

from __future__ import annotations

import errno
import os

# Why a file of learnviz's own cannot be written: the machine's fault, never a checkpoint's
# (ENAMETOOLONG: an archive or --out folder so deep that a file in it passes the system's PATH_MAX).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                          errno.ENAMETOOLONG})
TOO_LONG_HINT = "its path is longer than the system allows: pass a folder higher up, or with shorter names"


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


class WriteError(LearnvizError):
    """learnviz cannot write a file of its own (a full disk, a read-only folder, no permission).
    Not the checkpoint's fault: nothing is recorded against it (a failure recorded then would hold
    for good), and the run stops, naming the file."""

    @classmethod
    def of(cls, exc: OSError, path: object) -> WriteError:
        return cls(f"cannot write: {os.strerror(exc.errno)}", path=exc.filename or path,
                   hint=TOO_LONG_HINT if exc.errno == errno.ENAMETOOLONG
                   else "free some space or make the folder writable, then run again")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`), raised like Ctrl-C: every writer's cleanup runs (a
    temporary file removed, a lock released) and the CLI says what is kept, where the default
    action would end the process at once and in silence."""
