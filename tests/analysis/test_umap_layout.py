"""Stable UMAP layouts: shapes, stability on identical input, determinism, quality, no recompiling,
alignment over a drifting series, and refinements that need neither umap nor numba.

umap costs seconds to import and ~10 s of numba compilation per process (less with numba's
on-disk cache): one module-scoped warm-up pays it, and the few fits below (200 points, well
under a second each) share it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.stats import ortho_group
from sklearn.datasets import make_blobs

from learnviz.analysis import umap_layout as ul
from learnviz.archive import StageKey

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def warm() -> float:
    return ul.warm_up()


@pytest.fixture(scope="module")
def blobs():
    x, labels = make_blobs(n_samples=200, n_features=16, centers=5, cluster_std=1.0, random_state=0)
    return x.astype(np.float16), labels     # float16, as the archive stores embeddings


@pytest.fixture(scope="module")
def first(warm, blobs):
    return ul.layout(blobs[0], None)


def _compiled_signatures() -> int:
    from numba.core.registry import CPUDispatcher
    return sum(len(v.signatures) for name, mod in list(sys.modules.items())
               if name.split(".")[0] in ("umap", "pynndescent")
               for v in list(vars(mod).values()) if isinstance(v, CPUDispatcher))


def test_warm_up_compiles_once(warm, blobs):
    assert warm > 0 and _compiled_signatures() > 0
    assert ul.warm_up() < 0.05                      # second call: nothing left to do
    before = _compiled_signatures()
    # Other sizes, 5 disconnected clusters (umap's multi-component spectral path), both methods.
    ul.layout(blobs[0][:150], None, method="independent")
    assert _compiled_signatures() == before


def test_first_frame_shape_params_and_quality(first, blobs):
    x, labels = blobs
    assert first.coords.shape == (200, 2) and first.coords.dtype == np.float32
    assert np.isfinite(first.coords).all()
    assert first.method == "procrustes" and first.disparity is None
    p = first.params
    assert (p["n_neighbors"], p["min_dist"], p["seed"], p["metric"]) == (15, 0.1, 0, "cosine")
    assert p["init"] == "spectral+refine"
    assert p["refine_epochs"] == ul.REFINE_EPOCHS and p["trust_n_neighbors"] == 15
    assert (p["refine_optimizer"], p["knn"]) == (ul.REFINE_OPTIMIZER, "exact")
    assert first.trustworthiness > 0.8
    # sklearn's number, up to float32 rounding (a rank or two)
    from sklearn.manifold import trustworthiness
    assert first.trustworthiness == pytest.approx(
        trustworthiness(x.astype(np.float32), first.coords, n_neighbors=15, metric="cosine"), abs=1e-4)
    # Well-separated clusters stay separated: every point's nearest 2-D neighbour is in its cluster.
    d = np.linalg.norm(first.coords[:, None] - first.coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.98


def test_same_embedding_twice_barely_moves(first, blobs):
    second = ul.layout(blobs[0], first.coords)
    assert second.params["init"] == "previous+refine"
    assert second.disparity == pytest.approx(procrustes(first.coords, second.coords)[2])
    assert second.disparity < 0.05
    # Aligned onto the previous frame: the axes stay put, points move little relative to the spread.
    spread = np.linalg.norm(first.coords - first.coords.mean(0), axis=1).mean()
    assert np.linalg.norm(second.coords - first.coords, axis=1).mean() < 0.2 * spread


def test_deterministic_for_a_fixed_seed(first, blobs):
    again = ul.layout(blobs[0], None)
    assert np.array_equal(again.coords, first.coords)
    assert again.trustworthiness == first.trustworthiness


def test_align_to_recovers_a_similarity_transform():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(30, 2))
    q = ortho_group.rvs(2, random_state=1)          # rotation or reflection
    moved = 3.5 * target @ q + np.array([10.0, -4.0])
    np.testing.assert_allclose(ul.align_to(moved, target), target, atol=1e-10)
    assert ul.disparity(target, moved) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(ul.disparity(target, np.ones((30, 2))))              # all points at one place


def test_bad_input_raises_without_fitting():
    x = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="aligned_series"):
        ul.layout(x, method="aligned")
    with pytest.raises(ValueError, match="unknown layout method"):
        ul.layout(x, method="tsne")
    with pytest.raises(ValueError, match=r"previous must be \(20, 2\)"):
        ul.layout(x, np.zeros((19, 2)))
    with pytest.raises(ValueError, match="at least 5"):
        ul.layout(x[:4])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ul.layout(bad)
    with pytest.raises(ValueError, match="same probes"):
        ul.aligned_series([x, x[:10]])
    assert ul.aligned_series([]) == []


def _drifting_series(n_frames: int = 6):
    """200 points in 5 clusters whose embedding drifts a little every frame, as a layer does
    between checkpoints."""
    x, _ = make_blobs(n_samples=200, n_features=16, centers=5, cluster_std=1.5, random_state=1)
    rng = np.random.default_rng(3)
    frames = [x]
    for _ in range(n_frames - 1):
        frames.append(frames[-1] + 0.3 * rng.normal(size=x.shape))
    return [f.astype(np.float32) for f in frames]


def test_layouts_stay_aligned_over_a_drifting_series(warm):
    """Consecutive frames of the chain move far less than fresh fits do, at the same quality."""
    series = _drifting_series()
    chains = {}
    for method in ("procrustes", "independent"):
        prev, frames = None, []
        for x in series:
            frames.append(ul.layout(x, prev, method=method))
            prev = frames[-1].coords
        chains[method] = frames
    d = {m: np.mean([f.disparity for f in frames[1:]]) for m, frames in chains.items()}
    assert d["procrustes"] < 0.33 * d["independent"], d
    t = {m: np.mean([f.trustworthiness for f in frames]) for m, frames in chains.items()}
    assert t["procrustes"] > t["independent"] - 0.01, t
    assert all(f.params["init"] == "previous+refine" for f in chains["procrustes"][1:])


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
def test_other_metrics_still_go_through_umap(warm, blobs):
    x = blobs[0][:60].astype(np.float32)
    lay = ul.layout(x, None, metric="manhattan", n_neighbors=10)       # no numpy distance for it
    assert (lay.params["knn"], lay.params["refine_optimizer"]) == ("umap", "umap")
    assert lay.coords.shape == (60, 2) and 0.5 < lay.trustworthiness <= 1.0


def test_the_refine_optimizer_is_part_of_the_geometry_key(monkeypatch):
    from learnviz.analyze import geometry_keys
    archives = [SimpleNamespace(key=StageKey(f"fp{i}", "probes")) for i in range(3)]
    s = SimpleNamespace(umap_method="procrustes", umap_neighbors=15, umap_min_dist=0.1, umap_seed=0)
    before = geometry_keys(archives, s)
    monkeypatch.setattr(ul, "REFINE_OPTIMIZER", "something-else")
    after = geometry_keys(archives, s)
    assert all(a.inputs != b.inputs for a, b in zip(before, after))


REFINE_ONLY = """
import json, sys
import numpy as np
from learnviz.analysis import umap_layout as ul
rng = np.random.default_rng(0)
x = rng.normal(size=(80, 12)).astype(np.float32)
prev = rng.normal(size=(80, 2))
a, b = ul.layout(x, prev), ul.layout(x, prev)
print(json.dumps({"modules": sorted(m for m in ("umap", "numba", "pynndescent", "sklearn") if m in sys.modules),
                  "params": a.params, "same": bool(np.array_equal(a.coords, b.coords)),
                  "disparity": a.disparity, "trust": a.trustworthiness}))
"""


@pytest.mark.slow
def test_a_refinement_needs_neither_umap_nor_numba():
    """A checkpoint with a previous layout, in a fresh process (a cron job's `learnviz run`):
    nothing imports umap, numba or sklearn, so nothing is compiled."""
    out = subprocess.run([sys.executable, "-c", REFINE_ONLY], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["modules"] == []
    assert r["params"]["init"] == "previous+refine" and r["params"]["refine_optimizer"] == ul.REFINE_OPTIMIZER
    assert r["same"] and 0 <= r["disparity"] <= 1 and 0 < r["trust"] <= 1


@pytest.mark.parametrize("kind", ["tiled", "zeros", "parallel"])
def test_trustworthiness_of_probes_all_at_one_distance_is_nan(warm, kind):
    """Every probe's hidden state the same (a collapsed checkpoint), all zero, or all parallel
    (cosine distance 0): no neighbourhood to keep, so no trustworthiness. It was stored as a number
    (0.4557) that only said how ties were broken. Under another metric too."""
    v = np.random.default_rng(0).normal(size=(1, 16))
    x = {"tiled": np.tile(v, (30, 1)), "zeros": np.zeros((30, 16)),
         "parallel": np.arange(1, 31)[:, None] * v}[kind].astype(np.float32)
    first = ul.layout(x, None)
    assert np.isnan(first.trustworthiness) and first.coords.shape == (30, 2)
    assert np.isnan(ul.layout(x, first.coords).trustworthiness)
    if kind != "parallel":          # (parallel rows are apart under euclidean)
        assert np.isnan(ul.layout(x, None, metric="euclidean", method="independent").trustworthiness)
    spread = np.random.default_rng(1).normal(size=(30, 16)).astype(np.float32)
    assert 0 < ul.layout(spread, None).trustworthiness <= 1
