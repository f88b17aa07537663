"""The HTML pages and the figure files, through Flask's test client, over a real archive."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from dashboard_run import BROKEN_STEP, N_PROBES, STEPS, XSS_EXPECTED, XSS_PROMPT, make_app
from helpers import snapshot
from markupsafe import escape

from dashboard.serializers import MAIN
from learnviz import history
from learnviz.readout import status_rows

PAGES = ["/", "/checkpoints", *(f"/checkpoints/{s}" for s in (*STEPS, BROKEN_STEP)), "/hard-examples"]


def text(response) -> str:
    assert response.status_code == 200, response.data[:500]
    assert response.content_type.startswith("text/html")
    return response.get_data(as_text=True)


def test_index_shows_the_run_summary_and_the_six_panels(client, archive):
    page = text(client.get("/"))
    latest = history.read(archive)[-1]
    assert latest["step"] == STEPS[-1]
    cards = dict(re.findall(r'<div class="label">(.*?)</div>\s*<div class="value">(.*?)</div>', page, re.S))
    assert cards["Checkpoints"] == str(len(STEPS) + 1)
    assert f">{STEPS[-1]}</a>" in cards["Latest step"]
    assert cards["Probe accuracy"] == f"{100 * latest['accuracy']:.0f}%"
    assert cards["Calibration (ECE)"] == f"{latest['ece']:.3f}"
    assert cards["Loss"] == f"{latest['train_loss']:.3g}"
    # the failed stage, with its reason, linked to its checkpoint
    assert f'href="/checkpoints/{BROKEN_STEP}"' in page and "config.json is not valid JSON" in page
    # every panel of the plan's dashboard, in its order, each image linking to its full size
    srcs = re.findall(r'<a href="([^"]+)" title="[^"]*"><img src="([^"]+)"', page)
    names = [href.split("?")[0].rsplit("/", 1)[1] for href, src in srcs]
    assert names[:6] == [f for f, _, _ in MAIN]
    assert all(href == src and src.startswith("/figures/") and "?v=" in src for href, src in srcs)
    # and the further figures that exist, GIFs included
    assert {"geometry_drift_cka.png", "umap_animated.gif", "skill_radar_animated.gif"} <= set(names)


def test_checkpoints_page_has_one_row_per_archive(client, archive):
    page = text(client.get("/checkpoints"))
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr.*?</tr>", body, re.S)
    expected = status_rows(archive)
    assert len(rows) == len(expected) == len(STEPS) + 1
    for html, row in zip(rows, expected):
        assert f'href="/checkpoints/{row.step}">{row.step}</a>' in html
        if row.step == BROKEN_STEP:
            assert 'class="row-failed"' in html and ">failed<" in html and "config.json is not valid JSON" in html
        else:
            assert html.count(">ok<") == 3                                   # extract, analysis, geometry
            assert f">{100 * row.accuracy:.0f}%<" in html
            for acc in row.skills.values():
                assert f">{100 * acc:.0f}%<" in html
    assert all(f">{skill}</th>" in page for skill in ("easy", "medium", "hard", "hard_examples"))


def test_checkpoint_page_shows_radar_umap_calibration_and_weights(client, archive):
    step = STEPS[-1]
    page = text(client.get(f"/checkpoints/{step}"))
    assert f'src="/figures/radar_{step}.png?v=' in page and f'src="/figures/umap_{step}.png?v=' in page
    row = history.read(archive)[-1]
    assert f"ECE {row['ece']:.3f}" in page and f"Brier {row['brier']:.3f}" in page
    bins = re.findall(r"<tr><td>(\d\.\d\d)–(\d\.\d\d)</td><td class=\"num\">(\d+)</td>", page)
    assert bins and sum(int(n) for _, _, n in bins) == N_PROBES
    flags = row["weight_flags"]                                      # only the flags that fired
    if flags:
        assert all(f'<li class="bad">{kind}: {", ".join(layers)}</li>' in page for kind, layers in flags.items())
    else:
        assert "No weight flags" in page
    for layer in row["layer_names"]:
        assert f"<code>{layer}</code>" in page
    assert f'href="/checkpoints/{STEPS[-2]}"' in page or f'href="/checkpoints/{BROKEN_STEP}"' in page


def test_failed_checkpoint_page_says_why_and_what_is_missing(client):
    page = text(client.get(f"/checkpoints/{BROKEN_STEP}"))
    assert 'class="stage failed">failed<' in page and "config.json is not valid JSON" in page
    assert "extraction did not succeed" in page and "--retry-failed" in page
    assert "Not drawn yet" not in page and "radar_25" not in page        # no figure can exist


def test_unknown_checkpoint_is_a_404_page(client):
    r = client.get("/checkpoints/999")
    assert r.status_code == 404 and b"No archived checkpoint at step 999" in r.data


def test_hard_examples_page_table(client, archive):
    page = text(client.get("/hard-examples"))
    board = json.loads((archive / "hard_example_board.json").read_text())
    for s in STEPS:
        assert f'<a href="/checkpoints/{s}">{s}</a></th>' in page
    for ex in board["examples"]:
        assert f"<code>{escape(ex['id'])}</code>" in page
        for cell in ex["rows"]:
            assert f'title="step {cell["step"]}: ' in page
            if not cell["correct"]:                          # the model's answer and error type on hover
                shown = escape(cell["answer"]) if cell["answer"] else "(empty answer)"
                assert f'title="step {cell["step"]}: {cell["error_type"]}: {shown}"' in page
    rows = page.split("<tbody>")[1].split("</tbody>")[0].count('<th scope="row"')
    assert rows == len(board["examples"]) == 2
    assert "first right" in page and "regressed" in page


def test_the_hard_examples_page_of_a_long_run_shows_a_screen_of_checkpoints(client, archive):
    """A board of 100 checkpoints (the series stage's file, its rows spread over more steps): the
    page shows 40 columns, evenly spaced, the first and the latest in, and says so; `?all=1` shows
    every one. Before, it drew every column: 12,500 cells and 2 MB at 500 checkpoints, the latest
    ones a long scroll away. The JSON API keeps every checkpoint."""
    path = archive / "hard_example_board.json"
    board = json.loads(path.read_text())
    steps = [10 * (i + 1) for i in range(100)]
    for ex in board["examples"]:
        rows = ex["rows"]
        ex["rows"] = [{**rows[i % len(rows)], "step": s, "correct": i % 3 == 0} for i, s in enumerate(steps)]
        ex["first_right"], ex["regressed"] = steps[0], True
    board["steps"] = steps
    board["error_type_counts"] = [{"wrong_token": i} for i in range(100)]
    path.write_text(json.dumps(board))

    def shown(page):
        head = page.split("<thead>")[1].split("</thead>")[0]
        return [int(s) for s in re.findall(r'<a href="/checkpoints/\d+">(\d+)</a></th>', head)]

    page = text(client.get("/hard-examples"))
    columns = shown(page)
    want = sorted({round(i * 99 / 39) for i in range(40)})
    assert columns == [steps[i] for i in want] and columns[0] == 10 and columns[-1] == 1000
    assert "40 of 100 checkpoints, evenly spaced" in page and 'href="/hard-examples?all=1"' in page
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count('class="cell ') == 40 * len(board["examples"])
    assert 'title="step 1000: right: ' in body and 'title="step 990: ' not in body      # 990 is not a column
    foot = page.split("<tfoot>")[1].split("</tfoot>")[0]
    assert [int(n) for n in re.findall(r'<td class="num"[^>]*>(\d+)</td>', foot)] == want
    every = text(client.get("/hard-examples?all=1"))
    assert shown(every) == steps and "evenly spaced" not in every
    assert client.get("/api/hard_examples.json").get_json()["steps"] == steps


def test_every_probe_text_is_escaped(client, archive):
    # a model answer that tries to leave its title attribute
    path = archive / "hard_example_board.json"
    board = json.loads(path.read_text())
    evil = '"><img src=x onerror=alert(1)>'
    for cell in board["examples"][0]["rows"]:
        cell.update(answer=evil, correct=False, error_type="malformed")
    path.write_text(json.dumps(board))
    for url in ["/hard-examples", f"/checkpoints/{STEPS[-1]}"]:
        page = text(client.get(url))
        assert escape(XSS_PROMPT) in page and escape(XSS_EXPECTED) in page
        assert "<script>alert" not in page and "<b>No</b>" not in page
        assert evil not in page and escape(evil) in page
        own = page.count('<script src="/static/') + page.count('<script src="/vendor/plotly.min.js"')
        assert page.count("<script") == own >= 1             # only the page's own scripts (refresh.js, plotly.js)


def test_figures_are_served_from_the_visualizations_folder(client, archive):
    vis = archive / "visualizations"
    r = client.get("/figures/loss_curve.png")
    assert r.status_code == 200 and r.content_type == "image/png"
    assert r.data == (vis / "loss_curve.png").read_bytes()
    r = client.get("/figures/umap_animated.gif")
    assert r.status_code == 200 and r.content_type == "image/gif"


def test_no_path_outside_the_visualizations_folder(client, archive, tmp_path):
    secret = archive / "secret.png"                       # inside the archive, outside visualizations/
    secret.write_bytes(b"\x89PNG secret")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG outside")
    (archive / "visualizations" / "link.png").symlink_to(outside)
    probes = ["/figures/../secret.png", "/figures/..%2Fsecret.png", "/figures/%2e%2e/secret.png",
              "/figures/%2E%2E%2Fsecret.png", "/figures/../../outside.png", f"/figures/{outside}",
              f"/figures/{str(outside).replace('/', '%2F')}", "/figures//etc/passwd", "/figures/link.png",
              "/figures/manifest.json", "/figures/../learning_history.jsonl", "/figures/../checkpoint-10.h5",
              "/figures/nothing.png", "/figures/.", "/figures/%00.png"]
    for url in probes:
        r = client.get(url, follow_redirects=True)
        assert r.status_code == 404, url
        assert b"PNG secret" not in r.data and b"PNG outside" not in r.data and b"root:" not in r.data, url


def test_empty_or_missing_archive_folder_is_a_message_not_an_error(tmp_path):
    for folder in (tmp_path / "empty", tmp_path / "does-not-exist"):
        if folder.name == "empty":
            folder.mkdir()
        c = make_app(folder).test_client()
        for url in ["/", "/checkpoints", "/hard-examples"]:
            page = text(c.get(url))
            assert "No archived checkpoints yet" in page or "No hard-example board yet" in page, url
        assert "Not drawn yet" in text(c.get("/"))
        assert c.get(f"/checkpoints/{STEPS[0]}").status_code == 404
        assert not folder.exists() or not any(folder.iterdir())          # nothing written


def test_archive_without_figures_yet(client, archive):
    shutil.rmtree(archive / "visualizations")
    page = text(client.get("/"))
    assert "No figures yet" in page and page.count("Not drawn yet") == len(MAIN)
    assert "Not drawn yet" in text(client.get(f"/checkpoints/{STEPS[-1]}"))
    assert client.get("/figures/loss_curve.png").status_code == 404


def test_requests_never_write_to_the_archive(client, archive):
    before = snapshot(archive)
    urls = PAGES + ["/api/status.json", "/api/history.json", "/api/hard_examples.json", "/api/version.json",
                    f"/api/checkpoints/{STEPS[0]}.json", "/figures/loss_curve.png", "/checkpoints/999"]
    for url in urls:
        assert client.get(url).status_code in (200, 404)
    assert snapshot(archive) == before


def test_pages_load_nothing_from_elsewhere(client):
    for url in PAGES:
        r = client.get(url)
        page = text(r)
        assert not re.search(r'(src|href)="(https?:)?//', page), url
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for asset in ("style.css", "refresh.js"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_the_page_reloads_itself_when_the_archive_changes(client, archive):
    page = text(client.get("/"))
    version = client.get("/api/version.json").get_json()["version"]
    assert f'data-version="{version}"' in page and 'src="/static/refresh.js"' in page
    assert re.search(r'<noscript><meta http-equiv="refresh" content="30"></noscript>', page)
    shutil.copy(archive / f"checkpoint-{STEPS[-1]}.h5", archive / "checkpoint-40.h5")   # a new archive
    assert client.get("/api/version.json").get_json()["version"] != version


def test_config_comes_from_the_learnviz_settings(tmp_path, monkeypatch):
    from dashboard import create_app
    from learnviz.errors import ConfigError
    from learnviz.settings import load_settings

    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(load_settings(overrides={"checkpoints": str(tmp_path / "run")}, environ={}))
    assert app.config["LEARNVIZ_ARCHIVE"] == str((tmp_path / "run" / "learnviz-archive").resolve())
    assert app.debug is False and app.config["DEBUG"] is False
    assert app.jinja_env.autoescape is True
    with pytest.raises(ConfigError, match="archive"):
        create_app(load_settings(environ={}))
    assert Path(make_app(tmp_path).config["LEARNVIZ_ARCHIVE"]) == tmp_path.resolve()
