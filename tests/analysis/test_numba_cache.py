"""numba's on-disk cache for umap's kernels (learnviz/analysis/numba_cache.py): the folder (the
user's cache dir, or their NUMBA_CACHE_DIR), the kernels swapped and cached there, a second
process loading instead of compiling, and the same layouts as umap's own kernels give."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnviz.analysis import numba_cache
from learnviz.analysis import umap_layout as ul

ROOT = Path(__file__).resolve().parents[2]


def test_cache_dir_is_the_users_cache_unless_numba_cache_dir_is_set(tmp_path, monkeypatch):
    assert numba_cache.cache_dir({"NUMBA_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/xdg"}) == Path("/mine")
    assert numba_cache.cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/learnviz/numba")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert numba_cache.cache_dir({}) == tmp_path / ".cache" / "learnviz" / "numba"
    assert numba_cache.cache_dir({"NUMBA_CACHE_DIR": ""}) == tmp_path / ".cache" / "learnviz" / "numba"


def test_ensure_dir_creates_the_folder_and_sets_nothing(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert numba_cache.ensure_dir(env) == tmp_path / "cache" / "learnviz" / "numba"
    assert (tmp_path / "cache" / "learnviz" / "numba").is_dir()
    assert env == {"XDG_CACHE_HOME": str(tmp_path / "cache")}            # no variable set
    mine = tmp_path / "mine" / "numba"
    assert numba_cache.ensure_dir({"NUMBA_CACHE_DIR": str(mine), **env}) == mine and mine.is_dir()


def test_ensure_dir_gives_none_where_it_cannot_write(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert numba_cache.ensure_dir({"XDG_CACHE_HOME": str(blocker)}) is None


def test_umaps_kernels_are_swapped_for_cached_copies():
    ul.warm_up()                                        # every kernel a layout uses, once
    folder = numba_cache.cache_dir()
    if numba_cache.ensure_dir() is None:
        pytest.skip(f"{folder} is not writable here")
    assert numba_cache.cached_kernels() == [f"{m}.{n}" for m, n in numba_cache.KERNELS]
    assert numba_cache.cache_kernels() == []            # once per process
    for module, name in numba_cache.KERNELS:
        kernel = getattr(importlib.import_module(module), name)
        qualname = kernel.py_func.__qualname__
        assert qualname.startswith(numba_cache.PREFIX), name
        assert kernel.signatures, name                  # warm_up ran it
        stats = kernel.stats
        assert Path(stats.cache_path).is_relative_to(folder), (name, stats.cache_path)
        assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) > 0, name
        assert list(Path(stats.cache_path).glob(f"*.{qualname}-*.nbi")), name      # its index on disk
    import umap.distances
    assert umap.distances.named_distances["cosine"] is umap.distances.cosine


FIT = """
import json, sys
import numpy as np
from learnviz.analysis import numba_cache, umap_layout as ul
if sys.argv[1] == "umap-own":                # umap's own kernels, compiled in memory
    numba_cache.cache_kernels = lambda: []
x = np.random.default_rng(0).normal(size=(60, 8))
lay = ul.layout(x, None, method="independent", n_neighbors=10)
out = {"coords": lay.coords.tolist(), "hits": 0, "misses": 0, "swapped": numba_cache.cached_kernels()}
for module, name in numba_cache.KERNELS[:3]:     # the ones a connected graph's fit runs
    import importlib
    stats = getattr(importlib.import_module(module), name).stats
    out["hits"] += sum(stats.cache_hits.values())
    out["misses"] += sum(stats.cache_misses.values())
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_kernels_and_lays_out_the_same(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", FIT, mode], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    first, second, own = run("cached"), run("cached"), run("umap-own")
    assert first["misses"] == 3 and first["hits"] == 0              # compiled, and written
    assert second["hits"] == 3 and second["misses"] == 0            # loaded: nothing compiled
    assert list((tmp_path / "learnviz" / "numba").rglob(f"*{numba_cache.PREFIX}smooth_knn_dist-*.nbc"))
    assert own["swapped"] is None
    assert first["coords"] == second["coords"] == own["coords"]     # the same machine code


WAIT_FOR_LOCK = """
import numpy as np
from learnviz.analysis import numba_cache
numba_cache.cache_kernels()
import umap.umap_ as uu
print("ready", flush=True)
d = np.sort(np.random.default_rng(0).uniform(size=(20, 4)), axis=1).astype(np.float32)
d[:, 0] = 0
sigma, rho = uu.smooth_knn_dist(d, 4.0)
print("done", float(rho.sum()), flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks")
def test_cache_reads_and_writes_wait_for_the_lock(tmp_path):
    """While another process holds the folder's lock, a kernel's cache lookup waits."""
    import fcntl
    folder = tmp_path / "learnviz" / "numba"
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    with open(folder / numba_cache.LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-c", WAIT_FOR_LOCK], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.0)                               # a cache lookup takes milliseconds
            assert proc.poll() is None                    # ... but this one waits for the lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.split()[0] == "done"
    assert list(folder.rglob(f"*{numba_cache.PREFIX}smooth_knn_dist-*.nbc"))   # compiled and saved after
