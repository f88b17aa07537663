"""The periodic scan: send every stage the archives lack, once.

Safe to run often and from two beats at once: a scan that starts less than half an interval
after another is skipped, overlapping scans are kept apart by a Redis lock, and a (checkpoint,
stage) already queued or running is not sent again (workers.dispatch). Lost messages (a Redis
restart) are found again by the next scan, because what is missing is read from the archives,
never from Redis; a message lost while its mark stayed (a purged queue) is sent again once its
mark is a minute old.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from learnviz import pipeline
from learnviz.results import EXTRACT
from learnviz.settings import Settings


def scan(settings: Settings, dispatch, *, lock_timeout: float = 300.0) -> dict:
    """One scan. Returns a JSON-able summary: what was sent, what was already queued."""
    t0 = time.perf_counter()
    if not dispatch.claim_scan():
        return {"status": "skipped", "reason": "a scan ran less than half an interval ago"}
    with dispatch.lock("scan", timeout=lock_timeout) as got:
        if not got:
            return {"status": "skipped", "reason": "another scan is running"}
        if not Path(pipeline.checkpoint_root(settings)).is_dir():
            # The scan runs on a cpu worker: a folder only the GPU host sees is missing here.
            return {"status": "waiting", "reason": f"checkpoint folder {settings.checkpoints} does not exist (yet) on "
                    f"host {socket.gethostname()}, where this scan ran (a cpu worker): if training writes there "
                    "already, mount it at the same path on every host (docs/distributed.md)"}
        sent, already, resent = [], [], []
        ids = None
        items = pipeline.pending(settings)
        for item in items:
            # A missing extraction comes first; its task sends the analysis when it is done.
            stage = EXTRACT if EXTRACT in item["stages"] else item["stages"][0]
            task_id = dispatch.send_stage(stage, item["checkpoint"])
            if task_id is None:      # marked as queued: is its message still in Redis?
                ids = dispatch.message_ids() if ids is None else ids
                task_id = dispatch.resend_lost(stage, item["checkpoint"], ids)
                if task_id:
                    resent.append(task_id)
            (sent if task_id else already).append({"checkpoint": item["checkpoint"], "step": item["step"],
                                                    "stage": stage, "task_id": task_id})
        # Coalesced: when one is queued already (or analyses are still to come) this is a no-op.
        history = dispatch.request_history() if pipeline.history_stale(settings) else None
    return {"status": "ok", "pending": len(items), "sent": sent, "already_queued": len(already),
            "resent_lost": len(resent), "history": history, "seconds": round(time.perf_counter() - t0, 3)}
