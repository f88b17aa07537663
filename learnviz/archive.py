"""The archive: one HDF5 file per checkpoint. Schema, atomic writes and the reader API.

The on-disk format is documented in docs/archive.md; this module is the only code that knows it.

Layout::

    /                       root attrs: schema_version, step, checkpoint, fingerprint, probe_hash,
                            model_class, learnviz_version, created, updated
    /<stage>/               one group per stage (extract, analysis, geometry, ...), attrs:
                            encoding-type="stage", encoding-version, status ("ok"|"failed"),
                            reason, fingerprint, probe_hash, schema_version, worker, started,
                            finished, timings (JSON), plus the stage's own attrs
    /<stage>/<element>      every element carries encoding-type and encoding-version (as
                            anndata does): "array", "string-array", "ragged-array", "dict"

Writes are atomic: under a per-checkpoint lock, the archive is rebuilt into a temporary file in
the same folder (old groups copied, the new stage group written), flushed, fsynced, then
`os.replace`d over the old one. A killed writer leaves at most a stale temporary file, which the
next writer removes; readers never lock and see the old file or the new one, never a mix.
Idempotence: a stage is current when its group's (fingerprint, probe_hash, schema_version)
equal the checkpoint's; a changed fingerprint (new weights) drops every stale group.

A file this learnviz cannot read is never overwritten: one of another schema or with an unknown
encoding (ForeignArchiveError) is left as it is; a damaged one is moved aside to `<name>.corrupt`
before its checkpoint is archived again. `scan_archives` lists both kinds (`Unreadable`) with
their reason, so that readers show them instead of leaving them out.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import socket
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import h5py
import numpy as np
from filelock import FileLock

from . import fswatch
from .checkpoints import step_from_name
from .common import sweep_due
from .errors import WRITE_ERRNOS, LearnvizError, WriteError
from .version import __version__

SCHEMA_VERSION = 1
SUFFIX = ".h5"
LOCK_DIR = ".locks"
ELEMENT_VERSION = "1"
STAGE_VERSION = "1"
_STR = h5py.string_dtype("utf-8")


class ArchiveError(LearnvizError):
    """An archive cannot be read (unknown schema or encoding, or a damaged file). `step`: the
    archive's step when its header said it, else None."""

    def __init__(self, message: str, *, step: int | None = None, **where: Any):
        super().__init__(message, **where)
        self.step = step


class ForeignArchiveError(ArchiveError):
    """Not written by this learnviz: another schema_version (or none), or a stage group or element
    of an unknown encoding. This learnviz neither reads it nor overwrites it, nor moves it: its data
    may be all there is of that checkpoint."""


FOREIGN_HINT = "written by a newer learnviz? upgrade learnviz, or move it away to rebuild"
DAMAGED_HINT = "`learnviz run` moves it aside to <name>.corrupt and rebuilds it while its checkpoint exists"
CORRUPT_SUFFIX = ".corrupt"
log = logging.getLogger(__name__)


@dataclass
class Ragged:
    """Per-probe variable-length data: row i is values[offsets[i]:offsets[i+1]]."""
    values: np.ndarray   # (total,)
    offsets: np.ndarray  # (n_rows + 1,) int64, offsets[0] == 0

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]: self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_rows(cls, rows: list, dtype) -> "Ragged":
        """Pack a list of per-probe sequences; dtype=object for strings."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        if np.dtype(dtype) == object:
            values = np.array([v for r in rows for v in r], dtype=object)
        else:
            values = np.concatenate([np.asarray(r, dtype=dtype) for r in rows]) if rows else np.zeros(0, dtype)
        return cls(values, offsets)


@dataclass(frozen=True)
class StageKey:
    """What a stage's result depends on; equal keys mean the stored result is current.

    `inputs` covers what else a stage reads: the neighbouring checkpoints it compares with and
    the settings that shape it (a hash; empty for stages that read only their own checkpoint).
    """
    fingerprint: str
    probe_hash: str
    schema_version: int = SCHEMA_VERSION
    inputs: str = ""

    def with_inputs(self, inputs: str) -> "StageKey":
        return StageKey(self.fingerprint, self.probe_hash, self.schema_version, inputs)


@dataclass
class StageInfo:
    name: str
    status: str
    reason: str
    key: StageKey
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------- element encoding

def write_elem(group: h5py.Group, name: str, value: Any) -> None:
    """Write one element with its encoding-type and encoding-version attrs."""
    if isinstance(value, Ragged):
        g = group.create_group(name)
        write_elem(g, "values", value.values)
        g.create_dataset("offsets", data=np.asarray(value.offsets, dtype=np.int64))
        _tag(g, "ragged-array")
    elif isinstance(value, dict):
        g = group.create_group(name)
        for k, v in value.items():
            write_elem(g, str(k), v)
        _tag(g, "dict")
    else:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind in "OUS":
            # HDF5 variable-length strings cannot hold NUL; a random model's greedy answer can
            text = [str(s).replace("\x00", "\ufffd") for s in arr.ravel()]
            ds = group.create_dataset(name, data=np.asarray(text, dtype=object).reshape(arr.shape), dtype=_STR)
            _tag(ds, "string-array")
        else:
            ds = group.create_dataset(name, data=arr)
            _tag(ds, "array")


def _tag(obj, encoding: str) -> None:
    obj.attrs["encoding-type"] = encoding
    obj.attrs["encoding-version"] = ELEMENT_VERSION


def read_elem(obj: h5py.Group | h5py.Dataset) -> Any:
    """Read one element, dispatching on its encoding-type (a reader per known version)."""
    enc = obj.attrs.get("encoding-type")
    ver = obj.attrs.get("encoding-version")
    if enc is None:
        raise ArchiveError("element has no encoding-type", path=obj.file.filename, field=obj.name)
    if ver != ELEMENT_VERSION:
        raise ArchiveError(f"element encoding-version {ver!r} is newer than this learnviz reads ({ELEMENT_VERSION})",
                           path=obj.file.filename, field=obj.name, hint="upgrade learnviz")
    if enc == "array":
        return obj[()]
    if enc == "string-array":
        return np.asarray(obj.asstr()[()], dtype=object)
    if enc == "ragged-array":
        return Ragged(read_elem(obj["values"]), obj["offsets"][()])
    if enc == "dict":
        return {k: read_elem(obj[k]) for k in obj.keys()}
    raise ArchiveError(f"unknown encoding-type {enc!r}", path=obj.file.filename, field=obj.name,
                       hint="written by a newer learnviz? upgrade learnviz")


def _attr(value: Any) -> Any:
    """An attribute value h5py can store: JSON text for containers and None."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value


def _from_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------- paths and locks

# Most file systems (ext4, XFS, APFS, NTFS) allow a file name of 255 bytes and a path of 4096
# (Linux's NAME_MAX and PATH_MAX). The longest name learnviz makes of an archive's is its
# temporary file's, `.<name>.<pid>.tmp` (a pid has at most 7 digits).
NAME_MAX = 255
PATH_MAX = 4096
_TMP_EXTRA = len("..4194304.tmp")


def name_problem(path: Path) -> str | None:
    """Why an archive cannot be written at `path` on most file systems (its name, or its
    temporary file's, too long), or None. Checked before anything is written: the OSError
    (ENAMETOOLONG) would come from deep inside a write."""
    name, whole = len(os.fsencode(path.name)) + _TMP_EXTRA, len(os.fsencode(str(path))) + _TMP_EXTRA
    if name > NAME_MAX:
        return (f"its archive's file name ({path.name[:24]}...{path.name[-24:]}) would be {name - _TMP_EXTRA} "
                f"bytes, and its temporary file's {name}: beyond the {NAME_MAX} bytes a file system allows "
                f"a file name; rename the checkpoint folder (or its parent folders under the run) shorter")
    if whole >= PATH_MAX:
        return (f"its archive's path would be {whole - _TMP_EXTRA} bytes long, and its temporary file's {whole}: "
                f"beyond the {PATH_MAX} bytes a system allows a path; pass an --archive folder higher up")
    return None


def archive_name(checkpoint_path: Path, root: Path) -> str:
    """File name of a checkpoint's archive: its path under the root, '/' as '__'. The folder's own
    name counts as it is, a symbolic link's too: `checkpoint-30 -> checkpoint-10` is step 30's
    archive, never a second writer of checkpoint-10.h5 (only the folders above it are resolved, for
    a root given through a link)."""
    try:
        where = checkpoint_path.absolute()
        rel = (where.parent.resolve() / where.name).relative_to(root.resolve())
        parts = rel.parts or (checkpoint_path.name,)
    except ValueError:
        parts = (checkpoint_path.name,)
    return "__".join(parts) + SUFFIX


@contextmanager
def locked(path: Path, timeout: float = 600.0) -> Iterator[None]:
    """The per-checkpoint write lock (a lock file under <archive dir>/.locks/)."""
    lock_dir = path.parent / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / (path.name + ".lock")), timeout=timeout):
        yield


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def worker_id() -> str:
    """Who ran a stage: `worker_name` (LEARNVIZ_WORKER_NAME; Celery workers set their node name)
    or the host name, and the pid."""
    return f"{os.environ.get('LEARNVIZ_WORKER_NAME') or socket.gethostname()}:{os.getpid()}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- writing

def write_stage(path: str | Path, stage: str, *, key: StageKey, root_attrs: dict[str, Any],
                data: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None,
                status: str = "ok", reason: str = "", timings: dict[str, float] | None = None,
                started: str | None = None, worker: str | None = None) -> Path:
    """Atomically add or replace one stage group in a checkpoint's archive.

    Groups of other stages are kept when they belong to the same checkpoint fingerprint and
    probe set; they are dropped when the weights (fingerprint) or probe set changed.

    An existing file this learnviz cannot read is never overwritten: one of another schema or
    encoding raises ForeignArchiveError and stays as it is; a damaged one (not HDF5, a bad root
    attribute) is first moved aside to `<name>.corrupt` (`set_aside`). WriteError when the folder
    cannot be written (a full disk, read-only): the archive is left as it was.
    """
    path = Path(path)
    try:
        _write_stage(path, stage, key=key, root_attrs=root_attrs, data=data, attrs=attrs, status=status,
                     reason=reason, timings=timings, started=started, worker=worker)
    except OSError as exc:      # h5py's errors name no file, only their temporary one
        if exc.errno in WRITE_ERRNOS:
            raise WriteError.of(exc, path) from None
        raise
    _written.setdefault(path.name, []).append(stage)
    return path


# The archives this process has put in place, file name -> stages, in order: what the CLI says is
# kept when an interrupt stops it.
_written: dict[str, list[str]] = {}


def written_here() -> dict[str, list[str]]:
    """The archive files this process wrote (name -> the stages written), each whole and in place."""
    return {name: list(stages) for name, stages in _written.items()}


def _write_stage(path: Path, stage: str, **kw: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a killed writer; we hold the lock, so none is live
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        old = _open_existing(path)     # ForeignArchiveError: the file is left as it is
        try:
            _write_tmp(tmp, path, old, stage, **kw)
        except BaseException:   # an interrupt (Ctrl-C, SIGTERM in `learnviz run --watch`) leaves no temporary file
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    # the other files' leftovers (an archive whose checkpoint is gone, the index's, the board's):
    # not under their locks, so by age (learnviz.common.STALE_AFTER)
    sweep_due(path.parent, path)


def _write_tmp(tmp: Path, path: Path, old: h5py.File | None, stage: str, *, key: StageKey,
               root_attrs: dict[str, Any], data: dict[str, Any] | None, attrs: dict[str, Any] | None,
               status: str, reason: str, timings: dict[str, float] | None, started: str | None,
               worker: str | None) -> None:
    """Fill `tmp` with the archive `write_stage` describes, then put it in place of `path`.

    The HDF5 file is built in memory and written out as one image: HDF5 that meets a full disk
    while it writes a file of its own leaves that file open in the library, which crashes the
    process at exit (a segmentation fault after the error), where a plain write just fails."""
    try:
        with h5py.File(str(tmp), "w", driver="core", backing_store=False, locking=False, libver="latest") as f:
            created = now_iso()
            if old is not None:
                created = _from_attr(old.attrs.get("created", created))
                same = (_from_attr(old.attrs.get("fingerprint")) == key.fingerprint
                        and _from_attr(old.attrs.get("probe_hash")) == key.probe_hash
                        and _from_attr(old.attrs.get("schema_version")) == SCHEMA_VERSION)
                if same:
                    for name in old.keys():
                        if name != stage:
                            old.copy(old[name], f, name=name)
            f.attrs.update({k: _attr(v) for k, v in root_attrs.items()})
            f.attrs.update({"schema_version": SCHEMA_VERSION, "fingerprint": key.fingerprint,
                            "probe_hash": key.probe_hash, "learnviz_version": __version__,
                            "created": created, "updated": now_iso()})
            g = f.create_group(stage)
            g.attrs.update({
                "encoding-type": "stage", "encoding-version": STAGE_VERSION,
                "status": status, "reason": reason, "fingerprint": key.fingerprint,
                "probe_hash": key.probe_hash, "schema_version": key.schema_version,
                "inputs": key.inputs, "worker": worker or worker_id(), "started": started or now_iso(),
                "finished": now_iso(), "timings": json.dumps(timings or {}),
            })
            for k, v in (attrs or {}).items():
                g.attrs[k] = _attr(v)
            for name, value in (data or {}).items():
                write_elem(g, name, value)
            f.flush()
            image = f.id.get_file_image()
    finally:
        if old is not None:
            old.close()
    with open(tmp, "wb") as fh:
        fh.write(image)
        fh.flush()
        os.fsync(fh.fileno())
    _newer_than(tmp, path)
    os.replace(tmp, path)


def _newer_than(new: Path, old: Path) -> None:
    """Give `new` a modification time after `old`'s even when both fall within one tick of the
    file-system clock: every version of an archive then differs in `file_version` from every
    earlier one, even where an inode number is reused."""
    try:
        before = os.stat(old).st_mtime_ns
    except OSError:
        return
    st = os.stat(new)
    if st.st_mtime_ns <= before:
        os.utime(new, ns=(st.st_atime_ns, before + 1_000_000))     # 1 ms: coarser file systems too


def _open_checked(path: Path) -> h5py.File | None:
    """An archive opened for a writer, every stage and element checked: None when there is none.
    ForeignArchiveError for another schema or an unknown encoding anywhere in it (a writer would
    drop what it cannot read); ArchiveError when it is damaged."""
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        if not path.exists():
            return None
        raise ArchiveError(f"cannot be read as HDF5: {exc}", path=path, hint=DAMAGED_HINT) from None
    try:
        _check_header(path, _root_attrs(f), f)
        for name in f.keys():
            _check_elements(path, f[name])
        return f
    except ArchiveError:
        f.close()
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        f.close()
        raise ArchiveError(f"cannot be read: {type(exc).__name__}: {exc}", path=path, hint=DAMAGED_HINT) from None
    except BaseException:
        f.close()
        raise


def _open_existing(path: Path) -> h5py.File | None:
    """The current version of an archive, for a writer holding its lock; None when there is none
    or when a damaged one was just moved aside. ForeignArchiveError passes through."""
    try:
        return _open_checked(path)
    except ForeignArchiveError:
        raise
    except ArchiveError as exc:
        _move_aside(path, str(exc))
        return None


def set_aside(path: str | Path) -> Path | None:
    """Move a damaged archive aside (to `<name>.corrupt`, or `<name>.corrupt.N` when that is
    taken) so that its checkpoint can be archived again without losing the file. Returns where
    it went; None when the file is absent or readable. ForeignArchiveError for one of another
    schema or encoding: learnviz never moves nor rebuilds those."""
    path = Path(path)
    with locked(path):
        try:
            old = _open_checked(path)
        except ForeignArchiveError:
            raise
        except ArchiveError as exc:
            return _move_aside(path, str(exc), say=False)    # the caller says so, in its report
        if old is not None:
            old.close()
        return None


def _move_aside(path: Path, reason: str, *, say: bool = True) -> Path:
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{n}")
        n += 1
    os.replace(path, target)
    _fsync_dir(path.parent)
    if say:
        log.warning("%s moved aside to %s: %s", path, target.name, reason)
    return target


# ---------------------------------------------------------------- what this learnviz can read

ELEMENT_TYPES = ("array", "string-array", "ragged-array", "dict")


def _root_attrs(f: h5py.File) -> dict[str, Any]:
    return {k: _from_attr(v) for k, v in f.attrs.items()}


def _group_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    return {k: _from_attr(v) for k, v in obj.attrs.items()}


def _check_header(path: Path, attrs: dict[str, Any], groups: Any) -> None:
    """Raise ForeignArchiveError for another schema_version or a stage group of an unknown encoding,
    ArchiveError for a damaged root attribute (`step` that is no integer). `groups`: each root
    group's attributes by name (or the open file)."""
    step = attrs.get("step")
    known_step = step if isinstance(step, int) and not isinstance(step, bool) else None
    version = attrs.get("schema_version")
    if version is None:
        raise ForeignArchiveError("has no root attribute schema_version: not a learnviz archive", path=path,
                                  field="schema_version", hint="move it out of the archive folder", step=known_step)
    if version != SCHEMA_VERSION:
        raise ForeignArchiveError(f"schema_version {version!r}; this learnviz reads {SCHEMA_VERSION}", path=path,
                                  field="schema_version", hint=FOREIGN_HINT, step=known_step)
    for name in groups.keys():
        a = groups[name] if isinstance(groups, dict) else _group_attrs(groups[name])
        enc, ver = a.get("encoding-type"), a.get("encoding-version")
        if enc != "stage" or ver != STAGE_VERSION:
            raise ForeignArchiveError(f"group '{name}' has encoding-type {enc!r} version {ver!r}; this learnviz "
                                      f"reads 'stage' version {STAGE_VERSION!r}", path=path, field=name,
                                      hint=FOREIGN_HINT, step=known_step)
    if "step" in attrs and known_step is None:
        raise ArchiveError(f"root attribute step is {step!r}, not an integer", path=path, field="step",
                           hint=DAMAGED_HINT)


def _check_elements(path: Path, obj: h5py.Group | h5py.Dataset) -> None:
    """Raise ForeignArchiveError when an element under a stage group (a writer's check: readers
    meet unknown elements when they read them, in `read_elem`) has an encoding this learnviz lacks."""
    items = obj.values() if obj.attrs.get("encoding-type") == "stage" else [obj]
    for el in items:
        a = _group_attrs(el)
        enc, ver = a.get("encoding-type"), a.get("encoding-version")
        if enc not in ELEMENT_TYPES or ver != ELEMENT_VERSION:
            raise ForeignArchiveError(f"element has encoding-type {enc!r} version {ver!r}; this learnviz reads "
                                      f"{', '.join(ELEMENT_TYPES)} version {ELEMENT_VERSION!r}", path=path,
                                      field=el.name, hint=FOREIGN_HINT)
        if enc == "ragged-array":
            _check_elements(path, el["values"])
        elif enc == "dict":
            for child in el.values():
                _check_elements(path, child)


# ---------------------------------------------------------------- in-process memo per file version

T = TypeVar("T")
MEMO_SIZE = 8192     # entries (headers, accuracies, the dashboard's per-panel values, ...), each small; LRU
_memo: OrderedDict[tuple, Any] = OrderedDict()
_memo_lock = threading.Lock()


def file_version(path: Path) -> tuple | None:
    """What identifies one version of a file: a writer never changes an archive in place, it
    replaces it (`os.replace` of a new file), which gives a new inode and modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def clear_memo() -> None:
    """Forget every kept header and derived value (benchmarks measure the uncached cost); the
    folders' index files stay (see `FolderIndex`)."""
    with _memo_lock:
        _memo.clear()
        _indexes.clear()
        _listings.clear()
    for forget in _on_clear:
        forget()


_on_clear: list[Callable[[], None]] = []     # other in-process caches of what files hold (`on_clear`)


def on_clear(forget: Callable[[], None]) -> None:
    """Have `clear_memo` call `forget` too (a module's own cache of file contents)."""
    _on_clear.append(forget)


# ---------------------------------------------------------------- the folder index (across processes)

INDEX_NAME = ".learnviz-index.json"
INDEX_VERSION = 3

# What an index entry leaves out of an archive's header: provenance and per-stage details that a
# reader wants of one archive at a time (a checkpoint page, a stage being written), never of every
# archive of a listing. An archive listed from its entry reads them from its file when asked
# (`_Attrs`). Left out too: a group's fingerprint, probe_hash and schema_version where they equal
# the root's, and the standard encoding. What stays is what planning, `learnviz status`, the
# series' row stamps and the figures read of every archive; a third of the bytes, so a new process
# (`learnviz run` from cron, `learnviz status`) lists a 500-checkpoint run three times as fast.
_ROOT_LEFT_OUT = frozenset({"created", "updated", "learnviz_version", "model_class", "probe_count", "probe_sources"})
_GROUP_LEFT_OUT = frozenset({"timings", "worker", "weight_flags", "calibration_direction", "answer_match", "device",
                             "dtype", "umap_method"})
_SHARED = ("fingerprint", "probe_hash", "schema_version")
_ENCODING = {"encoding-type": "stage", "encoding-version": STAGE_VERSION}
_STAGE_KEYS = ("fingerprint", "probe_hash", "schema_version", "inputs", "status", "reason")


def _compact_header(attrs: dict[str, Any], groups: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    root = {k: v for k, v in attrs.items() if k not in _ROOT_LEFT_OUT}
    out = {}
    for name, a in groups.items():
        out[name] = {k: v for k, v in a.items()
                     if k not in _GROUP_LEFT_OUT and _ENCODING.get(k, _ENCODING) != v
                     and not (k in _SHARED and k in attrs and attrs[k] == v)}
    return root, out


def _expand_groups(root: dict[str, Any], groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    shared = {k: root[k] for k in _SHARED if k in root}
    return {name: {**_ENCODING, **shared, **g} for name, g in groups.items()}


class _Attrs(Mapping):
    """Attributes of which `known` holds all but the keys in `left_out`: those are read (`load()`,
    once) when one of them is asked for or the whole mapping is walked."""

    __slots__ = ("_known", "_left_out", "_load", "_full")

    def __init__(self, known: dict[str, Any], left_out: frozenset, load: Callable[[], dict[str, Any]]):
        self._known, self._left_out, self._load, self._full = known, left_out, load, None

    def _all(self) -> dict[str, Any]:
        if self._full is None:
            self._full = self._load()
        return self._full

    def __getitem__(self, key: str) -> Any:
        if self._full is None and (key in self._known or key not in self._left_out):
            return self._known[key]
        return self._all()[key]

    def get(self, key: str, default: Any = None) -> Any:
        if self._full is None and (key in self._known or key not in self._left_out):
            return self._known.get(key, default)
        return self._all().get(key, default)

    def __contains__(self, key: object) -> bool:
        if self._full is None and (key in self._known or key not in self._left_out):
            return key in self._known
        return key in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return repr(dict(self))


def _stage_rest(a: dict[str, Any]) -> dict[str, Any]:
    """A stage group's attributes beyond its key, status and reason (`StageInfo.attrs`), timings decoded."""
    rest = {k: v for k, v in a.items() if k not in _STAGE_KEYS}
    if isinstance(rest.get("timings"), str):
        try:
            rest["timings"] = json.loads(rest["timings"])
        except ValueError:
            pass
    return rest


class FolderIndex:
    """Each archive's header (root attributes, stage attributes) and persisted derived values
    (`Archive.memo(..., persist=True)`), keyed by its file version, in one JSON file of the archive
    folder: a new process (`learnviz run`, `learnviz status`) then lists a folder of 500 unchanged
    archives by reading one file instead of opening 500. An entry whose file version differs is
    not used (writers replace archives, never change them in place). A cache: best effort, a
    missing, damaged or unwritable index only costs the opens; concurrent writers can only lose
    entries, never make a wrong one current."""

    def __init__(self, folder: Path):
        self.path = folder / INDEX_NAME
        self.entries: dict[str, dict] = {}
        self.hashes: dict[str, str] = {}        # `hashed`: the stage keys' hashes, by what they hash
        self.used: set[str] = set()
        self.dirty = False
        self.changed = 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == INDEX_VERSION and isinstance(data.get("archives"), dict):
                self.entries = data["archives"]
                if isinstance(data.get("hashes"), dict):
                    self.hashes = data["hashes"]
        except (OSError, ValueError, AttributeError):
            pass

    def hashed(self, text: str, compute: Callable[[], str]) -> str:
        """`compute()`, a hash of what `text` spells out in full, remembered across processes: the
        stage keys of a long run chain hundreds of hashes, which a new process need not compute
        again (learnviz.analyze)."""
        value = self.hashes.get(text)
        if not isinstance(value, str):
            value = self.hashes[text] = compute()
            self.dirty = True
            self.changed += 1
        self.used.add(text)
        return value

    @staticmethod
    def _version(version: tuple) -> list:
        return [int(x) for x in version[1:]]

    def get(self, name: str, version: tuple) -> dict | None:
        e = self.entries.get(name)
        return e if isinstance(e, dict) and e.get("v") == self._version(version) else None

    def put(self, name: str, version: tuple, **values: Any) -> None:
        e = self.get(name, version)
        if e is None:
            e = self.entries[name] = {"v": self._version(version)}
        try:
            json.dumps(values)
        except (TypeError, ValueError):
            return                          # not JSON: kept in-process only
        e.update(values)
        self.dirty = True
        self.changed += 1

    def flush(self, present: set[str] | None = None) -> None:
        """Write the index when enough of it changed: when it is new, or more than
        max(8, 1/20 of its entries) (at most half of them) were added or updated since it was read (entries of files not
        `present` are dropped then). Rewriting the whole file for every new checkpoint would cost
        O(N) per checkpoint; until the next write, a new process opens those few archives itself."""
        present = present if present is not None else getattr(self, "present", None)
        few = min(max(8, len(self.entries) // 20), len(self.entries) // 2)
        if not self.dirty or (self.path.exists() and self.changed <= few):
            return
        if present is not None:      # archives gone (the entries of other files: while they exist)
            for name in set(self.entries) - present:
                if name.endswith(SUFFIX) or not (self.path.parent / name).exists():
                    del self.entries[name]
        if len(self.hashes) > 4 * len(self.entries) + 64:     # those of archives gone or rewritten
            self.hashes = {k: v for k, v in self.hashes.items() if k in self.used}
        tmp = self.path.with_name(f"{INDEX_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "archives": self.entries, "hashes": self.hashes},
                                      separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.path)
            self.dirty, self.changed = False, 0
            sweep_due(self.path.parent, self.path)
        except OSError:
            try:                # a read-only folder: no index (a read-only mount refuses, with EROFS,
                tmp.unlink(missing_ok=True)     # even the removal of a file that is not there)
            except OSError:
                pass


_indexes: dict[Path, FolderIndex] = {}
# The last listing of each folder (`scan_archives`): file name -> its view, reused while the file's
# version is the same, so that listing a 500-checkpoint run again costs a stat per file.
_listings: dict[Path, dict[str, "Archive"]] = {}


def folder_index(folder: Path) -> FolderIndex:
    """The folder's index, read once per process (`clear_memo` forgets it)."""
    with _memo_lock:
        idx = _indexes.get(folder)
        if idx is None:
            idx = _indexes[folder] = FolderIndex(folder)
        return idx


def flush_index(folder: str | Path) -> None:
    """Write the folder's index if values were added to it (after `Archive.memo(persist=True)`)."""
    idx = _indexes.get(Path(folder))
    if idx is not None:
        with _memo_lock:
            idx.flush()


def file_memo(path: str | Path, name: str, compute: Callable[[], T], *, persist: bool = False,
              version: tuple | None = None) -> T:
    """`compute()`, a value derived from the file at `path` (any file, not only an archive), computed
    once per version of the file (`version`: the one the caller read; default: the file's now) and
    kept in-process; an exception is raised, not kept. `persist`: also kept in the folder's index
    for later processes (a JSON value, returned as JSON reads it back; `flush_index` writes it)."""
    path = path if isinstance(path, Path) else Path(path)     # Path(a Path) parses it again
    version = version if version is not None else file_version(path)
    hit, value = _memo_get((version, name)) if version else (False, None)
    if hit:
        return value
    index = folder_index(path.parent) if persist and version else None
    entry = index.get(path.name, version) if index is not None else None
    if entry is not None and isinstance(entry.get("memo"), dict) and name in entry["memo"]:
        value = entry["memo"][name]
    else:
        value = compute()
        if index is not None and file_version(path) == version:
            try:
                value = json.loads(json.dumps(value))      # as a later process will read it
            except (TypeError, ValueError):
                pass
            with _memo_lock:
                memo = dict((index.get(path.name, version) or {}).get("memo", {}))
                memo[name] = value
                index.put(path.name, version, memo=memo)
    if version is not None and file_version(path) == version:    # not replaced meanwhile
        _memo_put((version, name), value)
    return value


def _memo_get(key: tuple) -> tuple[bool, Any]:
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return True, _memo[key]
    return False, None


def _memo_put(key: tuple, value: Any) -> None:
    with _memo_lock:
        _memo[key] = value
        _memo.move_to_end(key)
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)


# ---------------------------------------------------------------- reading

class Archive:
    """Read-only view of one checkpoint's archive. Opens the file per call; never locks.

    The header (root attrs and stage infos) is read once per version of the file and kept
    in-process (`memo`), so listing a folder of unchanged archives again (each dashboard page,
    `learnviz status`) opens none of them. Treat `attrs`, `stages` and memoised values as read-only.
    """

    def __init__(self, path: str | Path, *, index: FolderIndex | None = None):
        self.path = path if isinstance(path, Path) else Path(path)
        self.version = file_version(self.path)
        hit, header = _memo_get((self.version, "header")) if self.version else (False, None)
        if hit and isinstance(header, ArchiveError):
            raise copy.copy(header)      # a copy: raising the kept one would grow its traceback
        if hit:
            self.attrs, self.stages = header
            return
        if index is None:
            index = folder_index(self.path.parent) if self.version and self.path.name != SERIES_NAME else None
        entry = index.get(self.path.name, self.version) if index is not None and self.version else None
        if entry is not None and self._from_entry(entry):
            return
        try:
            with self._open() as f:
                attrs = _root_attrs(f)
                groups = {name: _group_attrs(f[name]) for name in f.keys()}
        except OSError as exc:
            error = ArchiveError(f"cannot be read as HDF5: {exc}", path=self.path, hint=DAMAGED_HINT)
        except (KeyError, RuntimeError, ValueError) as exc:
            error = ArchiveError(f"cannot be read: {type(exc).__name__}: {exc}", path=self.path, hint=DAMAGED_HINT)
        else:
            try:
                _check_header(self.path, attrs, groups)
                error = None
            except ArchiveError as exc:
                error = exc.with_traceback(None)
        if error is not None:
            if self.path.exists():
                self._keep("header", error)   # an unreadable version stays unreadable: open it once
            raise copy.copy(error)
        self.attrs = attrs
        self.stages = {name: _stage_info(name, a) for name, a in groups.items()}
        if self.version is not None and file_version(self.path) == self.version:   # not replaced meanwhile
            _memo_put((self.version, "header"), (self.attrs, self.stages))
            _memo_put((self.version, "full-header"), (attrs, groups))
            if index is not None and entry is None:
                root, compact = _compact_header(attrs, groups)
                with _memo_lock:
                    index.put(self.path.name, self.version, attrs=root, groups=compact)

    def _from_entry(self, entry: dict) -> bool:
        """The header from the folder index's entry for this version (what it left out is read
        from the file when asked for: `_Attrs`). False when the entry is not usable (another
        layout, or a header that fails the checks): the file is read instead."""
        attrs, compact = entry.get("attrs"), entry.get("groups")
        if not isinstance(attrs, dict) or not isinstance(compact, dict) or \
                not all(isinstance(g, dict) for g in compact.values()):
            return False
        groups = _expand_groups(attrs, compact)
        try:
            _check_header(self.path, attrs, groups)
        except ArchiveError:
            return False
        path, version = self.path, self.version
        self.attrs = _Attrs(attrs, _ROOT_LEFT_OUT, lambda: _full_header(path, version)[0])
        self.stages = {name: _stage_info(name, a, lambda name=name: _stage_rest(
            _full_header(path, version)[1].get(name, {}))) for name, a in groups.items()}
        _memo_put((self.version, "header"), (self.attrs, self.stages))    # nothing was read from the file: no race
        return True

    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r", locking=False)

    @functools.cached_property
    def step(self) -> int:
        """(Kept: a view's header never changes, and listing, planning and the series of a long
        run ask it of every archive several times.)"""
        return int(self.attrs.get("step", -1))

    @functools.cached_property
    def key(self) -> StageKey:
        return StageKey(self.attrs.get("fingerprint", ""), self.attrs.get("probe_hash", ""),
                        self.attrs.get("schema_version", 0))

    def stage(self, name: str) -> StageInfo | None:
        return self.stages.get(name)

    def is_current(self, name: str, key: StageKey, *, retry_failed: bool = False) -> bool:
        """True when the stage was written for this key (ok, or failed and not retrying)."""
        kept = self.__dict__.get("_current")     # the last answer per stage, by the key object asked
        if kept is not None:                      # (planning a long run asks it of every archive)
            hit = kept.get(name)
            if hit is not None and hit[0] is key:
                return hit[1] or (hit[2] and not retry_failed)
        else:
            kept = self.__dict__["_current"] = {}
        info = self.stages.get(name)
        same = info is not None and (info.key is key or info.key == key)
        kept[name] = (key, same and info.ok, same and not info.ok)
        return same and (info.ok or not retry_failed)

    def _keep(self, name: str, value: Any) -> None:
        # only when the file read is still the version this view was made from (not replaced meanwhile)
        if self.version is not None and file_version(self.path) == self.version:
            _memo_put((self.version, name), value)

    def memo(self, name: str, compute: Callable[[], T], *, persist: bool = False) -> T:
        """`compute()` (a value derived from this archive, e.g. its accuracy), computed once per
        version of the file this view was made from (`file_memo`)."""
        if self.version is None:
            return compute()
        return file_memo(self.path, name, compute, persist=persist, version=self.version)

    def read(self, name: str, keys: list[str] | None = None, *, missing_ok: bool = False) -> dict[str, Any]:
        """The elements of a stage group (all, or just `keys`, which may be paths such as
        "layer_1/coords"), decoded. A missing key raises KeyError, or is left out with `missing_ok`."""
        with self._open() as f:
            if name not in f:
                raise ArchiveError(f"has no '{name}' stage", path=self.path, field=name)
            g = f[name]
            if keys is None:
                return {k: read_elem(g[k]) for k in g.keys()}
            return {k: read_elem(g[k]) for k in keys if not missing_ok or k in g}

    def read_keys(self, name: str) -> list[str]:
        """The names of a stage group's elements."""
        with self._open() as f:
            if name not in f:
                raise ArchiveError(f"has no '{name}' stage", path=self.path, field=name)
            return list(f[name].keys())


def _stage_info(name: str, group_attrs: dict[str, Any],
                load: Callable[[], dict[str, Any]] | None = None) -> StageInfo:
    """`load`: the group's attributes are an index entry's, which leaves some out (`_Attrs`)."""
    a = group_attrs
    key = StageKey(a.get("fingerprint", ""), a.get("probe_hash", ""), a.get("schema_version", 0), a.get("inputs", ""))
    rest = _stage_rest(a)
    return StageInfo(name, a.get("status", "unknown"), a.get("reason", ""), key,
                     rest if load is None else _Attrs(rest, _GROUP_LEFT_OUT, load))


def _full_header(path: Path, version: tuple | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """An archive's whole header (root attributes, each group's), read from its file once per
    version; what an index entry left out is taken from here. ({}, {}) when the file is gone."""
    hit, header = _memo_get((version, "full-header")) if version else (False, None)
    if hit:
        return header
    try:
        with h5py.File(path, "r", locking=False) as f:
            header = _root_attrs(f), {name: _group_attrs(f[name]) for name in f.keys()}
    except (OSError, KeyError, RuntimeError, ValueError):
        return {}, {}
    if version is not None and file_version(path) == version:
        _memo_put((version, "full-header"), header)
    return header


SERIES_NAME = "series" + SUFFIX  # the run-level archive (results across all checkpoints)


@dataclass(frozen=True)
class Unreadable:
    """An archive file that cannot be read. Listed with its reason instead of left out: a reader
    shows it as failed, and a writer never overwrites it (see `write_stage`)."""
    path: Path
    step: int | None      # from its header when that says it, else from the file name; None: unknown
    reason: str           # names the file, and the field when one is at fault
    field: str | None = None
    foreign: bool = False  # another schema_version or an unknown encoding: never moved aside nor rebuilt

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass
class Listing:
    """An archive folder's checkpoint archives: the readable ones and the unreadable ones, by step."""
    archives: list[Archive]
    unreadable: list[Unreadable]


def step_from_file_name(path: Path) -> int | None:
    """The step an archive's file name says (its checkpoint folder's name, which the file name keeps:
    `runs/a/checkpoint-5` is archived as `a__checkpoint-5.h5`), None when it says none. The names
    are learnviz.checkpoints.STEP_PATTERNS themselves: a pattern of its own here fell behind them."""
    return step_from_name(path.stem.rsplit("__", 1)[-1])


def _unreadable(path: Path, error: ArchiveError) -> Unreadable:
    step = error.step if error.step is not None else step_from_file_name(path)
    return Unreadable(path, step, str(error), error.field, isinstance(error, ForeignArchiveError))


VIEW_MARK = "view"     # scan_archives' watch mark: the file is the version of its kept view


def scan_archives(archive_dir: str | Path) -> Listing:
    """Every checkpoint archive in the folder: the readable ones sorted by step, and the unreadable
    ones with their reason (sorted by step, unknown steps last). A file that vanishes while it is
    listed (moved aside by a writer) is left out."""
    archive_dir = Path(archive_dir)
    try:
        names = [e.name for e in os.scandir(archive_dir)]
    except OSError:           # no folder (yet), or not a folder
        return Listing([], [])
    bad = []
    index = folder_index(archive_dir)
    before = _listings.get(archive_dir, {})
    now: dict[str, Archive] = {}
    # A long-lived process that scans this run watches its archive folder (learnviz.fswatch): an
    # archive that reported nothing since its view was checked is that view, without a stat.
    folder, w = str(archive_dir), fswatch.existing()
    if w is not None and before and w.watching(folder):
        w.drain()
        since = w.trusted_since()
    else:
        w = None
    for name in names:
        if not name.endswith(SUFFIX) or name.startswith(".") or name == SERIES_NAME:
            continue
        seen = before.get(name)
        if seen is not None:
            if w is not None and w.checked(folder, name, VIEW_MARK, since=since):
                now[name] = seen
                continue
            if file_version(seen.path) == seen.version:
                now[name] = seen          # unchanged since the last listing: the same view
                if w is not None:
                    w.mark(folder, name, VIEW_MARK)
                continue
        p = archive_dir / name
        try:
            now[name] = Archive(p, index=index)
        except ArchiveError as exc:
            if p.exists():
                bad.append(_unreadable(p, exc))
    with _memo_lock:          # what flush_index keeps: the dashboard's listings write nothing
        index.present = set(now)
        if len(_listings) >= 64 and archive_dir not in _listings:
            _listings.clear()
        _listings[archive_dir] = now
    out = [a for _, _, a in sorted(((a.step, name, a) for name, a in now.items()), key=lambda t: t[:2])]
    bad.sort(key=lambda u: (u.step is None, u.step or 0, u.path.name))
    return Listing(out, bad)


def list_archives(archive_dir: str | Path) -> list[Archive]:
    """Every readable checkpoint archive in the folder, sorted by step. A reader that shows a run
    (status, the dashboard) or compares neighbours takes `scan_archives`, which also reports the
    unreadable ones."""
    return scan_archives(archive_dir).archives
