"""The beat schedule: one scan every `scan_interval` seconds."""

from __future__ import annotations

from typing import Any

from learnviz.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's `beat_schedule`. A scan message expires after one interval: when the CPU workers are
    busy, stale scans are dropped instead of piling up (the next one sees everything anyway)."""
    return {
        "scan-checkpoints": {
            "task": "scan_checkpoints",
            "schedule": float(settings.scan_interval),
            "options": {"expires": float(settings.scan_interval)},
        },
    }
