"""Dashboard page cost: every page reads the archive folder as it is now. Each archive's header and
accuracy are kept in-process per version of its file (`learnviz.archive.Archive.memo`), so a
reload of an unchanged run opens no archive. Prints, per page, the time of a load with that memo
emptied first (every archive opened and read, as before the memo: the baseline) against a load of
the same unchanged folder, and the ratio; then the same after one archive was rewritten (one new
file version: that archive alone is read again). Medians of --repeat loads, interleaved.

    python bench/dashboard.py                    # the demo series (10 checkpoints), built once
    python bench/dashboard.py --checkpoints 30   # the demo model with 30 checkpoints
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import CACHE, complete_archive  # noqa: E402

PAGES = ("/", "/checkpoints", "/checkpoints/{last}", "/hard-examples", "/api/status.json", "/api/history.json",
         "/api/checkpoints/{last}.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, metavar="N", help="the demo model with N checkpoints (default: its 10)")
    ap.add_argument("--repeat", type=int, default=7, metavar="K", help="loads per page and mode (default 7)")
    args = ap.parse_args()
    from dashboard import create_app
    from dashboard.data import ARCHIVE_KEY
    from learnviz import archive as arc

    source, _ = complete_archive(args.checkpoints)
    folder = CACHE / "dashboard-work"            # a copy: the rewrites below leave the cache alone
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".locks", ".*.tmp"))
    archives = arc.list_archives(folder)
    last = archives[-1]
    client = create_app(test_config={ARCHIVE_KEY: str(folder)}).test_client()

    def load(path: str) -> float:
        t = time.perf_counter()
        r = client.get(path)
        dt = time.perf_counter() - t
        assert r.status_code == 200, (path, r.status_code)
        return dt

    def touch_one() -> None:
        """A new version of one archive, as a recomputed stage gives (same content, new file)."""
        info = last.stage("extract")
        data = last.read("extract")
        arc.write_stage(last.path, "extract", key=info.key, root_attrs=last.attrs, data=data,
                        attrs=info.attrs, status=info.status, reason=info.reason)

    print(f"{len(archives)} checkpoints in {folder}; medians of {args.repeat} loads (ms)")
    print(f"{'page':32s} {'no memo':>9s} {'unchanged':>10s} {'ratio':>7s} {'one rewritten':>14s} {'ratio':>7s}")
    for page in PAGES:
        path = page.format(last=last.step)
        cold, warm, one = [], [], []
        load(path)
        for _ in range(args.repeat):
            arc.clear_memo()
            cold.append(load(path))
            warm.append(load(path))
            touch_one()
            one.append(load(path))
        c, w, o = (1000 * statistics.median(x) for x in (cold, warm, one))
        print(f"{path:32s} {c:9.1f} {w:10.1f} {w / c:7.2f} {o:14.1f} {o / c:7.2f}")


if __name__ == "__main__":
    main()
