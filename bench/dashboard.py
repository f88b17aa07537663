"""Dashboard cost, two modes.

Synthetic (`--checkpoints N`): N synthetic archives written through learnviz's own writer
(bench/api.py `write_run`: 500 probes, 2 pooled layers, cached under .bench-cache/api-<N>/), a
hard-example board of 20 examples, served by the real app on a real socket (Werkzeug, in this
process). Prints:
  - p50 and p95 of every API call the interactive page (/dynamics) makes: warm (the answer is kept
    per run version) and the first call after one new archive (a new checkpoint written through the
    writer each round; only that archive is read, the rest comes from the per-archive memo), and
    the one cold call of each right after the server started (nothing in memory yet); and the
    CPU time (this process: server and client) of the call after a new archive, which other
    programs on a loaded machine do not inflate as they do the wall time;
  - in Chromium (Playwright, Debian's chromium): the time from navigation until every panel is
    drawn, the first load (empty browser cache: plotly.js too) and the median of later ones;
  - the time for one slider step to redraw the UMAP (input event -> frame fetched -> plotly
    drawn), to the next step (prefetched while the current one shows) and to a random step.
Goals: API p95 <= 100 ms, every panel drawn <= 1.5 s, one slider step <= 100 ms.

Demo (no --checkpoints, or --demo-checkpoints N): the HTML pages and the older JSON endpoints over
the demo series; per page a load with the per-archive memo emptied first (every archive opened:
the baseline) against a load of the unchanged folder, and after one archive was rewritten.
Medians of --repeat loads, interleaved.

    python bench/dashboard.py --checkpoints 500          # synthetic, 500 checkpoints
    python bench/dashboard.py --checkpoints 500 --no-browser
    python bench/dashboard.py                            # the demo series (10 checkpoints), built once
    python bench/dashboard.py --demo-checkpoints 30      # the demo model with 30 checkpoints
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import CACHE, complete_archive  # noqa: E402

PAGES = ("/", "/checkpoints", "/checkpoints/{last}", "/hard-examples", "/api/status.json", "/api/history.json",
         "/api/checkpoints/{last}.json")
# What /dynamics asks for (dashboard/static/dynamics.js), {last}: the newest step, {layer}: the last layer.
PAGE_CALLS = ("/api/runs.json", "/api/runs/_root/version.json", "/api/runs/_root/metrics.json",
              "/api/runs/_root/drift.json", "/api/runs/_root/umap.json",
              "/api/runs/_root/umap/{last}.json?layer={layer}", "/api/runs/_root/board.json",
              "/api/runs/_root/calibration/{last}.json", "/api/runs/_root/logprob.json",
              "/api/runs/_root/entropy.json", "/api/runs/_root/geometry.json")
BOARD_EXAMPLES = 20


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


# ---------------------------------------------------------------- synthetic

def write_board(folder: Path) -> None:
    """hard_example_board.json over the run's steps: 20 examples, each learnt at some step."""
    from learnviz import archive as arc
    from learnviz.readout import BOARD_FILE
    steps = [a.step for a in arc.list_archives(folder)]
    rng = random.Random(0)
    examples = []
    for i in range(BOARD_EXAMPLES):
        learnt = rng.choice(steps)
        examples.append({"id": f"hard_{i:02d}", "prompt": f"It is not true that no A{i} are B. Are some A{i} B?",
                         "expected": "Yes", "category": "double_negation", "first_right": learnt, "regressed": False,
                         "rows": [{"step": s, "correct": s >= learnt, "answer": "Yes" if s >= learnt else "No",
                                   "error_type": None if s >= learnt else "wrong_polarity"} for s in steps]})
    (folder / BOARD_FILE).write_text(json.dumps({"steps": steps, "examples": examples, "method": "bench"}))


def add_checkpoint(folder: Path, step: int) -> None:
    """A new checkpoint: the newest archive's stages under `step`, through learnviz's writer, and its history rows."""
    from learnviz import archive as arc
    from learnviz import history
    from learnviz.results import stage_order
    last = arc.list_archives(folder)[-1]
    name = f"checkpoint-{step}"
    root = {**last.attrs, "step": step, "checkpoint_name": name}
    for stage in stage_order(last.stages):
        info = last.stages[stage]
        arc.write_stage(folder / f"{name}.h5", stage, key=info.key, root_attrs=root, data=last.read(stage),
                        attrs=info.attrs, status=info.status, reason=info.reason)
    history.append(folder, {"step": step, "probe_hash": last.attrs.get("probe_hash"), "train_loss": 0.1})


def synthetic(args) -> None:
    from api import built_run

    from dashboard import runs as runs_mod
    from dashboard.cli import make_dashboard_server
    from learnviz import archive as arc
    from learnviz.settings import load_settings

    source = built_run(args.checkpoints)
    folder = CACHE / f"dashboard-synthetic-{args.checkpoints}"     # a copy: new archives are added to it
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".locks", ".*.tmp", "bench-complete.json"))
    write_board(folder)
    arc.clear_memo()
    runs_mod.clear_cache()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_dashboard_server(load_settings(overrides={"archive": str(folder)}, environ={}), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.port}"

    def call(path: str) -> tuple[float, int]:
        t = time.perf_counter()
        with urllib.request.urlopen(base + path, timeout=120) as r:
            body = r.read()
            assert r.status == 200, (path, r.status)
        return time.perf_counter() - t, len(body)

    def paths() -> dict[str, str]:
        o = json.loads(urllib.request.urlopen(base + "/api/runs/_root/overview.json").read())
        return {p: p.format(last=o["steps"][-1], layer=o["layers"][-1]) for p in PAGE_CALLS}

    try:
        cold, size = {}, {}
        t0 = time.perf_counter()
        for p, path in paths().items():
            cold[p], size[p] = call(path)
        first_page = time.perf_counter() - t0
        warm = {p: [] for p in PAGE_CALLS}
        for _ in range(args.repeat):
            for p, path in paths().items():
                warm[p].append(call(path)[0])
        after = {p: [] for p in PAGE_CALLS}
        after_cpu = {p: [] for p in PAGE_CALLS}    # CPU time of this process (server and client): load-proof
        step = max(a.step for a in arc.list_archives(folder))
        for _ in range(args.rounds):
            step += 100
            add_checkpoint(folder, step)
            for p, path in paths().items():
                c = time.process_time()
                after[p].append(call(path)[0])
                after_cpu[p].append(time.process_time() - c)
        n = len(arc.list_archives(folder))
        print(f"{args.checkpoints} synthetic checkpoints (500 probes, 2 layers) + {args.rounds} added; "
              f"served at {base} over {folder}")
        print(f"API calls of /dynamics, ms: cold = once after start; warm = p50/p95 of {args.repeat}; "
              f"after one new archive = p50/p95 of {args.rounds} rounds (first call after each)")
        print(f"{'call':52s} {'bytes':>8s} {'cold':>8s} {'warm p50':>9s} {'p95':>7s} {'new p50':>8s} {'p95':>7s} "
              f"{'new cpu p50':>11s}")
        worst = 0.0
        for p in PAGE_CALLS:
            w50, w95 = 1000 * pct(warm[p], 50), 1000 * pct(warm[p], 95)
            a50, a95 = 1000 * pct(after[p], 50), 1000 * pct(after[p], 95)
            worst = max(worst, w95, a95)
            print(f"{p:52s} {size[p]:8d} {1000 * cold[p]:8.1f} {w50:9.1f} {w95:7.1f} {a50:8.1f} {a95:7.1f} "
                  f"{1000 * pct(after_cpu[p], 50):11.1f}")
        print(f"every call once, cold (server just started, {args.checkpoints} archives read): {first_page:.2f} s")
        print(f"goal API p95 <= 100 ms (warm and after a new archive): {'met' if worst <= 100 else 'NOT met'} "
              f"(worst {worst:.1f} ms); {n} archives now")
        if not args.no_browser:
            browser_times(base, args)
    finally:
        server.shutdown()


def browser_times(base: str, args) -> None:
    from playwright.sync_api import sync_playwright
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if chromium is None:
        print("no chromium: browser timings skipped (apt-get install -y chromium)")
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        loads = []
        for _ in range(1 + args.page_loads):
            page.goto(base + "/dynamics")
            page.wait_for_selector("#dynamics[data-ready]", timeout=120_000)
            assert page.get_attribute("#dynamics", "data-ready") == "1"
            loads.append(int(page.get_attribute("#dynamics", "data-ready-at")))
        undrawn = page.evaluate("[...document.querySelectorAll('.plot')].filter(e => e.dataset.drawn !== 'data')"
                                ".map(e => e.id)")
        steps = json.loads(urllib.request.urlopen(base + "/api/runs/_root/umap.json").read())["steps"]

        def slide(i: int) -> int:
            page.evaluate("i => { const s = document.getElementById('umap-slider'); s.value = i;"
                          " s.dispatchEvent(new Event('input')); }", i)
            page.wait_for_selector(f"#panel-umap[data-step='{steps[i]}']", timeout=30_000)
            return int(page.get_attribute("#panel-umap", "data-redraw-ms"))

        rng = random.Random(1)
        slide(0)
        nxt = [slide(i) for i in range(1, 1 + args.slides)]
        rnd_steps = [slide(rng.randrange(len(steps))) for _ in range(args.slides)]
        browser.close()
    later = statistics.median(loads[1:]) if len(loads) > 1 else loads[0]
    print(f"Chromium, navigation -> every panel drawn: first load {loads[0]} ms (empty cache: plotly.js "
          f"4.8 MB too), later loads median {later:.0f} ms of {len(loads) - 1}"
          + (f"; NOT drawn with data: {undrawn}" if undrawn else ""))
    print(f"goal every panel drawn <= 1500 ms: {'met' if later <= 1500 else 'NOT met'} (later loads)")
    print(f"UMAP slider step -> redrawn, ms: next step p50 {pct(nxt, 50)} p95 {pct(nxt, 95)}; "
          f"random step p50 {pct(rnd_steps, 50)} p95 {pct(rnd_steps, 95)} ({args.slides} each)")
    print(f"goal one slider step <= 100 ms: {'met' if pct(rnd_steps, 95) <= 100 else 'NOT met'} (random, p95)")


# ---------------------------------------------------------------- the demo series

def demo_pages(args) -> None:
    from dashboard import create_app
    from dashboard.data import ARCHIVE_KEY
    from learnviz import archive as arc

    source, _ = complete_archive(args.demo_checkpoints)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=int, metavar="N", help="synthetic: N checkpoints (500 probes, 2 layers)")
    ap.add_argument("--demo-checkpoints", type=int, metavar="N", help="demo mode: the demo model with N checkpoints")
    ap.add_argument("--repeat", type=int, default=None, metavar="K",
                    help="loads per call and mode (default: 20 synthetic, 7 demo)")
    ap.add_argument("--rounds", type=int, default=10, metavar="R", help="synthetic: new archives added (default 10)")
    ap.add_argument("--page-loads", type=int, default=5, metavar="L", help="synthetic: page loads after the first")
    ap.add_argument("--slides", type=int, default=20, metavar="S", help="synthetic: slider steps timed per kind")
    ap.add_argument("--no-browser", action="store_true", help="synthetic: API timings only")
    args = ap.parse_args()
    if args.checkpoints:
        args.repeat = args.repeat or 20
        synthetic(args)
    else:
        args.repeat = args.repeat or 7
        demo_pages(args)


if __name__ == "__main__":
    main()
