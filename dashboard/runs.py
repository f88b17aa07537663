"""The runs a dashboard shows, and a response cache per run version.

Today's archive folder is one run (id `ROOT_RUN`, shown under the folder's name); each direct
subfolder that holds archives (`*.h5`) or a learning_history.jsonl is a further run, its id the
subfolder's name, whatever it holds (`lr=1e-3`, `lr 3e-4`, `run_ü`, `+seed1`: every name
`learnviz run` and `status` handle; a name that is not UTF-8 gets an id of its own, `run_id`;
the layout of several runs under one root: <archive>/<run name>/). URLs carry the id
percent-encoded (the page: encodeURIComponent), and a run id from a URL is only ever looked up
in this listing, never joined to a path, so no request reaches a file outside the archive root.

`cached(run, name, compute)` keeps a panel's JSON-able answer per (run folder, run version, name):
a reload of an unchanged run computes nothing; a new archive changes the version, and the answer
is built again from the per-archive memo (`learnviz.archive.Archive.memo`), so only the new archive
is read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from learnviz.readout import run_archives

ROOT_RUN = "_root"                      # the archive folder itself
NOT_UTF8 = "_bytes:"                     # in front of the id of a folder whose name is not UTF-8
_KEPT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")   # ASCII an id keeps as it is
CACHE_SIZE = 256                         # answers kept (panel x run x argument), least recently used go first

_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()


def run_folders(root: str | Path) -> dict[str, Path]:
    """Run id -> folder, the runs of `readout.run_archives` (the one definition of a run's archive
    folder: the root when it holds a run, or holds no run below it, then its subfolders that
    hold one, by name), every name (percent-encoded in URLs), keeping only folders that really lie
    in the root: links that lead out of it are not followed. A subfolder whose name begins with
    "_" gets one more "_" in front (`run_id`): `ROOT_RUN` names the root, and a subfolder named
    `_root` is `__root`."""
    root = Path(root)
    out: dict[str, Path] = {}
    try:
        real_root = root.resolve()
    except (OSError, RuntimeError):
        return {ROOT_RUN: root}
    for name, folder in run_archives(root):
        if not name:
            out[ROOT_RUN] = root
            continue
        if name in (".", "..") or "/" in name or "\0" in name:
            continue        # never from a listing, and refused all the same
        try:
            inside = folder.resolve().parent == real_root
        except (OSError, RuntimeError):
            inside = False
        if inside:
            out[run_id(name)] = folder
    return out or {ROOT_RUN: root}


def run_id(name: str) -> str:
    """The id of the run in the subfolder `name`: the name, with one more "_" in front when it
    begins with one, so that no subfolder's id is `ROOT_RUN` (one-to-one: the root's id has one
    "_" in front, an escaped name at least two). A name that is not UTF-8 (Python holds its bytes
    as surrogates, which no URL, page or JSON.parse'd id can carry) is `NOT_UTF8` and its bytes
    percent-encoded, "%" too ("run\\xff" -> "_bytes:run%FF"): one "_" and no "root", so it meets
    no other id, and two such names never meet (percent-encoding is undone exactly)."""
    if not _utf8(name):
        return NOT_UTF8 + quote(os.fsencode(name), safe=_KEPT)
    return "_" + name if name.startswith("_") else name


def label(run: str, folder: Path) -> str:
    """What the picker shows: the folder's name, as it is (the page shows it as text); bytes of a
    name that are not UTF-8 as U+FFFD."""
    return printable(folder.name)


def printable(text: str) -> str:
    """`text` as UTF-8 can write it: a file name's undecodable bytes (and any lone surrogate) as
    U+FFFD; any other text unchanged."""
    if _utf8(text):
        return text
    return os.fsencode(text).decode("utf-8", "replace") if _fs_name(text) else text.encode("utf-8", "replace").decode()


def _encodes(encode: Callable[[str], bytes], text: str) -> bool:
    try:
        encode(text)
    except UnicodeEncodeError:
        return False
    return True


def _utf8(text: str) -> bool:
    return _encodes(str.encode, text)        # (UTF-8: a file name's undecodable bytes, as surrogates, fail)


def _fs_name(text: str) -> bool:
    return _encodes(os.fsencode, text)


def cached(key: tuple, compute: Callable[[], Any]) -> Any:
    """`compute()` kept under `key` (which holds the run's version); an exception is not kept."""
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = compute()
    with _lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every kept answer (benchmarks measure the uncached cost)."""
    with _lock:
        _cache.clear()
