"""The series stage's per-checkpoint rows, kept in an append-only log beside the archives:
`<archive>/.learnviz-rows.bin` (learnviz.series_stage).

Rewriting every row for each new checkpoint (they were a group of series.h5) cost megabytes of
writing at 500 checkpoints. The log is appended to instead: one record per row, so a new
checkpoint writes its own row and nothing else, whatever the length of the run. A record is

    b"LVR1" | header length (u32 LE) | body length (u32 LE) | CRC-32 of header + body (u32 LE)
    | header: JSON {"signature", "stamp", "step", "fields": [[name, dtype, shape, bytes], ...],
                    "objects": {name: [[str, ...], shape]}}
    | body: each field's bytes, in the order of "fields" (numeric dtypes only)

A later record of a stamp overrides an earlier one. Records of rows that no checkpoint has any
more (a rewritten archive, a checkpoint gone, other settings) stay until they outnumber the live
ones: the writer then rewrites the log with only the live rows (`rewrite`, atomically), so the
file stays within about twice its live size at an amortised constant cost per checkpoint.

It is a cache: a torn last record (a writer stopped mid-append) or a damaged one ends what is read,
and the writer rewrites the log from the rows it holds; a missing or unreadable log only means
that every row is read from the archives again. A process keeps what it parsed and reads only
what was appended since (the file's identity and the bytes before that point unchanged).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import archive as arc
from .common import naming, write_atomic

NAME = ".learnviz-rows.bin"
MAGIC = b"LVR1"
_HEAD = struct.Struct("<4sIII")
_KINDS = "biuf"           # numeric fields only: objects (strings) go in the header as JSON
_CHECK = 64               # bytes before the parsed end compared again before reading on
MARGIN_NS = 2_000_000_000   # a change time this recent may hide a second write in the same clock tick


@dataclass
class Record:
    signature: str
    stamp: str
    step: int
    values: dict[str, np.ndarray]
    layout: tuple           # ((name, dtype, shape), ...): rows stack when their layouts are equal


@dataclass
class Log:
    """What a log file holds: the newest record of each stamp (`rows`), how many records it has
    (`records`, live or not) and whether what follows the last good record is a torn or damaged
    record (`clean` False: the next write rewrites the file)."""
    ident: tuple | None = None          # (device, inode) of the file parsed
    seen: tuple = ()                    # its (size, mtime, ctime) when last parsed to `end`
    end: int = 0                        # bytes parsed
    tail: bytes = b""                   # the _CHECK bytes before `end`
    last: tuple = (0, b"")              # the last record's offset and fixed header (its checksum)
    rows: dict[str, Record] = field(default_factory=dict)
    records: int = 0
    clean: bool = True


_memo: dict[str, Log] = {}
_lock = threading.Lock()
_layouts: dict[tuple, tuple] = {}       # one tuple object per distinct layout (compared by identity first)
_dtypes: dict[str, np.dtype] = {}      # a header's dtype string -> its dtype
arc.on_clear(_memo.clear)


def encode(signature: str, stamp: str, step: int, values: dict[str, np.ndarray]) -> bytes:
    fields, body, objects = [], [], {}
    for name, v in values.items():
        v = np.asarray(v)
        if v.dtype.kind not in _KINDS:
            objects[name] = [[str(x) for x in v.ravel()], list(v.shape)]
            continue
        b = np.ascontiguousarray(v).tobytes()
        fields.append([name, v.dtype.str, list(v.shape), len(b)])
        body.append(b)
    head = json.dumps({"signature": signature, "stamp": stamp, "step": int(step), "fields": fields,
                       "objects": objects}, separators=(",", ":")).encode("utf-8")
    data = b"".join(body)
    return _HEAD.pack(MAGIC, len(head), len(data), zlib.crc32(data, zlib.crc32(head))) + head + data


def _decode(head: bytes, body: memoryview) -> Record:
    h = json.loads(head)
    values, layout, at = {}, [], 0
    for name, dt, shape, n in h["fields"]:       # a new process decodes 500 rows of 8 fields: kept lean
        dtype = _dtypes.get(dt)
        if dtype is None:
            dtype = _dtypes[dt] = np.dtype(dt)
        if type(n) is not int or n < 0:
            raise ValueError(f"field {name!r}: a negative or non-integer size")
        count = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise ValueError(f"field {name!r}: a negative or non-integer size")
            count *= d
        if dtype.kind not in _KINDS or count * dtype.itemsize != n or at + n > len(body):
            raise ValueError(f"field {name!r}: {n} bytes do not hold {dt} {shape}")
        values[str(name)] = np.frombuffer(body, dtype=dtype, count=count, offset=at).reshape(shape)
        layout.append((str(name), dtype.str, tuple(shape)))
        at += n
    for name, (items, shape) in h["objects"].items():
        a = np.empty(len(items), dtype=object)
        a[:] = [str(x) for x in items]
        values[str(name)] = a.reshape(shape)
        layout.append((str(name), "O", tuple(shape)))
    if at != len(body) or not isinstance(h["stamp"], str) or not isinstance(h["signature"], str):
        raise ValueError("the body's length or the header's stamp or signature")
    return Record(h["signature"], h["stamp"], int(h["step"]), values, _layout(layout))


def _layout(items) -> tuple:
    key = tuple(sorted(items))
    return _layouts.setdefault(key, key)


def layout_of(values: dict[str, np.ndarray]) -> tuple:
    """The layout of a row as `encode` writes it (`Record.layout`)."""
    out = []
    for name, v in values.items():
        v = np.asarray(v)
        out.append((name, v.dtype.str if v.dtype.kind in _KINDS else "O", tuple(v.shape)))
    return _layout(out)


def _parse(log: Log, data: bytes, at_file: int) -> None:
    """Add the records of `data` (the file's bytes from `at_file` on) to `log`."""
    view, at = memoryview(data), 0
    while at < len(data):
        if len(data) - at < _HEAD.size:
            log.clean = False               # torn
            break
        magic, nh, nb, crc = _HEAD.unpack_from(data, at)
        start, end = at + _HEAD.size, at + _HEAD.size + nh + nb
        if magic != MAGIC or end > len(data):
            log.clean = False               # damaged, or torn
            break
        head, body = data[start:start + nh], view[start + nh:end]
        try:
            if zlib.crc32(body, zlib.crc32(head)) != crc:
                raise ValueError("checksum")
            rec = _decode(head, body)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.clean = False
            break
        log.rows[rec.stamp] = rec
        log.records += 1
        log.last = (at_file + at, bytes(data[at:start]))
        at = end
    log.end = at_file + at
    log.tail = (log.tail + bytes(data[max(0, at - _CHECK):at]))[-_CHECK:]    # the last bytes before `end`


def load(path: str | Path) -> Log:
    """The log at `path` (an empty one when there is none or it cannot be read). The returned
    object is shared: treat it as read-only."""
    path = str(path)
    with _lock:
        try:
            fh = open(path, "rb")
        except OSError:
            _memo.pop(path, None)
            return Log()
        with fh:
            st = os.fstat(fh.fileno())
            ident = (st.st_dev, st.st_ino)
            seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            log = _memo.get(path)
            if log is not None and log.ident == ident and log.clean:
                # unchanged by its stats; but within a tick of the coarse clock that stamps them an
                # in-place write of the same size may leave them alike: the bytes are compared then
                if seen == log.seen:
                    if time.time_ns() - st.st_ctime_ns > MARGIN_NS or _same_tail(fh, log):
                        return log
                elif st.st_size > log.end and _same_tail(fh, log):     # appended to since
                    fh.seek(log.end)
                    _parse(log, fh.read(), log.end)
                    log.seen = seen
                    return log
            log = Log(ident=ident, seen=seen)      # new, replaced, or changed otherwise: read whole
            try:
                fh.seek(0)
                _parse(log, fh.read(), 0)
            except OSError:
                return Log()
            _memo[path] = log
            return log


def _same_tail(fh, log: Log) -> bool:
    """The file still has the bytes before `log.end` that it had: its last record's header (with
    the record's checksum) and the bytes just before the end are as parsed."""
    if not log.tail:
        return log.end == 0
    at, head = log.last
    fh.seek(at)
    if fh.read(len(head)) != head:
        return False
    fh.seek(log.end - len(log.tail))
    return fh.read(len(log.tail)) == log.tail


def append(path: str | Path, records: list[tuple[str, str, int, dict]]) -> None:
    """Append (signature, stamp, step, values) rows. The caller holds the run's lock and has just
    `load`ed the log, which was `clean` and ends where the file ends (else it `rewrite`s)."""
    if not records:
        return
    path = str(path)
    blob = b"".join(encode(*r) for r in records)
    with _lock:
        with naming(path), open(path, "ab") as fh:
            start = fh.tell()
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
            st = os.fstat(fh.fileno())
        log = _memo.get(path)
        if log is not None and log.clean and log.ident == (st.st_dev, st.st_ino) and log.end == start:
            _parse(log, blob, start)          # what this process appended: known without reading it back
            log.seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        else:
            _memo.pop(path, None)


def rewrite(path: str | Path, records: list[tuple[str, str, int, dict]]) -> None:
    """Replace the log by `records` (atomically: a reader sees the old log or the new one)."""
    path = str(path)
    blob = b"".join(encode(*r) for r in records)
    with _lock:
        write_atomic(path, blob, fsync=True)
        _memo.pop(path, None)
        try:
            st = os.stat(path)
        except OSError:
            return
        log = Log(ident=(st.st_dev, st.st_ino), seen=(st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        _parse(log, blob, 0)
        _memo[path] = log


def log_path(archive_dir: str | Path) -> Path:
    return Path(archive_dir) / NAME
