"""Archives written before the read side moved to learnviz/readout.py read back unchanged.

tests/fixtures/archive_v1/ was written by learnviz at commit 38d0c51 (tests/fixtures/make_archive_v1.py
says how); its expected.json holds what that version's readers returned. Today's readers must
return the same values from the same files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from learnviz import readout
from learnviz.common import clean_json
from learnviz.plots import sources
from learnviz.results import ANALYSIS, GEOMETRY

FIXTURE = Path(__file__).parent / "fixtures" / "archive_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
# Differ by where and when the fixture lies, not by what it holds.
LOCAL = {"archive", "version", "url"}
# Added since the fixture was written (health flags, issue 15; the status files' lines, issue 16;
# the notes of ok stages: probes that failed alone; the probe set of an archive not in the series):
# compared apart, empty on this run.
ADDED = {"flags", "health_flags", "training", "notes", "other_probes"}


def normal(value):
    """JSON-normal form (as the old expected.json was written), minus the local fields."""
    value = json.loads(json.dumps(clean_json(value)))

    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in LOCAL | ADDED}
        if isinstance(v, list):
            return [drop(x) for x in v]
        return v
    return drop(value)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A copy of the fixture (readers write nothing, but the dashboard's app resolves the path)."""
    out = tmp_path_factory.mktemp("v1") / "archive"
    shutil.copytree(FIXTURE, out)
    return out


def test_status_rows_unchanged(archive):
    rows = [r.__dict__ for r in readout.status_rows(archive)]
    assert normal(rows) == normal(EXPECTED["status_rows"])
    assert all(r["flags"] == {} for r in rows)        # no series stage of this version: no health flags
    assert all(r["notes"] == "" for r in rows)        # every probe of every checkpoint was scored
    assert all(r["other_probes"] == "" for r in rows)  # one probe set
    assert [r["step"] for r in rows] == [10, 20, 40]


def test_figure_sources_unchanged(archive):
    run = sources.Run(archive)
    got = {"radar_2": sources.radar_data(run, 2), "loss": sources.loss_data(run), "drift": sources.drift_data(run),
           "calibration": sources.calibration_data(run), "entropy": sources.entropy_data(run),
           "geometry": sources.geometry_data(run), "errors": sources.errors_data(run),
           "category": sources.category_data(run), "umap_2": sources.umap_data(run, 2, {})}
    expected = EXPECTED["sources"]
    for name, value in got.items():
        assert normal(value) == normal(expected[name]), name


def test_dashboard_api_unchanged(archive):
    from dashboard import create_app
    client = create_app(test_config={"LEARNVIZ_ARCHIVE": str(archive), "TESTING": True}).test_client()
    for url, expected in EXPECTED["api"].items():
        got = client.get(url).get_json()
        assert normal(got) == normal(expected), url
        if url == "/api/status.json":
            assert got["training"] == [] and got["health_flags"] == []


def test_typed_results_read_the_old_groups(archive):
    a = readout.series(archive)[1]
    full = a.read(ANALYSIS)
    r = readout.read_analysis(a)
    assert r.skills == readout.read_analysis(a, ["skills"]).skills
    assert r.calibration.ece == float(full["calibration"]["ece"]) and r.calibration.direction
    assert list(r.weights.layers) == [str(x) for x in full["weights"]["layers"]]
    data, attrs = r.to_archive()                       # and writes the same group back
    assert sorted(data) == sorted(full)
    for section in ("calibration", "errors"):
        for key, value in full[section].items():
            assert np.array_equal(data[section][key], value, equal_nan=True), (section, key)
    g = readout.read_geometry(a)
    stored = a.read(GEOMETRY)
    assert sorted(f"layer_{k}" for k in g.layers) == sorted(stored)
    for k, layer in g.layers.items():
        assert (layer.coords == stored[f"layer_{k}"]["coords"]).all()
        assert layer.metrics["cka_prev"] == float(stored[f"layer_{k}"]["cka_prev"])
    part = readout.read_geometry(a, elements=("coords",))
    assert all(layer.similarity is None and layer.coords is not None for layer in part.layers.values())
