"""The interactive page (/dynamics, dashboard/static/dynamics.js) in a real headless Chromium,
driven by Playwright, against a real `learnviz serve` subprocess.

On the dashboard tests' run (three checkpoints, eight probes, one hard example with `<script>` in
its prompt) and on the trained demo series (the demo's newest archive is given such a prompt too,
through learnviz's own writer). Checks that every panel draws the API's data, that nothing but the
server is asked for anything, that the slider and the play button step the UMAP frames, that a
hovered point names its probe and shows `<script>` as text, and that a new checkpoint joins the
charts without a reload. Skipped where no Chromium is installed (CI: apt-get install -y chromium),
or without the playwright package (the `test` extra); it never downloads a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from dashboard_run import XSS_EXPECTED, XSS_PROMPT, free_port, learnviz_command
from helpers import stop_process

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

PANELS = ("panel-metrics", "panel-radar", "panel-drift", "panel-umap", "panel-board", "panel-calibration",
          "panel-logprob", "panel-entropy", "panel-geometry")
CHECKPOINT_PANELS = ("panel-radar", "panel-umap", "panel-calibration")
SCREENSHOT_COPY = "LEARNVIZ_TEST_SCREENSHOT"   # also copy the screenshot here (for a person to look at)


@contextmanager
def served(archive: Path, log: Path):
    """`learnviz serve --archive ARCHIVE --port FREE` until the block ends; yields the base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNVIZ_")}
    with open(log, "w") as out:
        proc = subprocess.Popen(learnviz_command() + ["serve", "--archive", str(archive), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(base + "/api/version.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        stop_process(proc)


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.loads(r.read())


def add_checkpoint(archive_dir: Path, step: int) -> None:
    """A new checkpoint's archive (the newest one's stages under a later step), written through
    learnviz's writer, and its history row: what a training run adds."""
    from learnviz import archive as arc
    from learnviz import history
    from learnviz.results import stage_order

    last = arc.list_archives(archive_dir)[-1]
    name = f"checkpoint-{step}"
    root = {**last.attrs, "step": step, "checkpoint_name": name}
    for stage in stage_order(last.stages):
        info = last.stages[stage]
        arc.write_stage(archive_dir / f"{name}.h5", stage, key=info.key, root_attrs=root, data=last.read(stage),
                        attrs=info.attrs, status=info.status, reason=info.reason)
    history.append(archive_dir, {"step": step, "probe_hash": last.attrs.get("probe_hash"), "train_loss": 0.05})


def set_prompt(archive_dir: Path, text: str) -> str:
    """Give the newest archive's first probe the prompt `text` (learnviz's writer); its id."""
    from learnviz import archive as arc
    from learnviz.readout import EXTRACT, series

    last = series(archive_dir)[-1]
    info = last.stage(EXTRACT)
    data = last.read(EXTRACT)
    data["prompt"] = data["prompt"].copy()
    data["prompt"][0] = text
    arc.write_stage(last.path, EXTRACT, key=info.key, root_attrs=last.attrs, data=data, attrs=info.attrs)
    return str(data["probe_ids"][0])


def plotted(page, panel: str) -> list[dict]:
    """The traces plotly drew in a panel (x, y, z, text), as plotly holds them."""
    return page.evaluate("""id => (document.getElementById(id).data || []).map(t => (
        {x: t.x || null, y: t.y || null, z: t.z || null, r: t.r || null, text: t.text || null, name: t.name || ''}))""",
                         panel)


POINTS_JS = """() => {     // every UMAP point: its probe id, trace, index and place on the page
    const gd = document.getElementById('panel-umap');
    const L = gd._fullLayout, box = gd.getBoundingClientRect(), out = [];
    gd.data.forEach((t, c) => t.text.forEach((text, i) => out.push({
      id: text.slice(3, text.indexOf('</b>')), curve: c, point: i,
      x: box.left + L._size.l + L.xaxis.l2p(t.x[i]), y: box.top + L._size.t + L.yaxis.l2p(t.y[i])})));
    return out; }"""


def hover_label(page, probe_id: str | None = None) -> str:
    """The UMAP hover label's text; with `probe_id`, once it names that probe (plotly throttles
    hover events, so a label can trail the mouse for a moment); "" when it never does."""
    label = page.locator("#panel-umap .hoverlayer .hovertext")
    label.first.wait_for(timeout=5000)
    for _ in range(30):
        text = label.first.text_content() if label.count() else ""
        if probe_id is None or text.startswith(f"{probe_id} ("):
            return text
        page.wait_for_timeout(100)
    return text


def mouse_onto(page, point: dict) -> None:
    page.mouse.move(5, 5)                 # off the plot first: the next move is a fresh hover
    page.wait_for_timeout(120)
    page.mouse.move(point["x"], point["y"], steps=3)


def hover_loneliest_point(page) -> tuple[str, str]:
    """Move the mouse onto the UMAP point farthest from every other (so no neighbour takes the
    hover); (its probe id, the hover label's text)."""
    page.locator("#panel-umap").scroll_into_view_if_needed()
    points = page.evaluate(POINTS_JS)

    def gap(p):
        return min(((p["x"] - q["x"]) ** 2 + (p["y"] - q["y"]) ** 2 for q in points if q is not p), default=1e9)
    lone = max(points, key=gap)
    mouse_onto(page, lone)
    return lone["id"], hover_label(page, lone["id"])


def hover_probe(page, probe_id: str) -> str:
    """The hover label of a probe's UMAP point: the mouse on it when no other point lies on top of
    it, else plotly's own hover (Plotly.Fx.hover) on that point, as a mouse over it would."""
    page.locator("#panel-umap").scroll_into_view_if_needed()
    mine = next((p for p in page.evaluate(POINTS_JS) if p["id"] == probe_id), None)
    assert mine is not None, f"no UMAP point for probe {probe_id}"
    mouse_onto(page, mine)
    text = hover_label(page, probe_id)
    if not text.startswith(f"{probe_id} ("):
        page.evaluate("p => Plotly.Fx.hover(document.getElementById('panel-umap'), "
                      "[{curveNumber: p.curve, pointNumber: p.point}])", mine)
        text = hover_label(page, probe_id)
    return text


def exercise(base: str, archive: Path, out: Path, xss_probe: str, xss_text: str) -> dict:
    """Drive the page; assert as it goes. Returns a few facts for the caller's own checks."""
    other_hosts, asked, console_errors, dialogs = [], [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def route(r):
                asked.append(r.request.url)
                if r.request.url.startswith(base + "/"):
                    r.continue_()
                else:
                    other_hosts.append(r.request.url)
                    r.abort()
            page.route("**/*", route)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            page.goto(base + "/dynamics?poll=1")
            page.wait_for_selector("#dynamics[data-ready]", timeout=60_000)
            assert page.get_attribute("#dynamics", "data-ready") == "1"
            metrics = api(base, "/api/runs/_root/metrics.json")
            umap = api(base, "/api/runs/_root/umap.json")
            steps, n_probes = metrics["steps"], len(umap["probes"]["id"])
            assert len(steps) >= 2 and n_probes >= 5

            # every panel drew the API's data
            for panel in PANELS:
                assert page.get_attribute("#" + panel, "data-drawn") == "data", panel
                assert plotted(page, panel), panel
            acc = next(t for t in plotted(page, "panel-metrics") if t["name"] == "accuracy")
            assert acc["x"] == steps and acc["y"] == metrics["accuracy"]
            drift = api(base, "/api/runs/_root/drift.json")
            assert plotted(page, "panel-drift")[0]["z"] == drift["z"]
            radar = plotted(page, "panel-radar")
            skills = list(metrics["skills"])
            assert radar[1]["r"][:-1] == [metrics["skills"][s][-1] for s in skills]      # the latest step
            assert page.locator("#panel-umap .scatterlayer .point").count() == n_probes

            # the slider moves the UMAP frame
            layer = int(page.get_attribute("#panel-umap", "data-layer"))
            assert page.get_attribute("#panel-umap", "data-step") == str(umap["steps"][-1])
            before = sorted(x for t in plotted(page, "panel-umap") for x in t["x"])
            page.focus("#umap-slider")
            page.keyboard.press("Home")
            page.wait_for_selector(f"#panel-umap[data-step='{umap['steps'][0]}']", timeout=10_000)
            first = api(base, f"/api/runs/_root/umap/{umap['steps'][0]}.json?layer={layer}")
            after = sorted(x for t in plotted(page, "panel-umap") for x in t["x"])
            assert after == sorted(first["x"]) and after != before

            # play steps through every frame, in order
            page.evaluate("""() => { window.__seen = [];
                new MutationObserver(() => window.__seen.push(document.getElementById('panel-umap').dataset.step))
                  .observe(document.getElementById('panel-umap'),
                           {attributes: true, attributeFilter: ['data-step']}); }""")
            page.click("#umap-play")
            page.wait_for_selector(f"#panel-umap[data-step='{umap['steps'][-1]}']", timeout=30_000)
            seen = [int(s) for s in dict.fromkeys(page.evaluate("window.__seen"))]
            assert seen == umap["steps"], seen

            # hovering a point shows its probe; <script> in a prompt is text in the label
            page.wait_for_function("document.getElementById('umap-play').textContent.includes('Play')")
            probe, text = hover_loneliest_point(page)
            i = umap["probes"]["id"].index(probe)
            assert f"{probe} (" in text and unescape(umap["probes"]["prompt"][i]) in text, (probe, text)
            assert f"expected: {unescape(umap['probes']['expected'][i])}" in text
            assert text.endswith("right") or text.endswith("wrong")
            text = hover_probe(page, xss_probe)
            assert xss_text in text, text          # as text: <b> not rendered bold, <script> not run
            assert page.locator("#panel-umap script, .hoverlayer script").count() == 0
            shot = out / "dynamics.png"
            page.screenshot(path=str(shot), full_page=True)

            # live: a new checkpoint joins the charts, the page is not reloaded
            page.evaluate("window.__same_page = true")
            new_step = steps[-1] + 1000
            add_checkpoint(archive, new_step)
            page.wait_for_function(f"""() => {{ const gd = document.getElementById('panel-metrics');
                return gd.data && gd.data.some(t => t.name === 'accuracy' && t.x[t.x.length - 1] === {new_step}); }}""",
                                   timeout=30_000)
            assert page.evaluate("window.__same_page === true")
            page.wait_for_selector(f"#panel-umap[data-step='{new_step}']", timeout=30_000)
            assert int(page.get_attribute("#dynamics", "data-updates")) >= 1

            # the checkpoint page draws its step's radar, UMAP and calibration
            page.goto(f"{base}/checkpoints/{steps[-1]}")
            page.wait_for_selector("#dynamics[data-ready]", timeout=60_000)
            for panel in CHECKPOINT_PANELS:
                assert page.get_attribute("#" + panel, "data-drawn") == "data", panel
            assert page.get_attribute("#panel-umap", "data-step") == str(steps[-1])
        finally:
            browser.close()
    assert not dialogs, dialogs                     # no probe text ran as script
    assert not other_hosts, other_hosts
    assert asked and all(u.startswith(base + "/") for u in asked)
    assert not console_errors, console_errors
    if os.environ.get(SCREENSHOT_COPY):
        shutil.copyfile(shot, os.environ[SCREENSHOT_COPY])
    return {"requests": len(asked), "screenshot": shot}


def test_interactive_page_on_dashboard_run(built_archive, tmp_path):
    """The tests' small run: its hard example's prompt holds <script> (dashboard_run.XSS_PROMPT)."""
    archive = shutil.copytree(built_archive, tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    with served(archive, tmp_path / "serve.log") as base:
        probes = api(base, "/api/runs/_root/umap.json")["probes"]
        xss_probe = next(pid for pid, prompt in zip(probes["id"], probes["prompt"]) if "&lt;script&gt;" in prompt)
        # the label shows both as typed: "<b>No</b>" would lose its tags if plotly parsed it as markup
        facts = exercise(base, archive, tmp_path, xss_probe, f"{XSS_PROMPT}expected: {XSS_EXPECTED}")
    assert facts["screenshot"].stat().st_size > 10_000


@pytest.mark.slow
def test_interactive_page_on_demo(demo, tmp_path):
    """The trained demo series (the acceptance run), one probe's prompt given a <script>."""
    archive = shutil.copytree(demo.archive_dir(), tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    text = "<script>alert('demo')</script> <b>All</b> cats &amp; dogs?"     # markup shown as typed
    probe = set_prompt(archive, text)
    with served(archive, tmp_path / "serve.log") as base:
        facts = exercise(base, archive, tmp_path, probe, text)
    assert facts["screenshot"].stat().st_size > 10_000


LONG_RUN = 160      # checkpoints: columns of 3 px on a board 500 px wide
STEP_AXES = {"panel-drift": "x", "panel-board": "x", "panel-logprob": "x2", "panel-entropy": "y"}
TICKS_JS = """([id, axis]) => {       // a panel's checkpoint-axis tick labels and axis title, as laid out
    const gd = document.getElementById(id), svg = gd.querySelector('svg.main-svg').getBoundingClientRect();
    const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
    const ticks = [...gd.querySelectorAll('.' + axis + 'tick text')].map(e => ({text: e.textContent, ...box(e)}));
    const title = gd.querySelector('.g-' + axis + 'title text');
    return {ticks, title: title ? box(title) : null,
            svg: {l: svg.left, r: svg.right, t: svg.top, b: svg.bottom}}; }"""


def _overlap(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] - 0.5 and b["l"] < a["r"] - 0.5 and a["t"] < b["b"] - 0.5 and b["t"] < a["b"] - 0.5


def test_a_long_run_s_checkpoint_axes_and_board_read(built_archive, tmp_path):
    """At a few hundred checkpoints the heatmaps' checkpoint axes label a few steps, whole, apart
    and clear of the axis title (plotly labelled every step it could: a comb of upright numbers
    clipped at the margin, over the title), and the hard-example board shows its cells (a 1-px gap
    between 1-px columns left the board white)."""
    from PIL import Image

    from learnviz import analyze
    from learnviz.readout import series
    from learnviz.settings import load_settings

    archive = shutil.copytree(built_archive, tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    have = [a.step for a in series(archive)]
    for i in range(LONG_RUN - len(have)):
        add_checkpoint(archive, max(have) + 10 * (i + 1))
    settings = load_settings(overrides={"archive": str(archive)}, environ={})
    analyze.run_series(series(archive), settings)          # the board and series.h5 over every checkpoint
    with served(archive, tmp_path / "serve.log") as base:
        board = api(base, "/api/runs/_root/board.json")
        assert len(board["steps"]) == LONG_RUN
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(base + "/dynamics?poll=3600")
                page.wait_for_selector("#dynamics[data-ready]", timeout=60_000)
                steps = {str(s) for s in board["steps"]}
                for panel, axis in STEP_AXES.items():
                    assert page.get_attribute("#" + panel, "data-drawn") == "data", panel
                    got = page.evaluate(TICKS_JS, [panel, axis])
                    ticks, title, svg = got["ticks"], got["title"], got["svg"]
                    assert 3 <= len(ticks) <= 12, (panel, [t["text"] for t in ticks])
                    assert {t["text"] for t in ticks} <= steps, panel         # whole step numbers
                    for a, b in zip(ticks, ticks[1:]):
                        assert not _overlap(a, b), (panel, a, b)
                    for t in ticks:
                        inside = svg["l"] <= t["l"] and t["r"] <= svg["r"] and svg["t"] <= t["t"] and t["b"] <= svg["b"]
                        assert inside, (panel, t, svg)
                        assert title is None or not _overlap(t, title), (panel, t, title)
                # the board's plot area is its cells' colours, not the page's white
                page.locator("#panel-board").scroll_into_view_if_needed()
                area = page.evaluate("""() => { const r = document.querySelector('#panel-board .nsewdrag')
                    .getBoundingClientRect(); return {x: r.left, y: r.top, width: r.width, height: r.height}; }""")
                shot = tmp_path / "board.png"
                page.screenshot(path=str(shot), clip=area)
            finally:
                browser.close()
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int).reshape(-1, 3)
    red, green = np.array([0xd6, 0x27, 0x28]), np.array([0x2c, 0xa0, 0x2c])
    coloured = (np.abs(pixels - red).sum(1) < 60) | (np.abs(pixels - green).sum(1) < 60)
    assert coloured.mean() > 0.85, f"{coloured.mean():.0%} of the board's plot area shows a cell"


def test_skills_named_like_javascript_members_draw_their_points(built_archive, tmp_path):
    """Skills named "constructor", "toString" and "__proto__" (a probe file's free text): the UMAP
    panel grouped probes by skill in a plain object, where "constructor" found Object's own
    function and `.push` threw, so the panel stayed empty with a console error."""
    from learnviz import archive as arc
    from learnviz.readout import EXTRACT, series

    archive = shutil.copytree(built_archive, tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    names = ["constructor", "toString", "__proto__"]
    for a in series(archive):          # every checkpoint's probe set, as a probe file would give them
        info, data = a.stage(EXTRACT), a.read(EXTRACT)
        data["probe_skill"] = np.array([names[i % 3] for i in range(len(data["probe_skill"]))], dtype=object)
        arc.write_stage(a.path, EXTRACT, key=info.key, root_attrs=a.attrs, data=data, attrs=info.attrs)
    errors = []
    with served(archive, tmp_path / "serve.log") as base:
        n_probes = len(api(base, "/api/runs/_root/umap.json")["probes"]["id"])
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "/dynamics?poll=3600")
                page.wait_for_selector("#dynamics[data-ready]", timeout=60_000)
                assert page.get_attribute("#panel-umap", "data-drawn") == "data"
                traces = plotted(page, "panel-umap")
                assert sorted(t["name"] for t in traces) == sorted(names)
                assert sum(len(t["x"]) for t in traces) == n_probes
            finally:
                browser.close()
    assert not errors, errors
