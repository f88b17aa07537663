"""Which folders and files changed since this process last looked at them: Linux inotify watches.

A long-lived process (a Celery worker, `learnviz run --watch`) scans a run's checkpoint folders
again and again; statting 500 checkpoints' files each time was most of a scan (learnviz.scan_cache).
With a watch on a folder, the kernel reports every change of the folder's entries and of its
files' data and attributes (a write in place, a modification time set back, a file added, removed
or renamed), so a folder that was checked with its watch in place and has reported nothing since
is as it was, without a `stat`.

What the kernel does not report, and where nothing is trusted: changes made by another machine
to a network file system (NFS, SMB, sshfs, ...: such folders are never watched), writes through a
memory map, and changes to the target of a symbolic link (the scan cache never trusts a watch for
a checkpoint with a linked file). A lost event (the kernel's queue overflowed) makes every folder
unchecked again, and no folder is trusted for more than `TRUST_SECONDS` since it was last
checked: a long-lived process still looks at everything every few minutes. A process watches at
most `MAX_WATCHES` folders (and a quarter of the user's inotify watches); beyond, folders are
checked as without watches.

The setting `watch_folders: false` turns watches off (every scan then stats every file, as a new
process does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
import threading
import time

TRUST_SECONDS = 600.0
MAX_WATCHES = 4096        # per process, and at most a quarter of the user's (fs.inotify.max_user_watches):
                          # editors and other tools need theirs; a folder beyond it is statted each scan
SUBSCRIBED_EVENTS = 100_000   # names kept for a subscriber that has not taken them; beyond: lost
REMOTE = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "fuse.sshfs", "fuse.rclone", "fuse.s3fs",
          "fuse.gcsfuse", "glusterfs", "fuse.glusterfs", "lustre", "ceph", "fuse.ceph", "gpfs", "beegfs", "virtiofs")

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR = 0x400, 0x800, 0x4000, 0x8000, 0x1000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, getattr(os, "O_CLOEXEC", 0o2000000)
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")        # struct inotify_event: wd, mask, cookie, len (then the name)


class Watcher:
    """Folders watched by one inotify instance. `checked(folder)` / `checked(folder, name)`: the
    folder (any change in it) or one file of it has reported nothing since `mark` said it was
    checked. A caller adds the watch (`watch`) *before* it checks, then marks: a change while it
    checks is reported, one before is what it checks for."""

    def __init__(self):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._libc, self.fd = libc, fd
        self._lock = threading.Lock()
        self._folders: dict[str, int] = {}          # folder -> watch descriptor
        self._by_wd: dict[int, str] = {}
        self._marks: dict[tuple, float] = {}   # (folder, "" or a file name[, tag]) -> when checked
        self._tags: set[str] = set()           # the tags marks were made with
        self._local: dict[int, bool] = {}            # device -> not a network file system
        # subscriber -> (its folder, the names reported in it since its last `take`; None: some were lost)
        self._subs: dict[object, tuple[str, set[str] | None]] = {}
        self.cap = MAX_WATCHES
        try:
            with open("/proc/sys/fs/inotify/max_user_watches") as fh:
                self.cap = min(MAX_WATCHES, int(fh.read()) // 4)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            self._folders.clear()
            self._by_wd.clear()
            self._marks.clear()
            self._subs.clear()

    def watch(self, folder: str) -> bool:
        """Watch `folder` (a path as the caller names it); False when it cannot be (gone, on a
        network file system, out of watches): the caller then checks it every time."""
        with self._lock:
            if folder in self._folders:
                return True
            if self.fd < 0 or len(self._folders) >= self.cap or not self._is_local(folder):
                return False
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), MASK | IN_ONLYDIR)
            if wd < 0:
                return False
            old = self._by_wd.get(wd)           # the same folder under another name: one watch
            if old is not None and old != folder:
                return False
            self._folders[folder] = wd
            self._by_wd[wd] = folder
            return True

    def mark(self, folder: str, name: str = "", tag: str = "") -> None:
        """The caller checked `folder` (or its file `name`) after `watch(folder)` returned True.
        `tag`: what was checked, when callers check different things of one file (each has its
        own mark; an event unmarks them all)."""
        with self._lock:
            if folder in self._folders:
                self._marks[(folder, name, tag) if tag else (folder, name)] = time.monotonic()
                if tag:
                    self._tags.add(tag)

    def checked(self, folder: str, name: str = "", tag: str = "", *, since: float | None = None) -> bool:
        """`folder` (or its file `name`) was marked, at most TRUST_SECONDS ago (`since`: the
        earliest mark trusted, `trusted_since()` taken once for a whole scan), and had reported no
        change when the events were last read (`drain`: a scan reads them once, as it starts)."""
        when = self._marks.get((folder, name, tag) if tag else (folder, name))   # one lookup: atomic
        return when is not None and when > (since if since is not None else self.trusted_since())

    def watching(self, folder: str) -> bool:
        return folder in self._folders

    def subscribe(self, key: object, folder: str) -> None:
        """Record for `key` the names of the entries of `folder` (watched) that the events read from
        now on concern (`take`): a caller that keeps something derived from the folder (its
        listing) updates it from those names instead of listing the folder again."""
        with self._lock:
            self._subs[key] = (folder, set())

    def take(self, key: object) -> set[str] | None:
        """The names reported in `key`'s folder since its last `take` ("" for the folder itself),
        and recording goes on; None when `key` never subscribed or events were lost."""
        with self._lock:
            if key not in self._subs:
                return None
            folder, got = self._subs[key]
            self._subs[key] = (folder, set() if got is not None else None)
            return got

    @staticmethod
    def trusted_since() -> float:
        return time.monotonic() - TRUST_SECONDS

    def drain(self) -> None:
        """Read the events reported so far; each unmarks what it concerns."""
        with self._lock:
            while self.fd >= 0:
                try:
                    data = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    return
                except OSError:
                    self._marks.clear()
                    return
                if not data:
                    return
                at = 0
                while at + _EVENT.size <= len(data):
                    wd, mask, _, n = _EVENT.unpack_from(data, at)
                    name = data[at + _EVENT.size: at + _EVENT.size + n].split(b"\0", 1)[0]
                    at += _EVENT.size + n
                    if mask & IN_Q_OVERFLOW:       # events were lost: nothing is known to be unchanged
                        self._marks.clear()
                        for key, (f, _) in self._subs.items():
                            self._subs[key] = (f, None)
                        continue
                    folder = self._by_wd.get(wd)
                    if folder is None:
                        continue
                    for key, (f, got) in self._subs.items():
                        if f == folder and got is not None:
                            got.add(os.fsdecode(name) if name else "")
                            if len(got) > SUBSCRIBED_EVENTS:      # nobody takes them: stop keeping
                                self._subs[key] = (f, None)
                    self._marks.pop((folder, ""), None)
                    if name:
                        text = os.fsdecode(name)
                        self._marks.pop((folder, text), None)
                        for tag in self._tags:
                            self._marks.pop((folder, text, tag), None)
                    if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):    # the folder itself went
                        for key in [k for k in self._marks if k[0] == folder]:
                            del self._marks[key]
                        if mask & IN_IGNORED:
                            self._by_wd.pop(wd, None)
                            self._folders.pop(folder, None)

    def _is_local(self, folder: str) -> bool:
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            return False
        if dev not in self._local:
            self._local[dev] = _fs_type(folder) not in REMOTE
        return self._local[dev]


def _fs_type(path: str) -> str:
    """The file system type of the mount that holds `path` (/proc/self/mountinfo; "" when no mount
    matches, "unknown" when it cannot be read: both count as local)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, right.split()[0]
    except OSError:
        return "unknown"
    return kind


_watcher: Watcher | None = None
_tried = False
_watcher_lock = threading.Lock()


def watcher() -> Watcher | None:
    """This process's watcher; None where there is none (not Linux, no inotify)."""
    global _watcher, _tried
    with _watcher_lock:
        if not _tried:
            _tried = True
            if sys.platform.startswith("linux"):
                try:
                    _watcher = Watcher()
                except (OSError, AttributeError):
                    _watcher = None
        return _watcher


def existing() -> Watcher | None:
    """This process's watcher when it has one already (a long-lived process that scanned a run
    twice); never makes one: a one-off process adds no watches."""
    return _watcher


def forget() -> None:
    """Drop the watches (what a new process has: none yet)."""
    global _watcher, _tried
    with _watcher_lock:
        if _watcher is not None:
            _watcher.close()
        _watcher, _tried = None, False


def _after_fork() -> None:
    """A forked child (a Celery pool process) must not share its parent's inotify instance: the
    events one of them reads, the other never sees. The child closes its copy and makes its own."""
    global _watcher, _tried, _watcher_lock
    _watcher_lock = threading.Lock()
    if _watcher is not None:
        _watcher._lock = threading.Lock()
        _watcher.close()
    _watcher, _tried = None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
