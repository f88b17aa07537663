"""numba's on-disk cache for the umap kernels that learnviz's UMAP fits compile.

A UMAP fit in a fresh process spends ~10 s in numba compiling umap's kernels, which umap does
not mark `cache=True`. Only the fits that still go through umap pay it (a first frame, method
"independent", warm_up(); refinements are numpy, analysis/umap_sgd.py), and with this module
only the first such process on a machine does. `cache_kernels()` (once per process) replaces
the KERNELS below in umap's modules by copies compiled with cache=True into cache_dir(): the
same code and options, so the same machine code and the same layouts. The copies get their own
cache file names ("learnviz_<name>"), apart from anything else cached in the same folder.

cache_dir(): $NUMBA_CACHE_DIR when the user set it, else $XDG_CACHE_HOME/learnviz/numba, else
~/.cache/learnviz/numba. Only these kernels go there: the folder is handed to numba while they
are created (numba fixes a function's cache folder then), and nothing else in the process
changes: no environment variable is set, and other libraries' numba caches stay where they
were (pynndescent's in its __pycache__; with the user's NUMBA_CACHE_DIR, everything is there).
Importing numba or umap before or after makes no difference.

numba keys each entry on the kernel's source file (its mtime and size: an upgraded umap misses
and recompiles), the bytecode, the argument types, numba's version and the CPU. Several
processes may share the folder. numba writes each file under a temporary name and renames it
(os.replace), so a reader sees a whole file or none, but a kernel's entry is two files: an index
(argument types -> data file number) and the data file. Two processes saving two argument types
of one kernel at once could both take number 1, leaving the index of one with the code of the
other. So the copies' cache reads and writes hold a lock on `LOCK_FILE` in the folder (fcntl:
shared to read, exclusive to write; not on Windows): a save reads, extends and writes the index
and its data file with no other process in between. Two processes compiling the same kernel at
once both compile; the second save overwrites the first with the same code. When the folder
cannot be created or written, nothing is swapped and umap compiles in memory as before.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
import types
from pathlib import Path

try:
    import fcntl
except ImportError:                 # Windows: no lock (numba's own behaviour there)
    fcntl = None

ENV = "NUMBA_CACHE_DIR"
# (module, name) of the umap kernels a fit with learnviz's settings compiles: the fuzzy graph
# (umap gets the kNN from learnviz, so it compiles no kNN code), the SGD epoch (the
# single-threaded one a seeded fit runs), and the cosine distance that the spectral init of a
# graph in more than 4 pieces uses between component centroids.
KERNELS = (("umap.umap_", "smooth_knn_dist"), ("umap.umap_", "compute_membership_strengths"),
           ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch"), ("umap.distances", "cosine"))
PREFIX = "learnviz_"
LOCK_FILE = "learnviz.lock"

_state: dict = {"kernels": None, "dir": None}


def default_dir(environ=None) -> Path:
    """$XDG_CACHE_HOME/learnviz/numba, or ~/.cache/learnviz/numba."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "learnviz" / "numba"


def cache_dir(environ=None) -> Path:
    """Where the kernels are cached: the user's NUMBA_CACHE_DIR when set, else default_dir()."""
    env = os.environ if environ is None else environ
    return Path(env[ENV]) if env.get(ENV) else default_dir(env)


def ensure_dir(environ=None) -> Path | None:
    """cache_dir(), created if missing; None when it cannot be created or written."""
    path = cache_dir(environ)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return path


def cache_kernels() -> list[str]:
    """Swap umap's KERNELS for copies cached on disk (once per process); returns the names
    swapped in by this call ([] when done before, or without a writable folder)."""
    if _state["kernels"] is not None:
        return []
    path = ensure_dir()
    _state["dir"] = path
    _state["kernels"] = []
    if path is None:
        return []
    import numba
    modules = {m: importlib.import_module(m) for m, _ in KERNELS}   # umap's own caches stay where they are
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(path)      # read when a cached function is created, not later
    try:
        for module, name in KERNELS:
            mod = modules[module]
            old = getattr(mod, name, None)
            if old is None or not hasattr(old, "py_func") or old.py_func.__qualname__.startswith(PREFIX):
                continue
            options = {k: v for k, v in old.targetoptions.items() if k != "nopython"}    # njit implies it
            new = numba.njit(cache=True, locals=dict(old.locals), **options)(_renamed(old.py_func))
            _lock_cache(new, path / LOCK_FILE)
            setattr(mod, name, new)
            if module == "umap.distances":      # umap looks metrics up by name in this table
                for key, value in list(mod.named_distances.items()):
                    if value is old:
                        mod.named_distances[key] = new
            _state["kernels"].append(f"{module}.{name}")
    finally:
        numba.config.CACHE_DIR = saved
    return list(_state["kernels"])


def cached_kernels() -> list[str] | None:
    """What cache_kernels() swapped in this process (None: not called yet)."""
    return None if _state["kernels"] is None else list(_state["kernels"])


def _lock_cache(dispatcher, lock: Path) -> None:
    """Make the dispatcher's cache load under a shared and save under an exclusive lock."""
    cache = getattr(dispatcher, "_cache", None)
    if fcntl is None or not (hasattr(cache, "load_overload") and hasattr(cache, "save_overload")):
        return
    cache.load_overload = _locked(cache.load_overload, lock, fcntl.LOCK_SH)
    cache.save_overload = _locked(cache.save_overload, lock, fcntl.LOCK_EX)


def _locked(method, lock: Path, mode: int):
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            f = open(lock, "a+b")
        except OSError:                     # no lock file: as numba alone
            return method(*args, **kwargs)
        with f:                             # closing the file releases the lock
            try:
                fcntl.flock(f, mode)
            except OSError:
                pass
            return method(*args, **kwargs)
    return call


def _renamed(f: types.FunctionType) -> types.FunctionType:
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    g.__qualname__ = PREFIX + f.__qualname__
    return g
