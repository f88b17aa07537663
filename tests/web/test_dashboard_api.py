"""The JSON API under /api/: shapes, values against the archive, strict JSON."""

from __future__ import annotations

import json
import re
from html import escape

import pytest
from dashboard_run import BROKEN_STEP, HARD_EXAMPLES, N_PROBES, PROBES, STEPS, XSS_PROMPT, build, make_app

from learnviz import history
from learnviz.readout import status_rows


def get(client, url, status=200):
    r = client.get(url)
    assert r.status_code == status, (url, r.data[:300])
    assert r.content_type == "application/json"

    def no_nan(token):
        raise AssertionError(f"{url}: {token} is not JSON")
    return json.loads(r.get_data(as_text=True), parse_constant=no_nan)


def test_status(client, archive):
    d = get(client, "/api/status.json")
    assert {"archive", "version", "checkpoints", "analysed", "steps", "latest", "first", "failures", "rows",
            "health_flags"} <= set(d)
    assert d["checkpoints"] == len(STEPS) + 1 and d["analysed"] == len(STEPS)
    assert d["steps"] == sorted([*STEPS, BROKEN_STEP])
    assert d["latest"]["step"] == STEPS[-1] and d["first"]["step"] == STEPS[0]
    assert d["latest"]["ece"] == pytest.approx(history.read(archive)[-1]["ece"])
    assert d["failures"] == [{"step": BROKEN_STEP, "name": f"checkpoint-{BROKEN_STEP}", "stage": "extract",
                              "reason": d["failures"][0]["reason"]}]
    assert "config.json is not valid JSON" in d["failures"][0]["reason"]
    for row, expected in zip(d["rows"], status_rows(archive)):
        assert set(row) == {"step", "name", "stages", "reason", "failed", "accuracy", "skills", "flags"}
        assert row["step"] == expected.step and row["stages"] == expected.stages and row["flags"] == expected.flags
        if expected.accuracy is None:
            assert row["accuracy"] is None
        else:
            assert row["accuracy"] == pytest.approx(expected.accuracy)
        assert row["failed"] == (["extract"] if row["step"] == BROKEN_STEP else [])


def test_history_is_the_merged_rows(client, archive):
    d = get(client, "/api/history.json")
    assert [r["step"] for r in d["rows"]] == list(STEPS)
    assert d["rows"] == json.loads(json.dumps(history.read(archive)))
    assert all("accuracy" in r and "ece" in r and "skill_scores" in r for r in d["rows"])


def test_checkpoint(client, archive):
    step = STEPS[1]
    d = get(client, f"/api/checkpoints/{step}.json")
    assert d["step"] == step and d["name"] == f"checkpoint-{step}"
    assert [s["name"] for s in d["stages"]] == ["extract", "analysis", "geometry"]
    assert all(s["status"] == "ok" and s["worker"] for s in d["stages"])
    assert d["previous"] == STEPS[0] and d["next"] == BROKEN_STEP
    cal = d["analysis"]["calibration"]
    assert cal["n_bins"] == 15 and sum(b["count"] for b in cal["bins"]) == N_PROBES
    assert cal["ece"] == pytest.approx(history.read(archive)[1]["ece"])
    w = d["analysis"]["weights"]
    assert w["available"] and set(w["flags"]) == {"exploding", "vanishing", "dead"}
    assert [layer["name"] for layer in w["layers"]] == history.read(archive)[1]["layer_names"]
    assert d["figures"]["radar"]["exists"] and d["figures"]["radar"]["url"].startswith(f"/figures/radar_{step}.png?v=")
    assert d["figures"]["umap"]["exists"]
    assert set(d["geometry"]) and all("cka_prev" in m for m in d["geometry"].values())
    assert {ex["id"] for ex in d["hard_examples"]} == {"xss_1", "double_neg_1"}
    assert any(ex["prompt"] == XSS_PROMPT for ex in d["hard_examples"])      # raw in JSON; pages escape


def test_failed_checkpoint(client):
    d = get(client, f"/api/checkpoints/{BROKEN_STEP}.json")
    assert d["stages"][0]["status"] == "failed" and "config.json" in d["stages"][0]["reason"]
    assert d["analysis"] is None and d["accuracy"] is None
    assert not d["figures"]["radar"]["exists"] and d["figures"]["radar"]["url"] is None


def test_unknown_checkpoint_and_route_are_json_404s(client):
    assert "999" in get(client, "/api/checkpoints/999.json", 404)["error"]
    assert "error" in get(client, "/api/nothing.json", 404)


def test_hard_examples(client, archive):
    d = get(client, "/api/hard_examples.json")
    board = json.loads((archive / "hard_example_board.json").read_text())
    assert d["available"] and d["steps"] == list(STEPS) == board["steps"]
    assert [e["id"] for e in d["examples"]] == [e["id"] for e in board["examples"]]
    for e, b in zip(d["examples"], board["examples"]):
        assert [c["correct"] for c in e["cells"]] == [r["correct"] for r in b["rows"]]
        assert [c["answer"] for c in e["cells"]] == [r["answer"] for r in b["rows"]]
        assert e["first_right"] == b["first_right"] and e["regressed"] == b["regressed"]


def test_empty_archive_folder(tmp_path):
    c = make_app(tmp_path).test_client()
    d = get(c, "/api/status.json")
    assert d["checkpoints"] == 0 and d["rows"] == [] and d["latest"] is None and d["failures"] == []
    assert get(c, "/api/history.json")["rows"] == []
    assert get(c, "/api/hard_examples.json")["available"] is False
    assert get(c, "/api/version.json")["version"]


def test_panels_are_compact_escaped_and_equal_the_archive(client, archive):
    from learnviz.readout import series
    archives = series(archive)
    m = get(client, "/api/runs/_root/metrics.json")
    assert m["steps"] == list(STEPS)
    want = [r.accuracy for r in status_rows(archive) if r.step in STEPS]
    assert m["accuracy"] == [round(a, 4) for a in want]
    u = get(client, "/api/runs/_root/umap.json")
    assert len(u["probes"]["id"]) == N_PROBES and u["steps"] == list(STEPS)
    assert any("&lt;script&gt;" in p for p in u["probes"]["prompt"])          # escaped for plotly's labels
    assert not any("<" in p for p in u["probes"]["prompt"] + u["probes"]["expected"])
    layer = u["layers"][-1]
    f = get(client, f"/api/runs/_root/umap/{STEPS[-1]}.json?layer={layer}")
    coords = archives[-1].read("geometry", [f"layer_{layer}/coords"])[f"layer_{layer}/coords"]
    assert f["x"] == [round(float(v), 3) for v in coords[:, 0]] and len(f["correct"]) == N_PROBES
    get(client, f"/api/runs/_root/umap/{STEPS[-1]}.json?layer=999", status=404)
    get(client, f"/api/runs/_root/calibration/{BROKEN_STEP}.json", status=404)
    b = get(client, "/api/runs/_root/board.json")
    assert b["available"] and len(b["z"]) == len(b["examples"]) == 2
    assert all("<" not in a for a in b["answers"])


def test_runs_are_the_root_and_its_run_subfolders_only(archive, tmp_path):
    root = tmp_path / "root"
    for name in ("alpha", "beta"):
        copy_tree(archive, root / name)
    (root / "notes").mkdir()                                           # holds no run: not listed
    client = make_app(root).test_client()
    runs = get(client, "/api/runs.json")["runs"]
    assert [r["id"] for r in runs] == ["alpha", "beta"] and runs[0]["steps"] == len(STEPS)
    assert runs[0]["probe_hash"] == runs[1]["probe_hash"]
    assert get(client, "/api/runs/beta/metrics.json")["steps"] == list(STEPS)
    for bad in ("notes", "..", "%2e%2e", "_root", "alpha%2F..%2Fbeta"):
        assert client.get(f"/api/runs/{bad}/metrics.json").status_code == 404, bad
    page = client.get("/dynamics?run=beta")
    assert page.status_code == 200 and b'data-run="beta"' in page.data
    assert client.get("/dynamics?run=..").status_code == 404
    # the overview and the checkpoints page say the folder holds runs, and link each (not "no checkpoints yet")
    assert get(client, "/api/status.json")["runs"] == ["alpha", "beta"]
    for url in ("/", "/checkpoints"):
        html = client.get(url).get_data(as_text=True)
        assert "This folder holds 2 runs" in html and "No archived checkpoints yet" not in html, url
        assert 'href="/dynamics?run=alpha"' in html and 'href="/dynamics?run=beta"' in html, url


def test_runs_of_any_folder_name_are_listed_and_reachable(archive, tmp_path):
    """Names that `learnviz run` and `status` handle but a URL must quote: listed with their names,
    reached by the percent-encoded id, looked up in the listing (never joined to a path)."""
    from urllib.parse import quote
    root = tmp_path / "root"
    names = ["+seed1", "lr 3e-4", "lr=1e-3", "run_ü", "x<b>y"]
    for name in names:
        copy_tree(archive, root / name)
    client = make_app(root).test_client()
    runs = get(client, "/api/runs.json")["runs"]
    assert [r["id"] for r in runs] == [r["label"] for r in runs] == sorted(names)
    for name in names:
        url = f"/api/runs/{quote(name, safe='')}"
        assert get(client, url + "/metrics.json")["steps"] == list(STEPS), name
        assert get(client, url + "/version.json")["run"] == name
        page = client.get(f"/dynamics?run={quote(name, safe='')}")
        assert page.status_code == 200 and f'data-run="{escape(name)}"'.encode() in page.data, name
    assert b"x<b>y" not in client.get("/dynamics?run=x%3Cb%3Ey").data                 # the page escapes the name
    for bad in ("..", "%2e%2e", "lr%3D1e-3%2F..", "_root", "lr", "%2Bseed1%00"):
        assert client.get(f"/api/runs/{bad}/metrics.json").status_code == 404, bad


def test_a_run_folder_named_like_the_roots_id_is_listed_under_its_own(archive, tmp_path):
    """`_root` is the id of the archive folder itself: a run subfolder named `_root` (or `_x`) gets
    one more "_" in front of its id, is listed under its name and reached, and the root's run stays
    the root's."""
    root = tmp_path / "root"
    copy_tree(archive, root)
    for name in ("_root", "_x", "__root"):
        copy_tree(archive, root / name)
    client = make_app(root).test_client()
    runs = {r["id"]: r["label"] for r in get(client, "/api/runs.json")["runs"]}
    assert runs == {"_root": "root", "__root": "_root", "__x": "_x", "___root": "__root"}
    assert get(client, "/api/runs/__root/version.json")["run"] == "__root"
    assert get(client, "/api/runs/_root/metrics.json")["steps"] == list(STEPS)
    assert get(client, "/api/runs/__root/metrics.json")["steps"] == list(STEPS)
    assert client.get("/api/runs/_x/metrics.json").status_code == 404
    page = client.get("/dynamics?run=__root")
    assert page.status_code == 200 and b'data-run="__root"' in page.data


def copy_tree(src, dst):
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".locks"))


XSS_SKILL = "sk<script>alert(3)</script>"
XSS_CATEGORY = "'><svg onload=alert(8)>"


def test_no_panel_returns_a_raw_skill_or_category_name(tmp_path):
    """Skill and category names are probe texts too: escaped in every panel's answer (plotly renders
    trace names, radar labels and hover labels as HTML), as prompts are. The summary endpoints are
    data, raw; the pages escape them once."""
    probes = [(p, e, XSS_SKILL if i % 2 else s, XSS_CATEGORY if i < 3 else c) for i, (p, e, s, c) in enumerate(PROBES)]
    hard = HARD_EXAMPLES.replace("category: negation", "category: %s" % json.dumps(XSS_CATEGORY))
    archive = build(tmp_path, probes=probes, hard_examples=hard, gifs=False)
    client = make_app(archive).test_client()
    overview = get(client, "/api/runs/_root/overview.json")
    assert escape(XSS_SKILL) in overview["skills"]
    assert escape(XSS_SKILL) in get(client, "/api/runs/_root/metrics.json")["skills"]
    layer = get(client, "/api/runs/_root/umap.json")["layers"][-1]
    urls = ["/api/runs.json",
            *(f"/api/runs/_root/{p}.json" for p in ("overview", "metrics", "drift", "umap", "board", "logprob",
                                                    "entropy", "geometry")),
            f"/api/runs/_root/umap/{STEPS[-1]}.json?layer={layer}", f"/api/runs/_root/calibration/{STEPS[-1]}.json"]
    seen = ""
    for url in urls:
        body = get(client, url) and client.get(url).get_data(as_text=True)
        assert not re.search(r"<script|<svg|<b>", body), (url, body[:500])
        seen += body
    assert escape(XSS_SKILL) in seen and escape(XSS_CATEGORY) in seen        # there, as text
    c = get(client, f"/api/checkpoints/{STEPS[-1]}.json")                    # a summary endpoint: data
    assert XSS_SKILL in c["skills"] and XSS_SKILL in c["analysis"]["skills"]
    page = client.get(f"/checkpoints/{STEPS[-1]}").get_data(as_text=True)   # the page: escaped once
    assert escape(XSS_SKILL) in page and escape(escape(XSS_SKILL)) not in page and XSS_SKILL not in page
