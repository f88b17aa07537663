"""Small helpers every layer shares: JSON cleaning, atomic file writes, short hashes, progress bars.

Kept free of learnviz imports so that any module may use them without making a cycle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def clean_json(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays become Python values, NaN and inf become None (JSON has
    neither), tuples become lists, dict keys become strings."""
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def tmp_path(path: Path) -> Path:
    """The temporary sibling a writer of `path` fills before `os.replace` (same folder, so the
    replace is atomic; hidden, and named by the writer's pid so two writers never share one).
    A writer killed outright (SIGKILL) leaves it behind: `sweep_due` removes it later."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def discard(tmp: Path) -> None:
    """Remove a writer's temporary file, if there is one. A read-only folder refuses even that
    (EROFS for a file that is not there): the error that stopped the write is the one to report."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_atomic(path: str | Path, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write a whole file so that a reader sees the old content or the new, never a mix: into a
    temporary file in the same folder, then `os.replace`. `fsync` also survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with naming(path), open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        discard(tmp)
    sweep_due(path.parent, path)
    return path


# ---------------------------------------------------------------- what killed writers left

# A writer killed outright (SIGKILL: the OOM killer, `docker kill`, a preempted job) cannot remove
# its temporary file, and each such kill leaves one more (another pid in the name). A leftover is
# removed only when both say its writer is gone:
# - untouched for STALE_AFTER: a live writer's file changes as it is written, and no single write of
#   learnviz takes that long. Measured against the clock of the file system that holds the folder
#   (the modification time of the file just written there): a host whose clock runs ahead cannot
#   take a fresh file for an old one.
# - no process with a pid its name carries is alive on this host. Not a proof (the archive folder
#   may be shared with another host, whose pids mean nothing here), hence the age too; but it keeps
#   the file of a writer on this host that was stopped (SIGSTOP, a suspended machine) for longer.
# A writer that was merely slow and lost its file then fails its `os.replace` (FileNotFoundError):
# an error, never a wrong file in place.
STALE_AFTER = 15 * 60       # seconds
_PID_MAX = 1 << 22          # Linux's largest pid: a greater number is no pid (a thread id)

log = logging.getLogger(__name__)


def leftover_pids(name: str) -> tuple[int, ...] | None:
    """The pids a writer's temporary file name may carry (its last one or two dot-separated numbers:
    `tmp_path`'s `.<name>.<pid>.tmp`, the archive folder index's `.<name>.<pid>.<thread>.tmp`); None
    when `name` is not such a name."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    fields = name[1:-len(".tmp")].split(".")
    pids: list[int] = []
    while len(fields) > 1 and len(pids) < 2 and fields[-1].isascii() and fields[-1].isdigit():
        pids.append(int(fields.pop()))
    return tuple(pids) or None


def _alive_here(pid: int) -> bool:
    """True when a process with this pid runs on this host. False where that cannot be asked."""
    if pid <= 0 or pid > _PID_MAX:
        return False
    if os.name != "posix":          # os.kill there ends the process: the age alone decides
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                 # EPERM: alive, another user's
        return True
    return True


def remove_leftovers(folder: str | Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files that killed writers left in `folder` (see STALE_AFTER for when
    one counts as left); `now`: the time to measure their age against (default: this host's clock).
    Returns what was removed. Never raises: a folder that cannot be listed or written keeps them."""
    try:
        with os.scandir(folder) as it:
            found = [e for e in it if leftover_pids(e.name) is not None]
    except OSError:
        return []
    removed = []
    now = time.time() if now is None else now
    for e in found:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_AFTER:
            continue
        if any(_alive_here(pid) for pid in leftover_pids(e.name)):
            continue
        try:
            os.unlink(e.path)
        except OSError:
            continue
        removed.append(Path(e.path))
    if removed:
        log.info("removed %d temporary file(s) left in %s by writers that were killed: %s", len(removed),
                 folder, ", ".join(sorted(p.name for p in removed)))
    return removed


def sweep_due(folder: str | Path, written: str | Path | None = None) -> list[Path]:
    """`remove_leftovers(folder)` when this process has not done it there yet, or not for
    STALE_AFTER (a worker lives for days, and a leftover of a kill just before it started is not
    old enough then). Writers call it after each write: a dict look-up per write, one listing of
    the folder per process and quarter of an hour, never one per write of a 500-file folder.
    `written`: the file just written in `folder`, whose modification time is the file system's now."""
    key, t = (os.getpid(), os.fspath(folder)), time.monotonic()
    with _swept_lock:
        last = _swept.get(key)
        if last is not None and t - last < STALE_AFTER:
            return []
        _swept[key] = t
    now = time.time()
    if written is not None:
        try:
            now = min(now, os.stat(written).st_mtime)
        except OSError:
            pass
    return remove_leftovers(folder, now=now)


# (pid, folder) -> time.monotonic() of that process's last sweep there; the pid in the key: a
# forked worker child sweeps for itself.
_swept: dict[tuple[int, str], float] = {}
_swept_lock = threading.Lock()


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside names `path` (a write that found the disk full names no file, and
    one into a temporary file names that): the user learns which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.filename == str(path):
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """`obj` as JSON (see `clean_json`), written atomically. `indent=None`: compact, by the C
    encoder (an indent takes Python's, ten times slower: the hard-example board of a
    500-checkpoint run is megabytes)."""
    if indent is None:
        try:       # already plain JSON values (no numpy, no NaN): no cleaning pass
            return write_atomic(path, json.dumps(obj, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError):
            pass
    return write_atomic(path, json.dumps(clean_json(obj), indent=indent, allow_nan=False,
                                         separators=(",", ":") if indent is None else None))


def settle_heap() -> None:
    """Put every object alive now (the imported libraries, warmed-up caches) out of the cyclic
    garbage collector's reach (`gc.freeze`). Planning a long run makes tens of thousands of small
    objects, and each full collection they set off would otherwise walk again the millions that
    torch, numba and umap import: most of the time of listing 500 checkpoints in a process that has
    loaded umap. Called where a process has finished starting (the CLI after parsing its arguments,
    a worker after its warm-up); once per process, the later calls do nothing."""
    import gc
    if _settled.get("pid") == os.getpid():
        return
    _settled["pid"] = os.getpid()
    gc.collect()
    gc.freeze()


_settled: dict[str, int] = {}


def short_hash(*parts: Any) -> str:
    """16 hex digits of sha256 over the JSON of `parts` (keys sorted; non-JSON values as str)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "it"):
    """A tqdm bar (stderr, removed when done), or a no-op with the same two methods."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def append_lines(path: Path, lines: list[str], lock: Path) -> None:
    """Append text lines to a JSON-lines file under a file lock, fsynced: safe against concurrent
    appenders, and a torn last line (a writer killed mid-line) is ended first, so these lines
    stand on their own."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        with naming(path), open(path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(("\n".join(lines) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
