"""What earlier scans for checkpoints found, kept across processes: `<archive>/.learnviz-scan.json`.

A scan (`collect.plan`: each `learnviz run`, each `--watch` pass, the beat's scan) looks at every
checkpoint folder of a run. Classifying one (its config parsed, each weight file's header checked
against the file's size) and fingerprinting it (64 KiB sampled per weight file) cost about a
millisecond, which at 500 checkpoints was most of a scan. So a checkpoint's step, state, weight
files and fingerprint are kept with what identifies the files they were read from: the folder's
and each read file's device, inode, size, modification and change time. A file written since, even
in place with its modification time set back, has another change time (which cannot be set); a
file added to or removed from the folder changes the folder's. Whether the checkpoint's archive was
current for its key is kept too, with the archive file's version (writers replace an archive, never
change it in place). A scan then stats a known checkpoint's folder, read files and archive, and
reads none of them.

What is kept was read before the scan began: a file changed less than `MARGIN_NS` before the scan
started or during it is looked at again by the next scan, so that nothing read while it was being
written is kept. Incomplete checkpoints (still being written) and adapter checkpoints (whose model
includes a base model's files) are not kept: they are looked at each time.

It is a cache: a missing, unreadable or foreign file is ignored and written again; the entries of
checkpoints that are gone are dropped. A long-lived process keeps the file's content in memory and
reads it again only when another process has replaced it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .checkpoints import (
    ADAPTER_CONFIG,
    PICKLE_WEIGHTS,
    TOKENIZER_FILES,
    WEIGHT_NAMES,
    Checkpoint,
    _looks_like,
    candidate_paths,
    file_identity,
    has_tokenizer,
    scan_memo_dict,
    step_from_name,
)
from .common import write_json_atomic
from .fswatch import forget as forget_watches
from .fswatch import watcher

NAME = ".learnviz-scan.json"
VERSION = 2
SHARD_INDEXES = (WEIGHT_NAMES[1], PICKLE_WEIGHTS[1])
MARGIN_NS = 2_000_000_000   # a file's change time is the kernel's coarse clock: it may lag a few ms

# archive folder -> (the file's version, entries): what this process last read or wrote
_kept: dict[str, tuple[tuple | None, dict[str, dict]]] = {}
_scans: dict[str, int] = {}     # archive folder -> the scans of it this process began
LISTING = "\0listing"           # the mark of a watched run folder's listing (no file has this name)
# (run folder, excluded paths) -> (its candidate checkpoint folders, sorted; the other entries that
# are looked at again each scan: folders that do not look like checkpoints yet, and links)
_listings: dict[tuple, tuple[list[str], list[str]]] = {}


def forget() -> None:
    _kept.clear()
    _scans.clear()
    _listings.clear()
    forget_watches()


def stat_id(path: str) -> tuple | None:
    """`checkpoints.file_identity`; None too when it cannot be looked at (it is then never taken
    for the version that was kept)."""
    try:
        return file_identity(path)
    except OSError:
        return None


def tokenizer_signature(folder: str, seen: dict) -> tuple:
    """The stats of `folder`'s tokenizer files (TOKENIZER_FILES, None where absent): once per scan."""
    key = ("toksig", folder)
    if key not in seen:
        seen[key] = tuple(stat_id(os.path.join(folder, name)) for name in TOKENIZER_FILES)
    return seen[key]


class ScanCache:
    """The entries of one archive folder (one run), keyed by checkpoint path. `lookup` gives a known
    checkpoint whose files are as they were; `keep` records one just looked at; `save` writes the
    file when anything changed (and drops the entries of checkpoints this scan did not see)."""

    def __init__(self, archive_dir: Path, context: str, *, watch: bool = True):
        self.archive_dir = Path(archive_dir)
        self.path = self.archive_dir / NAME
        self.context = context        # what fingerprints and archive names depend on (settings, root)
        self.started_ns = time.time_ns()
        self.seen: set[str] = set()       # the checkpoint folders this scan looked at
        self.memo = scan_memo_dict()      # the scan's memo (checkpoints.scan_memo): each folder once
        self.changed = False
        self._folder = str(self.archive_dir)
        self._tok: dict[str, tuple] = {}      # run folder -> where its checkpoints without a tokenizer read one
        self.version, entries = self._load()
        self.entries: dict[str, dict] = dict(entries)
        # A process that scans this run again is a long-lived one (a worker, `--watch`): from its
        # second scan on it watches the folders it checked, and then checks only those the kernel
        # reports changed (learnviz.fswatch). A one-off scan adds no watches: they would outlive it.
        again = _scans.get(str(self.archive_dir), 0)
        _scans[str(self.archive_dir)] = again + 1
        self.watch = watcher() if again and watch else None
        self.since = 0.0
        if self.watch is not None:
            self.watch.drain()
            self.since = self.watch.trusted_since()

    def _load(self) -> tuple[tuple | None, dict[str, dict]]:
        version = stat_id(str(self.path))
        kept = _kept.get(str(self.archive_dir))
        if kept is not None and version is not None and kept[0] == version:
            return version, kept[1]
        if version is None:
            return None, {}
        try:
            data = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != VERSION:
                return version, {}
            entries = {}
            for path, e in dict(data["entries"]).items():
                entry = _entry_from_json(e)
                if entry is not None:
                    entries[path] = entry
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return version, {}       # a damaged cache is as good as none: everything is looked at again
        _kept[str(self.archive_dir)] = (version, entries)
        return version, entries

    def lookup(self, path: str, tok_folder_of) -> dict | None:
        """The entry of the checkpoint folder `path` when it is known and its files are as they
        were (and its tokenizer is read from the same folder, unchanged); else None.
        `tok_folder_of(path)`: where a checkpoint without its own tokenizer reads one from."""
        self.seen.add(path)
        e = self.entries.get(path)
        if e is None or e["context"] != self.context:
            return None
        if not self._unchanged(path, "", not e["links"], lambda: all(
                stat_id(f"{path}/{rel}" if rel else path) == kept for rel, kept in zip(e["files"], e["sig"]))):
            return None
        if not e["own"]:      # no tokenizer of its own (its folder unchanged): from around it
            tok = tok_folder_of(path)
            if tok != e["tok"] or (tok != path and tokenizer_signature(tok, self.memo) != e["toksig"]):
                return None
        return e

    def candidates(self, root: Path, exclude: list[Path]) -> list[str]:
        """`checkpoints.candidate_paths(root, exclude=exclude, nested=False)`. In a long-lived process
        (from its second scan of the run on) the run folder is watched: its listing is kept, and a
        scan looks again only at the entries the kernel reported (a checkpoint folder added, removed
        or renamed) and at those that were no checkpoint folder (one may become one: its
        config.json written), not at every folder of a run of 500."""
        w = self.watch
        if w is None:
            return candidate_paths(root, exclude=exclude, nested=False)
        top = str(root)
        if not os.path.isdir(top):
            return candidate_paths(root, exclude=exclude, nested=False)     # says what is wrong
        excluded = frozenset(str(p.resolve()) for p in exclude)
        key = ("listing", top, excluded)
        kept = _listings.get(key)
        names = w.take(key)
        if kept is not None and names is not None and w.checked(top, LISTING, since=self.since):
            found, others = _relist(top, excluded, kept, names)
        else:
            if not w.watch(top):        # no watch (out of watches, a network file system): listed each scan
                return candidate_paths(root, exclude=exclude, nested=False)
            w.subscribe(key, top)       # before the listing: a change while it lists is reported
            found, others = _list(top, excluded)
            w.mark(top, LISTING)
        _listings[key] = (found, others)
        return ([top] if os.path.exists(os.path.join(top, "config.json")) else []) + found

    def known_current(self, path: str, tail: tuple, tok_folder_of) -> dict | None:
        """The entry of the checkpoint folder `path` when the watches alone say that its files and
        its archive are as they were and that the archive was current for (its fingerprint,
        *`tail`): what `lookup` and `current` find without a stat, at a fraction of their cost
        (a scan of a long run asks this of every checkpoint). None: ask them."""
        w = self.watch
        e = self.entries.get(path)
        if w is None or e is None or e["links"] or e["context"] != self.context:
            return None
        c = e["current"]
        if c is None or c[0][0] != e["fingerprint"] or c[0][1:] != tail:
            return None
        marks, since = w._marks, self.since          # Watcher.checked, inlined: 500 checkpoints a scan
        t = marks.get((path, ""))
        if t is None or t <= since:
            return None
        t = marks.get((self._folder, e["archive"]))
        if t is None or t <= since:
            return None
        if not e["own"]:
            parent = path.rpartition(os.sep)[0]
            shared = self._tok.get(parent)
            if shared is None:            # the same for every checkpoint of the folder (None: its own folder)
                where = tok_folder_of(path)
                shared = self._tok[parent] = ((None, None) if where == path
                                              else (where, tokenizer_signature(where, self.memo)))
            if shared[0] is None:
                if e["tok"] != path:
                    return None
            elif shared[0] != e["tok"] or shared[1] != e["toksig"]:
                return None
        self.seen.add(path)
        return e

    def keep(self, ck: Checkpoint, fingerprint: str, tok: str, archive: str) -> dict | None:
        """Record a complete or broken checkpoint just looked at: its fingerprint, the folder its
        tokenizer was read from and its archive's file name. None when it cannot be kept (an
        adapter, or a file changed since shortly before the scan began)."""
        path = str(ck.path)
        self.seen.add(path)
        folder = Path(path)
        if ck.source is not None or ck.state not in ("complete", "broken") or (folder / ADAPTER_CONFIG).exists():
            return None
        weights = [os.path.relpath(w, path) for w in ck.weight_files]
        files = ["", "config.json", *weights]
        files += [n for n in SHARD_INDEXES if n not in weights and (folder / n).exists()]   # what lists the shards
        own = has_tokenizer(folder)
        if own:
            files += [n for n in TOKENIZER_FILES if (folder / n).is_file()]
        if step_from_name(folder.name) is None:
            files.append("trainer_state.json")      # the step comes from it
        sig = [stat_id(f"{path}/{rel}" if rel else path) for rel in files]
        links = any(os.path.islink(f"{path}/{rel}") for rel in files if rel)   # a change to its target: not reported
        toksig = None if own or tok == path else tokenizer_signature(tok, self.memo)
        newest = max([s[4] for s in sig if s] + [s[4] for s in toksig or () if s])
        if sig[0] is None or newest >= self.started_ns - MARGIN_NS:
            if self.entries.pop(path, None) is not None:
                self.changed = True
            return None
        e = {"context": self.context, "files": files, "sig": tuple(sig), "links": links, "own": own, "tok": tok,
             "toksig": toksig,
             "step": ck.step, "state": ck.state, "reason": ck.reason, "weights": weights,
             "fingerprint": fingerprint, "archive": archive, "current": None}
        self.entries[path] = e
        self.changed = True
        return e

    def current(self, e: dict, key: tuple) -> bool:
        """True when the checkpoint's archive was current for `key` and is the same file still."""
        c = e["current"]
        if c is None or c[0] != key:
            return False
        folder, name = str(self.archive_dir), e["archive"]

        def same() -> bool:
            v = stat_id(os.path.join(folder, name))
            return v is not None and v[:4] == c[1]
        return self._unchanged(folder, name, True, same)

    def _unchanged(self, folder: str, name: str, trust: bool, check) -> bool:
        """`check()` (the stats: the files are as kept), skipped when `trust` and the folder (its
        file `name`, when given) has reported no change since it last passed (learnviz.fswatch)."""
        w = self.watch if trust else None
        if w is not None and w.checked(folder, name, since=self.since):
            return True
        watched = w is not None and w.watch(folder)     # before the check: a change during it is reported
        if not check():
            return False
        if watched:
            w.mark(folder, name)
        return True

    def keep_current(self, e: dict | None, key: tuple, version: tuple | None) -> None:
        """Record that the checkpoint's archive at `version` (archive.file_version) is current for `key`."""
        if e is None or version is None:
            return
        c = (key, tuple(version[1:5]))
        if e["current"] != c:
            e["current"] = c
            self.changed = True

    def save(self) -> None:
        gone = [p for p in self.entries if p not in self.seen]
        for p in gone:
            del self.entries[p]
        if not (self.changed or gone) or not self.archive_dir.is_dir():
            return
        data = {"version": VERSION, "entries": {p: _entry_to_json(e) for p, e in self.entries.items()}}
        try:
            write_json_atomic(self.path, data, indent=None)
        except OSError:
            return            # a read-only archive folder: the next scan looks at everything again
        _kept[str(self.archive_dir)] = (stat_id(str(self.path)), dict(self.entries))


def _classify(real: str, path: str, excluded: frozenset) -> tuple[bool, bool]:
    """(whether the entry `path` of the run folder (`real`: its real path) is a candidate checkpoint
    folder, whether it is to be looked at again next time: a visible folder that is no candidate
    yet, or a link)."""
    name = os.path.basename(path)
    if name.startswith((".", "tmp")):
        return False, False
    try:
        link = os.path.islink(path)
        if not os.path.isdir(path):
            return False, link
        if excluded and (os.path.realpath(path) if link else os.path.join(real, name)) in excluded:
            return False, False
    except OSError:
        return False, False
    ok = _looks_like(path)
    return ok, link or not ok


def _list(top: str, excluded: frozenset) -> tuple[list[str], list[str]]:
    try:
        with os.scandir(top) as it:
            paths = sorted(e.path for e in it)
    except OSError:
        return [], []
    real = os.path.realpath(top)
    found, others = [], []
    for p in paths:
        ok, again = _classify(real, p, excluded)
        if ok:
            found.append(p)
        elif again:
            others.append(p)
    return found, others


def _relist(top: str, excluded: frozenset, kept: tuple[list[str], list[str]],
            names: set[str]) -> tuple[list[str], list[str]]:
    """The kept listing of `top`, with the entries `names` (reported changed) and the kept others
    looked at again."""
    found, others = kept
    changed = {os.path.join(top, n) for n in names if n and os.sep not in n}
    if not changed and not others:
        return found, others
    real = os.path.realpath(top)
    still = [p for p in found if p not in changed] if changed else list(found)
    new_others = []
    for p in sorted(changed | set(others)):
        ok, again = _classify(real, p, excluded)
        if ok:
            still.append(p)
        elif again:
            new_others.append(p)
    still.sort()
    return still, new_others


def _tuples(rows) -> tuple:
    return tuple(tuple(r) if r is not None else None for r in rows)


def _entry_from_json(e: dict) -> dict | None:
    if not isinstance(e, dict) or not isinstance(e.get("files"), list) or not isinstance(e.get("sig"), list):
        return None
    if len(e["files"]) != len(e["sig"]) or not isinstance(e.get("step"), int) or not isinstance(e.get("tok"), str):
        return None
    if (e.get("state") not in ("complete", "broken") or not isinstance(e.get("fingerprint"), str)
            or not isinstance(e.get("archive"), str) or not isinstance(e.get("weights"), list)):
        return None
    cur = e.get("current")
    current = None
    if isinstance(cur, list) and len(cur) == 2 and isinstance(cur[0], list) and isinstance(cur[1], list):
        current = (tuple(cur[0]), tuple(cur[1]))
    return {"context": e.get("context"), "files": [str(f) for f in e["files"]], "sig": _tuples(e["sig"]),
            "links": e.get("links") is not False, "own": bool(e.get("own")), "tok": e["tok"],
            "toksig": _tuples(e["toksig"]) if isinstance(e.get("toksig"), list) else None,
            "step": e["step"], "state": e["state"], "reason": str(e.get("reason", "")),
            "weights": [str(w) for w in e["weights"]], "fingerprint": e["fingerprint"],
            "archive": os.path.basename(e["archive"]), "current": current}


def _entry_to_json(e: dict) -> dict:
    return {**e, "sig": [list(s) if s else None for s in e["sig"]],
            "toksig": [list(s) if s else None for s in e["toksig"]] if e["toksig"] is not None else None,
            "current": [list(e["current"][0]), list(e["current"][1])] if e["current"] else None}
