"""The periodic scan: send every stage the archives lack, once.

Safe to run often and from two beats at once: a scan that starts less than half an interval
after another is skipped, overlapping scans are kept apart by a Redis lock, and a (checkpoint,
stage) already queued or running is not sent again (workers.dispatch). Lost messages (a Redis
restart) are found again by the next scan, because what is missing is read from the archives,
never from Redis.
"""

from __future__ import annotations

import time
from pathlib import Path

from learnviz import analyze as an
from learnviz import archive as arc
from learnviz import stages
from learnviz.settings import Settings


def history_stale(settings: Settings) -> bool:
    """True when a checkpoint's geometry or the series is not current: update_learning_history has
    work (its message may have been lost after the analyses that asked for it)."""
    archives = an.series(settings.archive_dir())
    if not archives:
        return False
    for a, key in zip(archives, an.geometry_keys(archives, settings)):
        if not a.is_current(an.GEOMETRY, key):
            return True
    path = Path(settings.archive_dir()) / arc.SERIES_NAME
    try:
        return not arc.Archive(path).is_current(an.SERIES, an.series_key(archives, settings))
    except (arc.ArchiveError, OSError):
        return True


def scan(settings: Settings, dispatch, *, lock_timeout: float = 300.0) -> dict:
    """One scan. Returns a JSON-able summary: what was sent, what was already queued."""
    t0 = time.perf_counter()
    if not dispatch.claim_scan():
        return {"status": "skipped", "reason": "a scan ran less than half an interval ago"}
    with dispatch.lock("scan", timeout=lock_timeout) as got:
        if not got:
            return {"status": "skipped", "reason": "another scan is running"}
        if not Path(stages.checkpoint_root(settings)).is_dir():
            return {"status": "waiting", "reason": f"checkpoint folder {settings.checkpoints} does not exist yet"}
        sent, already = [], []
        items = stages.pending(settings)
        for item in items:
            # A missing extraction comes first; its task sends the analysis when it is done.
            stage = "extract" if "extract" in item["stages"] else item["stages"][0]
            task_id = dispatch.send_stage(stage, item["checkpoint"])
            (sent if task_id else already).append({"checkpoint": item["checkpoint"], "step": item["step"],
                                                    "stage": stage, "task_id": task_id})
        # Coalesced: when one is queued already (or analyses are still to come) this is a no-op.
        history = dispatch.request_history() if history_stale(settings) else None
    return {"status": "ok", "pending": len(items), "sent": sent, "already_queued": len(already),
            "history": history, "seconds": round(time.perf_counter() - t0, 3)}
