"""Archives for the notebook API and export tests: the fast synthetic series of
tests/plots/conftest.py (real CPU stages, no model; built once per session and only read), the
committed tests/fixtures/archive_v1/ (copied per test), and helpers to compare a DataFrame's
values with what an archive holds."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from plots.conftest import make_series

from learnviz import archive as arc
from learnviz.results import EXTRACT

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "archive_v1"


@pytest.fixture(scope="session")
def series_folder(tmp_path_factory) -> Path:
    """<folder>/run (checkpoints) and <folder>/archive: 4 checkpoints, every stage. Read-only."""
    folder = tmp_path_factory.mktemp("api-series")
    make_series(folder)
    return folder


@pytest.fixture(scope="session")
def series_dir(series_folder) -> Path:
    return series_folder / "archive"


@pytest.fixture
def v1(tmp_path) -> Path:
    """A fresh copy of the committed archive_v1 (3 checkpoints, every stage), free to change."""
    out = tmp_path / "v1"
    shutil.copytree(FIXTURE, out)
    return out


def plain(v):
    """A cell as a plain Python value: numpy scalars and arrays unwrapped, NaN as None."""
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def rewrite_extract(path: Path, change) -> None:
    """Rewrite one archive's extract group with `change(data)` applied, under the same key (the
    other stages are kept), as a recomputed stage would."""
    a = arc.Archive(path)
    info = a.stage(EXTRACT)
    data = a.read(EXTRACT)
    change(data)
    arc.write_stage(a.path, EXTRACT, key=info.key, root_attrs=a.attrs, data=data, attrs=info.attrs,
                    status=info.status, reason=info.reason)
