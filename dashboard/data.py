"""Per-request access to one run's archive folder, read-only (as flaskr's `get_db`).

`run()` builds a `RunData` for the current request on `flask.g`; each of its properties reads the
archive folder at most once per request and never writes to it. Nothing is kept between
requests: every page shows the folder as it is now, so a training run's new checkpoints appear on
the next load. Readers never lock (the writers replace files atomically), so a file that vanishes
or changes mid-read is treated as not there yet, never as an error page. A file that cannot be
read at all (a damaged archive, one of another schema, a board that is not JSON) is shown as
unreadable with its reason, never left out: `unreadable`, `board_problem`.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from flask import current_app, g

from learnviz import archive as arc
from learnviz import readout
from learnviz.errors import LearnvizError
from learnviz.readout import BOARD_FILE, HISTORY_FILE, StatusRow
from learnviz.visualize import DIR_NAME, MANIFEST_NAME

ARCHIVE_KEY = "LEARNVIZ_ARCHIVE"   # the Flask config key holding the archive folder


class RunData:
    """One read of an archive folder: archives, status rows, merged history, board, figures."""

    def __init__(self, archive_dir: str | Path):
        self.dir = Path(archive_dir)
        self.vis_dir = self.dir / DIR_NAME

    @cached_property
    def listing(self) -> arc.Listing:
        return readout.scan_archives(self.dir)

    @cached_property
    def archives(self) -> list[arc.Archive]:
        """Every readable checkpoint archive, by step (failed extractions included)."""
        return self.listing.archives

    @cached_property
    def unreadable(self) -> list[arc.Unreadable]:
        """Every archive file that cannot be read, with its reason, by step."""
        return self.listing.unreadable

    @cached_property
    def steps(self) -> list[int]:
        """The steps of every archive file, readable or not (those whose step is known), ascending."""
        return sorted([a.step for a in self.archives] + [u.step for u in self.unreadable if u.step is not None])

    @cached_property
    def rows(self) -> list[StatusRow]:
        """One status row per archive file, the unreadable ones included (readout.status_rows)."""
        try:
            return readout.status_rows(self.dir, self.archives, self.unreadable)
        except (OSError, KeyError, arc.ArchiveError):
            # an archive replaced between listing and reading: the next refresh sees it whole
            return readout.status_rows(self.dir, self.archives, self.unreadable, accuracy=False)

    @cached_property
    def analysed(self) -> list[arc.Archive]:
        """Archives with a successful extraction, of the newest probe set (`readout.series_of`)."""
        return readout.series_of(self.archives)

    @cached_property
    def probe_hash(self) -> str | None:
        return self.analysed[-1].attrs.get("probe_hash") if self.analysed else None

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        """Merged history rows (one per step) of the newest probe set."""
        return readout.history_rows(self.dir, probe_hash=self.probe_hash)

    @cached_property
    def history_by_step(self) -> dict[int, dict[str, Any]]:
        return {row["step"]: row for row in self.history}

    @cached_property
    def _board(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return readout.read_board(self.dir, strict=True), None
        except LearnvizError as exc:
            return None, str(exc)

    @property
    def board(self) -> dict[str, Any] | None:
        """hard_example_board.json, or None when absent or unreadable (`board_problem` says which)."""
        return self._board[0]

    @property
    def board_problem(self) -> str | None:
        """Why hard_example_board.json cannot be read (naming it), None when it is absent or fine."""
        return self._board[1]

    def accuracy(self, a: arc.Archive) -> tuple[float | None, dict[str, float]]:
        """Share of probes answered right, overall and per skill, of one archive (None, {} without a
        successful extraction). Reads that archive only, and only once per version of its file
        (`learnviz.readout.archive_accuracy`)."""
        try:
            return readout.archive_accuracy(a)
        except (OSError, KeyError, arc.ArchiveError):
            return None, {}     # replaced mid-read: shown as unknown until the next refresh

    def archive_at(self, step: int) -> arc.Archive | None:
        """The archive of a step: the newest probe set's when there are several."""
        found = [a for a in self.archives if a.step == step]
        preferred = [a for a in found if a.attrs.get("probe_hash") == self.probe_hash]
        return (preferred or found or [None])[-1]

    def unreadable_at(self, step: int) -> list[arc.Unreadable]:
        """The archive files of a step that cannot be read."""
        return [u for u in self.unreadable if u.step == step]

    def figure_mtime(self, name: str) -> int | None:
        """Modification time (ns) of a figure file in visualizations/, None when absent."""
        try:
            return (self.vis_dir / name).stat().st_mtime_ns
        except OSError:
            return None

    @cached_property
    def version(self) -> str:
        """A cheap signature of the folder (file names, sizes and times; nothing is opened): it
        changes when a checkpoint is archived or a stage, the history or a figure is rewritten."""
        parts = []
        try:
            with os.scandir(self.dir) as entries:     # names and stats straight from the listing (fast at 500 files)
                found = [(e.name, e.path) for e in entries if e.name.endswith(arc.SUFFIX)]
        except OSError:
            found = []
        found.sort()
        extra = [(p.name, os.fspath(p)) for p in (self.dir / HISTORY_FILE, self.dir / BOARD_FILE,
                                                 self.vis_dir / MANIFEST_NAME)]
        for name, path in [*found, *extra]:
            try:
                st = os.stat(path)
            except OSError:
                continue
            parts.append((name, st.st_size, st.st_mtime_ns))
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def run() -> RunData:
    """This request's view of the archive folder (created on first use, kept on `g`)."""
    if "run_data" not in g:
        g.run_data = RunData(current_app.config[ARCHIVE_KEY])
    return g.run_data
