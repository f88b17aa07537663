"""The dashboard over an archive folder with bad files in it: each is shown as unreadable with a
reason naming it, on the pages and in the JSON API, and no page fails or leaves it out.

The run is the no-model series of tests/plots/conftest.py (steps 10, 20, 40, 80: real archives
written through the archive API, real CPU stages), built once per module and copied per test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from dashboard_run import make_app
from helpers import snapshot
from markupsafe import escape
from plots.conftest import make_series

STEPS = (10, 20, 40, 80)


@pytest.fixture(scope="module")
def built_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    make_series(folder)
    return folder / "archive"


@pytest.fixture
def archive(built_series, tmp_path) -> Path:
    shutil.copytree(built_series, tmp_path / "archive", ignore=shutil.ignore_patterns(".locks"))
    return tmp_path / "archive"


def client_of(archive: Path):
    return make_app(archive).test_client()


def page(client, url: str) -> str:
    r = client.get(url)
    assert r.status_code == 200, (url, r.status_code, r.data[:300])
    return r.get_data(as_text=True)


def every_url(steps) -> list[str]:
    return ["/", "/checkpoints", *(f"/checkpoints/{s}" for s in steps), "/hard-examples", "/api/status.json",
            "/api/history.json", *(f"/api/checkpoints/{s}.json" for s in steps), "/api/hard_examples.json",
            "/api/version.json"]


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_truncated_archive_is_a_failure_with_its_reason_everywhere(archive):
    path = archive / "checkpoint-20.h5"
    truncate_half(path)
    c = client_of(archive)
    d = c.get("/api/status.json").get_json()
    assert d["checkpoints"] == 4 and d["analysed"] == 3 and d["steps"] == list(STEPS)
    [f] = d["failures"]
    assert f["reason"].startswith(f"{path}: cannot be read as HDF5")
    assert f == {"step": 20, "name": "checkpoint-20", "stage": "archive", "reason": f["reason"], "unreadable": True,
                 "file": "checkpoint-20.h5"}
    rows = {r["step"]: r for r in d["rows"]}
    assert sorted(rows) == list(STEPS)
    assert rows[20] == {"step": 20, "name": "checkpoint-20", "stages": {"archive": "unreadable"},
                        "reason": f["reason"], "failed": ["archive"], "accuracy": None, "skills": {},
                        "flags": {}}

    html = page(c, "/checkpoints/20")
    assert "No archived checkpoint" not in html
    assert "This checkpoint's archive cannot be read" in html and str(escape(f["reason"])) in html
    assert 'class="stage failed">unreadable<' in html and "checkpoint-20.h5.corrupt" in html
    assert 'href="/checkpoints/10"' in html and 'href="/checkpoints/40"' in html        # its neighbours
    j = c.get("/api/checkpoints/20.json").get_json()
    assert (j["unreadable"], j["archive"], j["extracted"]) == (True, "checkpoint-20.h5", False)
    assert j["reason"] == f["reason"]
    assert j["stages"][0]["status"] == "unreadable" and (j["previous"], j["next"]) == (10, 40)
    assert c.get("/api/checkpoints/40.json").get_json()["previous"] == 20

    rows_html = re.findall(r"<tr.*?</tr>", page(c, "/checkpoints").split("<tbody>")[1], re.S)
    assert len(rows_html) == 4
    assert 'class="row-failed"' in rows_html[1] and ">unreadable<" in rows_html[1]
    assert str(escape(f["reason"])) in rows_html[1]
    overview = page(c, "/")
    assert 'href="/checkpoints/20"' in overview and "<code>checkpoint-20.h5</code>" in overview
    assert "1 unreadable file" in overview and str(escape(f["reason"])) in overview


def test_non_integer_step_breaks_no_page(archive):
    path = archive / "checkpoint-40.h5"
    with h5py.File(path, "a") as f:
        f.attrs["step"] = "abc"
    c = client_of(archive)
    for url in every_url(STEPS):
        assert c.get(url).status_code == 200, url
    [f] = c.get("/api/status.json").get_json()["failures"]
    assert f["step"] == 40
    assert f["reason"].startswith(f"{path} field 'step': root attribute step is 'abc', not an integer")
    assert str(escape(f["reason"])) in page(c, "/checkpoints/40") and str(escape(f["reason"])) in page(c, "/")


def test_archive_of_another_schema_is_shown_and_not_offered_for_rebuilding(archive):
    path = archive / "checkpoint-80.h5"
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 2
    c = client_of(archive)
    [f] = c.get("/api/status.json").get_json()["failures"]
    assert (f["step"], f["file"]) == (80, "checkpoint-80.h5")
    assert f["reason"] == (f"{path} field 'schema_version': schema_version 2; this learnviz reads 1 "
                           "(written by a newer learnviz? upgrade learnviz, or move it away to rebuild)")
    html = page(c, "/checkpoints/80")
    assert "does not overwrite it" in html and ".corrupt" not in html
    assert c.get("/api/checkpoints/80.json").get_json()["foreign"] is True
    assert c.get("/api/status.json").get_json()["latest"]["step"] == 40       # the newest readable one


def test_corrupt_board_is_unreadable_not_missing(archive):
    board = archive / "hard_example_board.json"
    board.write_text('{"steps": [10, 20,')
    c = client_of(archive)
    html = page(c, "/hard-examples")
    assert "No hard-example board yet" not in html
    assert "The hard-example board cannot be read" in html and f"{board}: is not valid JSON" in html
    d = c.get("/api/hard_examples.json").get_json()
    assert d["available"] is False and d["error"].startswith(f"{board}: is not valid JSON")
    [f] = c.get("/api/status.json").get_json()["failures"]
    assert f == {"step": None, "name": "hard_example_board.json", "stage": "board", "reason": d["error"],
                 "unreadable": True, "file": "hard_example_board.json"}
    assert 'href="/hard-examples"' in page(c, "/") and "<code>hard_example_board.json</code>" in page(c, "/")
    for url in every_url(STEPS):
        assert c.get(url).status_code == 200, url

    board.unlink()                                  # absent is still "not yet", with no error
    c = client_of(archive)
    assert "No hard-example board yet" in page(c, "/hard-examples")
    assert "error" not in c.get("/api/hard_examples.json").get_json()
    assert c.get("/api/status.json").get_json()["failures"] == []


def test_unreadable_archive_without_a_step_in_its_name_and_nothing_written(archive):
    (archive / "my-model.h5").write_bytes(b"not hdf5 at all")
    truncate_half(archive / "checkpoint-10.h5")
    before = snapshot(archive)
    c = client_of(archive)
    for url in every_url(STEPS):
        assert c.get(url).status_code == 200, url
    d = c.get("/api/status.json").get_json()
    assert [(f["step"], f["file"]) for f in d["failures"]] == [(10, "checkpoint-10.h5"), (None, "my-model.h5")]
    assert [r["step"] for r in d["rows"]] == [*STEPS, None] and d["checkpoints"] == 5
    rows_html = page(c, "/checkpoints")
    assert '<td class="num">?</td>' in rows_html and "<code>my-model</code>" in rows_html
    assert f"{archive / 'my-model.h5'}: cannot be read as HDF5" in rows_html
    assert snapshot(archive) == before              # the dashboard only reads


@pytest.mark.parametrize("layer", ["--1", "²", "1" * 5000, "٢", "+1", " 2", "0x1", ""])
def test_a_layer_that_is_no_decimal_number_is_a_404_naming_the_parameter(archive, layer):
    c = client_of(archive)
    assert c.get("/api/runs/_root/umap/80.json", query_string={"layer": "2"}).status_code == 200
    r = c.get("/api/runs/_root/umap/80.json", query_string={"layer": layer})
    assert r.status_code == 404, layer
    assert r.get_json() == {"error": "give the layer: ?layer=K (umap.json lists them)"}


def strict_json(body: bytes):
    """JSON as a browser's JSON.parse reads it: NaN and Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(body, parse_constant=refuse)


def test_non_finite_numbers_in_an_archive_reach_no_answer_as_nan(archive):
    """A layout with NaN and inf points (an archive written elsewhere): every JSON answer stays
    JSON (docs/api.md: NaN and inf are null), and the layer's fixed axes span its finite points."""
    with h5py.File(archive / "checkpoint-80.h5", "a") as f:
        coords = f["geometry/layer_2/coords"]
        c = coords[...]
        c[0, 0], c[1, 1] = np.nan, np.inf
        coords[...] = c
    c = client_of(archive)
    r = c.get("/api/runs/_root/umap/80.json?layer=2")
    assert r.status_code == 200
    frame = strict_json(r.data)
    assert frame["x"][0] is None and frame["y"][1] is None and None not in frame["x"][1:]
    u = strict_json(c.get("/api/runs/_root/umap.json").data)
    (x0, x1), (y0, y1) = u["ranges"]["2"]["x"], u["ranges"]["2"]["y"]
    for step in u["steps"]:
        f = strict_json(c.get(f"/api/runs/_root/umap/{step}.json?layer=2").data)
        assert all(x0 <= x <= x1 for x in f["x"] if x is not None), step
        assert all(y0 <= y <= y1 for y in f["y"] if y is not None), step
    for url in every_url(STEPS) + [f"/api/runs/_root/{p}.json" for p in ("overview", "metrics", "drift", "board",
                                                                       "logprob", "entropy", "geometry")]:
        if url.startswith("/api/"):
            strict_json(c.get(url).data)


PANELS = ("overview", "metrics", "drift", "umap", "board", "logprob", "entropy", "geometry")


@pytest.mark.parametrize("url", [*(f"/api/runs/_root/{p}.json" for p in PANELS),
                                 "/api/runs/_root/umap/10.json?layer=2", "/api/runs/_root/calibration/10.json"])
def test_an_archive_that_vanishes_after_the_listing_is_no_panel_error(archive, monkeypatch, url):
    """Readers never lock: checkpoint-80.h5 moved aside (as `learnviz run` does with a damaged
    one) after the request listed the run and before the panel read it. The panel answers from
    the run as it is now, as it answers for a run that never had it."""
    from learnviz import readout
    listed = readout.scan_archives

    def list_then_lose(folder):
        listing = listed(folder)
        victim = Path(folder) / "checkpoint-80.h5"
        if victim.exists():
            victim.rename(victim.with_name(victim.name + ".corrupt"))
        return listing

    monkeypatch.setattr(readout, "scan_archives", list_then_lose)
    r = client_of(archive).get(url)
    assert r.status_code == 200, (url, r.data[:300])
    monkeypatch.setattr(readout, "scan_archives", listed)
    assert r.get_json() == client_of(archive).get(url).get_json()
    if url.endswith(("metrics.json", "umap.json", "entropy.json", "overview.json")):
        assert r.get_json()["steps"] == [10, 20, 40]


def test_folder_names_that_are_not_utf8_break_no_page_and_their_runs_are_reached(archive, tmp_path):
    """Names whose bytes are not UTF-8 (a Latin-1 `run\\xff`, an archive root below one): Python
    holds them as surrogates, which made every page that wrote one a 500 and the run unreachable
    (no URL or JSON.parse'd id carries them). The run gets an id of its own (its bytes
    percent-encoded), is shown with U+FFFD, and meets no other run's id."""
    from urllib.parse import quote
    root = Path(os.fsdecode(bytes(tmp_path) + b"/root\xfe"))
    odd = os.fsdecode(b"run\xff")
    for name in (odd, "ok", "_bytes:run%FF"):                 # the last: a UTF-8 name like the odd one's id
        shutil.copytree(archive, root / name)
    c = client_of(root)
    runs = {r["id"]: r["label"] for r in c.get("/api/runs.json").get_json()["runs"]}
    assert runs == {"_bytes:run%FF": "run\ufffd", "ok": "ok", "__bytes:run%FF": "_bytes:run%FF"}
    for run_id in runs:
        assert c.get(f"/api/runs/{quote(run_id, safe='')}/metrics.json").get_json()["steps"] == list(STEPS)
        assert c.get(f"/dynamics?run={quote(run_id, safe='')}").status_code == 200, run_id
    html = page(c, "/")
    assert 'href="/dynamics?run=_bytes:run%25FF"' in html and ">run\ufffd</a>" in html
    assert "root\ufffd" in html                                # the archive folder, in the page's text
    page(c, "/checkpoints")

    one = root / odd                                           # served on its own, one archive unreadable
    truncate_half(one / "checkpoint-20.h5")
    c = client_of(one)
    for url in every_url(STEPS):
        assert c.get(url).status_code == 200, url
    assert "root\ufffd/run\ufffd/checkpoint-20.h5: cannot be read as HDF5" in page(c, "/checkpoints/20")


BAD_VALUES = {"train_loss": "abc", "eval_loss": [1], "ece": {"a": 1}, "weight_flags": "x", "geometry": {"1": 5},
              "layer_names": 5, "layer_drifts": 3, "learning_rate": "x", "calibration_direction": 5,
              "geometry_drift": "x", "health_flags": {"flag": 5}, "skill_scores": 7, "accuracy": True}


def test_history_values_of_the_wrong_type_break_no_page_and_leave_the_earlier_ones(archive):
    """A row appended by hand or by another tool with values of the wrong type for documented keys:
    each was a 500 of the overview, a checkpoint page or a panel (the filters and panels take
    them as numbers, mappings, lists); they are left out of the row, as a torn line is skipped,
    and the earlier rows' values for that step stand. Keys the format does not name are kept."""
    from learnviz import history
    good = {r["step"]: r for r in history.read(archive)}[80]
    with open(archive / "learning_history.jsonl", "a") as f:
        f.write(json.dumps({"step": 80, "probe_hash": good["probe_hash"], "my_metric": "text", **BAD_VALUES}) + "\n")
    c = client_of(archive)
    for url in every_url(STEPS) + [f"/api/runs/_root/{p}.json" for p in PANELS]:
        assert c.get(url).status_code == 200, url
    row = {r["step"]: r for r in c.get("/api/history.json").get_json()["rows"]}[80]
    assert row["my_metric"] == "text"
    assert {k: row.get(k) for k in BAD_VALUES} == {k: good.get(k) for k in BAD_VALUES}
    assert c.get("/api/status.json").get_json()["latest"]["train_loss"] == pytest.approx(good["train_loss"])
    assert c.get("/api/runs/_root/drift.json").get_json()["layers"] == good["layer_names"]
