"""A real headless browser against a real `learnviz serve`: the DOM after scripts ran.

Skipped where no Chromium is installed (CI: `apt-get install -y chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import escape

import pytest
from dashboard_run import STEPS, XSS_PROMPT

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")


def dump_dom(url: str, profile) -> str:
    """The DOM Chromium rendered, after the page's scripts ran (offline: no network but this server)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_overview_renders_with_its_script(server, tmp_path):
    base, _, _, _ = server
    dom = dump_dom(base + "/", tmp_path / "profile")
    assert "Learning dynamics" in dom
    # refresh.js ran (under the Content-Security-Policy) and replaced the static note
    assert re.search(r'id="refresh-note">Live: (checked [^;]+; )?checks for new checkpoints every 30 s\.', dom)
    imgs = re.findall(r'<img src="(/figures/[^"]+)"', dom)
    assert len(imgs) >= 6 and any("loss_curve.png" in i for i in imgs)
    assert f'href="/checkpoints/{STEPS[-1]}"' in dom


def test_hard_examples_render_probe_text_as_text(server, tmp_path):
    base, _, _, _ = server
    dom = dump_dom(base + "/hard-examples", tmp_path / "profile")
    assert escape(XSS_PROMPT, quote=False) in dom                   # shown as text ...
    assert dom.count("<script") == 1                               # ... never as an element
    assert dom.count('class="cell ') >= 2 * len(STEPS)
