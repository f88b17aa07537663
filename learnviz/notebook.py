"""The notebook API: one run's archives as pandas DataFrames and numpy arrays (docs/api.md).

    import learnviz
    run = learnviz.open_run("runs/gpt2-small")   # a checkpoints root, a run folder or an archive folder
    learnviz.open_run("runs", run="gpt2-small")  # one of several runs under a root (runs/<run>/checkpoint-N)
    run.history                 # one row per step: learning_history.jsonl, nested dicts flattened
    run.checkpoints             # one row per archived checkpoint: stages, accuracy per skill, ECE, drift, CKA
    run.probes(2000)            # one row per probe at step 2000 ("all": every checkpoint, long format)
    run.tokens(2000)            # one row per expected answer token
    run.embeddings(2000, 11)    # (n_probes, hidden) float16: the pooled output of decoder block 11
    run.coords(2000, 11)        # (n_probes, 2) float32: its aligned UMAP layout
    run.trajectories()          # per answer token: the step from which it stays learned (series.h5)
    run.cartography()           # per probe: confidence, variability, correctness, region (series.h5)
    run.figure("loss_curve")    # the path of <archive>/visualizations/loss_curve.png
    run.compare(other)          # two runs of one probe set side by side, joined on the step

A reader (docs/architecture.md): it reads through `learnviz.readout` and `learnviz.archive`, never
imports an orchestrator, never writes, never locks, never loads a model. pandas is imported only
when a DataFrame is built, so the arrays (`embeddings`, `coords`) work without it.

Reads are lazy: `open_run` only checks the folder. Each archive is read at most once per version
of its file: a checkpoint's row of `.checkpoints` is kept in-process by `Archive.memo` (a second
`open_run` of an unchanged folder opens no archive), the larger reads (a checkpoint's per-probe
and per-token data, its embeddings, series.h5) in the `Run` (the last `CACHE_SIZE` of them). A
rewritten archive is a new file version and is read again; the folder is listed again when it
changes (a new checkpoint), or on `refresh()`. Values returned are copies: changing them changes
nothing kept.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import archive as arc
from . import readout
from .analysis.entropy import positions, ragged_row_means
from .archive import Archive
from .errors import LearnvizError
from .results import ANALYSIS, CHECKPOINT_STAGES, EXTRACT, GEOMETRY, GEOMETRY_METRICS, SERIES

__all__ = ["MissingExtraError", "Run", "flatten", "open_run", "require_pandas"]

ARCHIVE_DIR_NAMES = ("learnviz-archive", "archive")   # <checkpoints>/learnviz-archive; the demo's <out>/archive
CACHE_SIZE = 32            # reads kept per Run (a checkpoint's extract data, one layer's embeddings, ...)
# The per-probe and per-token elements of the extract group (everything but the embeddings).
EXTRACT_KEYS = ["probe_ids", "probe_skill", "probe_category", "prompt", "expected", "answer_ids", "token_text",
                "token_logprob", "token_entropy", "token_top1_prob", "token_argmax", "answer_logprob",
                "answer_confidence", "stop_prob", "first_divergence", "greedy_answer", "correct", "prompt_tokens",
                "truncated", "failed"]
CHECKPOINT_COLUMNS = ["step", "name", "checkpoint", "archive", *CHECKPOINT_STAGES, "reason", "accuracy"]
CALIBRATION_COLUMNS = ["ece", "mce", "brier", "calibration_gap", "calibration_direction"]
NOTEBOOK_EXTRA = "pip install 'learnviz[notebook]'"


class MissingExtraError(LearnvizError, ImportError):
    """An optional dependency (pandas, pyarrow) is not installed."""


def require_pandas():
    """pandas, imported now; a clear error naming the extra when it is not installed."""
    try:
        import pandas
    except ImportError:
        raise MissingExtraError("pandas is not installed: the notebook API's tables and `learnviz export` "
                                "build pandas DataFrames", hint=NOTEBOOK_EXTRA) from None
    return pandas


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({"skill_scores": {"a": 1}} -> {"skill_scores.a": 1}); lists stay
    values. An empty dict gives no key."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------- opening a run

def _is_archive_dir(path: Path) -> bool:
    return path.is_dir() and (any(path.glob("*" + arc.SUFFIX)) or (path / readout.HISTORY_FILE).exists())


def _runs_in(folder: Path) -> list[tuple[str, Path]]:
    """The named runs of an archive folder (`<archive>/<run name>/`, what `learnviz run` writes for
    a checkpoints root holding several runs: readout.run_archives), found in `folder` itself or in
    its learnviz-archive / archive folder."""
    for top in (folder, *(folder / n for n in ARCHIVE_DIR_NAMES)):
        named = [(name, d) for name, d in readout.run_archives(top) if name]
        if named:
            return named
    return []


def _run_folder_archive(folder: Path) -> Path | None:
    """The archive folder of a run's checkpoint folder `<root>/<run>` when `<root>` holds several
    runs: `<root>/learnviz-archive/<run>` (the run's name is its folder's name: checkpoints.find_runs,
    pipeline.runs)."""
    folder = folder.resolve()
    for name in ARCHIVE_DIR_NAMES:
        found = dict(readout.run_archives(folder.parent / name)).get(folder.name)
        if found is not None:
            return found
    return None


def archive_dir_of(path: str | Path, run: str | None = None) -> Path:
    """The archive folder of `path`: an archive folder itself, or a folder holding one named
    learnviz-archive (a checkpoints root: `learnviz run`'s default) or archive (`learnviz demo`'s
    output folder). A checkpoints root that holds several runs (<root>/<run>/checkpoint-N) has one
    archive folder per run, `<archive>/<run>`: `run` names which (an error lists them when it is
    not given); a run's own checkpoint folder `<root>/<run>` finds `<root>/learnviz-archive/<run>`."""
    p = Path(path).expanduser()
    hint = ("pass a checkpoints folder archived by `learnviz run --checkpoints DIR`, its learnviz-archive "
            "folder, or another --archive folder")
    if not p.exists():
        raise LearnvizError("does not exist", path=p, hint=hint)
    if not p.is_dir():
        raise LearnvizError("is a file, not a folder", path=p, hint=hint)
    if run is not None:
        named = _runs_in(p)
        found = dict(named).get(run)
        if found is not None:
            return found
        names = ", ".join(name for name, _ in named) or "none"
        raise LearnvizError(f"holds no archived run named {run!r} (its runs: {names})", path=p,
                            hint=f"open_run({str(p)!r}, run=NAME) with NAME one of the runs listed"
                            if named else "`run` names one of several runs archived under one checkpoints root")
    if _is_archive_dir(p):
        return p
    for name in ARCHIVE_DIR_NAMES:
        if _is_archive_dir(p / name):
            return p / name
    named = _runs_in(p)
    if len(named) == 1:
        return named[0][1]
    if named:
        names = ", ".join(name for name, _ in named)
        raise LearnvizError(f"holds {len(named)} archived runs ({names}), one archive folder each", path=p,
                            hint=f"open one: open_run({str(p)!r}, run={named[0][0]!r}), or pass its archive "
                                 f"folder {named[0][1]}")
    found = _run_folder_archive(p)
    if found is not None:
        return found
    looked = ", ".join(str(p / n) for n in ARCHIVE_DIR_NAMES)
    raise LearnvizError(f"holds no learnviz archive (no *.h5 archive nor {readout.HISTORY_FILE} in it, nor in "
                        f"{looked})", path=p, hint=f"`learnviz run --checkpoints {p}` archives its checkpoints")


def open_run(path: str | Path, probe_hash: str | None = None, *, run: str | None = None) -> Run:
    """The run whose archives `path` holds (see `archive_dir_of`). Reads nothing yet but the folder.

    `probe_hash`: which probe set (default: that of the newest successfully extracted archive);
    archives of other probe sets are left out, as every reader does. `run`: which run of a
    checkpoints root (or archive folder) that holds several, by name (its folder's name)."""
    return Run(archive_dir_of(path, run=run), probe_hash=probe_hash)


def _folder_stamp(path: Path) -> tuple | None:
    """Changes when a file is added, removed or replaced in the folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _steps_text(steps: list[int]) -> str:
    if not steps:
        return "none"
    if len(steps) > 12:
        head, tail = ", ".join(map(str, steps[:5])), ", ".join(map(str, steps[-5:]))
        return f"{head}, ... ({len(steps) - 10} more) ..., {tail}"
    return ", ".join(map(str, steps))


class Run:
    """One run's archives (one probe set), read lazily. See the module's docstring."""

    def __init__(self, archive_dir: str | Path, probe_hash: str | None = None):
        self.dir = Path(archive_dir)
        parent = self.dir.resolve().parent
        self.name = parent.name if self.dir.name in ARCHIVE_DIR_NAMES and parent.name else self.dir.name
        self._wanted_hash = probe_hash
        self._listing: tuple | None = None       # (folder stamp, archives of the probe set, the series, probe hash)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()

    def __repr__(self) -> str:
        steps = self.steps
        span = f"steps {steps[0]}..{steps[-1]}" if steps else "no extracted checkpoint"
        return (f"<learnviz.Run {self.name!r}: {len(steps)} checkpoints, {span}, probe set {self.probe_hash}, "
                f"{self.dir}>")

    # ---------------------------------------------------------------- listing

    def refresh(self) -> Run:
        """List the folder again at the next access (it is also listed again whenever it changed)."""
        self._listing = None
        return self

    def _list(self) -> tuple:
        stamp = _folder_stamp(self.dir)
        if self._listing is None or stamp is None or self._listing[0] != stamp:
            every = arc.list_archives(self.dir)
            series = readout.series_of(every, self._wanted_hash)
            probe_hash = self._wanted_hash or (series[-1].attrs.get("probe_hash") if series
                                               else every[-1].attrs.get("probe_hash") if every else None)
            ours = [a for a in every if a.attrs.get("probe_hash") == probe_hash]
            self._listing = (stamp, ours, series, probe_hash)
        return self._listing

    @property
    def archives(self) -> list[Archive]:
        """The archives with a successful extraction, in step order (learnviz.readout.series)."""
        return self._list()[2]

    @property
    def steps(self) -> list[int]:
        """The steps of `archives`."""
        return [a.step for a in self.archives]

    @property
    def probe_hash(self) -> str | None:
        return self._list()[3]

    @property
    def left_out(self) -> dict[int, str]:
        """The steps archived but not in `archives` (a failed extraction, another probe set), each
        with why (learnviz.readout.left_out)."""
        return readout.left_out(arc.list_archives(self.dir), self.archives)

    @property
    def layers(self) -> list[int]:
        """The pooled layers (decoder block indices) of the newest archive."""
        return readout.extract_layers(self.archives[-1])[0] if self.archives else []

    def _archive(self, step: int | str | None, _again: bool = True, *, forms: str = "a number or 'latest'") -> Archive:
        series = self.archives
        if not series:
            raise LearnvizError("holds no checkpoint with a successful extraction", path=self.dir,
                                hint="`learnviz run --checkpoints DIR` archives checkpoints; "
                                     f"`learnviz status --archive {self.dir}` shows what failed")
        if step is None or step == "latest":
            a = series[-1]
        else:
            try:
                wanted = int(step)
            except (TypeError, ValueError):
                raise LearnvizError(f"a step is {forms}, got {step!r}", path=self.dir,
                                    hint=f"archived steps: {_steps_text(self.steps)}") from None
            found = [a for a in series if a.step == wanted]
            if not found:
                why = self.left_out.get(wanted)
                raise LearnvizError(f"checkpoint at step {step} is archived but has no usable extraction: {why}"
                                    if why else f"no archived checkpoint at step {step}", path=self.dir,
                                    hint=f"archived steps: {_steps_text(self.steps)}")
            a = found[-1]
        if arc.file_version(a.path) != a.version and _again:      # rewritten since the folder was listed
            self.refresh()
            return self._archive(step, _again=False, forms=forms)
        return a

    def _steps_of(self, which: int | str | list | None) -> list[Archive]:
        if which == "all":
            return list(self.archives) or [self._archive("latest")]     # none: the error that says so
        if isinstance(which, (list, tuple)):
            return [self._archive(s) for s in which]
        return [self._archive(which, forms="a number, 'latest', 'all' or a list of numbers")]

    # ---------------------------------------------------------------- reads, once per file version

    def _cached(self, version: tuple | None, what: str, compute: Callable[[], Any], path: Path | None = None) -> Any:
        key = (version, what)
        if version is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = compute()
        # kept only when the file read is still that version (not replaced meanwhile)
        if version is not None and (path is None or arc.file_version(path) == version):
            self._cache[key] = value
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    def _extract(self, a: Archive) -> dict[str, Any]:
        """A checkpoint's per-probe and per-token extract elements (not the embeddings), read once."""
        return self._cached(a.version, "extract", lambda: a.read(EXTRACT, EXTRACT_KEYS, missing_ok=True), a.path)

    def _probe_meta(self) -> dict[str, Any]:
        """The probe set (ids, skills, categories, prompts, expected answers) of the newest archive."""
        return self._extract(self._archive("latest"))

    # ---------------------------------------------------------------- tables

    @property
    def history(self):
        """learning_history.jsonl as a DataFrame: one row per step (rows of a step merged, of this
        run's probe set), nested dicts flattened to dotted columns (`skill_scores.syllo_easy`,
        `geometry.11.cka_prev`); lists (`error_positions`, `layer_drifts`) stay list values."""
        pd = require_pandas()
        path = self.dir / readout.HISTORY_FILE
        probe_hash = self.probe_hash
        rows = self._cached(arc.file_version(path), f"history/{probe_hash}",
                            lambda: [flatten(r) for r in readout.history_rows(self.dir, probe_hash)], path)
        if not rows:
            return pd.DataFrame({"step": pd.Series([], dtype="int64")})
        df = pd.DataFrame(rows)
        return df[["step"] + [c for c in df.columns if c != "step"]]

    @property
    def checkpoints(self):
        """One row per archived checkpoint of the probe set (failed ones too): step, name,
        checkpoint (its folder), archive (file name), each stage's state (ok, failed; missing
        when not run) and the first failure's reason; accuracy and `accuracy.<skill>`; ece, mce, brier,
        calibration_gap, calibration_direction (analysis); the last pooled layer's drift_prev,
        drift_first, cka_prev, cka_first, trustworthiness and umap_disparity, and every layer's as
        `layer_<k>.<metric>` (geometry). NaN/None where a stage has not run."""
        pd = require_pandas()
        rows = [checkpoint_row(a) for a in self._list()[1]]
        base = CHECKPOINT_COLUMNS + CALIBRATION_COLUMNS + list(GEOMETRY_METRICS)
        if not rows:
            return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "step" else object) for c in base})
        df = pd.DataFrame(rows)
        skills = [c for c in df.columns if c.startswith("accuracy.")]
        rest = [c for c in df.columns if c not in base and c not in skills]
        return df[CHECKPOINT_COLUMNS + skills + CALIBRATION_COLUMNS + list(GEOMETRY_METRICS) + rest]

    def probes(self, step: int | str | None = None):
        """One row per probe at `step` (default: the latest; "all" or a list of steps: those
        checkpoints, long format, by step then probe order): step, probe_id, skill, category, prompt, expected,
        greedy_answer, correct, answer_logprob, confidence (product of the top-1 probabilities),
        mean_entropy (nats, over the answer tokens), first_divergence (-1: greedy answer right),
        answer_tokens; and stop_prob, prompt_tokens, truncated when the archive holds them; failed (the
        probe could not be run: its numbers are placeholders, `correct` false)."""
        pd = require_pandas()
        frames = [pd.DataFrame(probe_columns(a, self._extract(a))) for a in self._steps_of(step)]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def tokens(self, step: int | str | None = None):
        """One row per expected answer token at `step` (default: the latest; "all" or a list of
        steps: those checkpoints): step, probe_id, position, token_id, token_text, logprob (teacher forced),
        entropy (nats), top1_prob, argmax (the top-1 token), is_argmax."""
        pd = require_pandas()
        frames = [pd.DataFrame(token_columns(a, self._extract(a))) for a in self._steps_of(step)]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    # ---------------------------------------------------------------- arrays

    def _layer(self, a: Archive, layer: int | None) -> int:
        layers, n_layers = readout.extract_layers(a)
        if not layers:
            raise LearnvizError("records no pooled layer", path=a.path, field="extract",
                                hint="`learnviz run --retry-failed` extracts it again")
        if layer is None:
            return layers[-1]
        k = int(layer)
        if k < 0 and n_layers:
            k += n_layers
        if k not in layers:
            raise LearnvizError(f"has no embeddings of layer {layer}", path=a.path,
                                hint=f"pooled layers (decoder blocks, 0-based): {', '.join(map(str, layers))}; "
                                     "`learnviz run --layers` chooses them")
        return k

    def pooled_layers(self, step: int | str | None = None) -> list[int]:
        """The pooled layers (decoder block indices) at `step` (default: the latest)."""
        return readout.extract_layers(self._archive(step))[0]

    def layer_of(self, step: int | str | None = None, layer: int | None = None) -> int:
        """The pooled layer `layer` names at `step`: the last one for None, n_layers + layer for a
        negative one; an error listing the pooled layers when it is not one."""
        return self._layer(self._archive(step), layer)

    def embeddings(self, step: int | str | None = None, layer: int | None = None) -> np.ndarray:
        """(n_probes, hidden) float16: the mean over each prompt's tokens of decoder block `layer`'s
        output (default: the last pooled layer) at `step` (default: the latest), in probe order."""
        a = self._archive(step)
        k = self._layer(a, layer)
        key = f"embeddings/layer_{k}"
        return self._cached(a.version, key, lambda: a.read(EXTRACT, [key])[key], a.path).copy()

    def coords(self, step: int | str | None = None, layer: int | None = None) -> np.ndarray:
        """(n_probes, 2) float32: the aligned UMAP layout of `layer` (default: the last pooled layer)
        at `step` (default: the latest), in probe order."""
        a = self._archive(step)
        k = self._layer(a, layer)
        info = a.stage(GEOMETRY)
        todo = f"`learnviz analyze --archive {self.dir}` computes it"
        if info is None or not info.ok:
            why = f"its geometry stage failed: {info.reason}" if info is not None else "no geometry stage yet"
            raise LearnvizError(f"has no UMAP layout: {why}", path=a.path, field=GEOMETRY, hint=todo)
        coords = self._cached(a.version, f"coords/{k}",
                              lambda: readout.read_geometry(a, [k], elements=("coords",)).layers[k].coords, a.path)
        if coords is None:
            raise LearnvizError(f"has no UMAP layout of layer {k} (too few probes for one)", path=a.path,
                                field=GEOMETRY, hint=todo)
        return coords.copy()

    # ---------------------------------------------------------------- series.h5

    def _series(self, *elements: str) -> tuple[Archive, dict[str, Any]]:
        path = self.dir / arc.SERIES_NAME
        todo = f"`learnviz analyze --archive {self.dir}` writes it"
        s = readout.open_series_archive(self.dir)
        if s is None:
            raise LearnvizError("does not exist yet", path=path, hint=todo)
        info = s.stage(SERIES)
        if info is None or not info.ok:
            why = f"the series stage failed: {info.reason}" if info is not None else "has no series stage"
            raise LearnvizError(why, path=path, hint=todo)
        if s.attrs.get("probe_hash") != self.probe_hash:
            raise LearnvizError(f"is of probe set {s.attrs.get('probe_hash')}, the archives of {self.probe_hash}",
                                path=path, hint=todo.replace("writes", "rewrites"))
        data = self._cached(s.version, "series/" + ",".join(elements),
                            lambda: s.read(SERIES, ["steps", *elements], missing_ok=True), s.path)
        return s, data

    def _series_probes(self, n: int, path: Path) -> dict[str, Any]:
        meta = self._probe_meta()
        if len(meta["probe_ids"]) != n:
            raise LearnvizError(f"covers {n} probes, the newest archive {len(meta['probe_ids'])}", path=path,
                                hint=f"`learnviz analyze --archive {self.dir}` rewrites it")
        return meta

    def trajectories(self):
        """One row per expected answer token (series.h5): probe_id, skill, category, position,
        learned_at (the step from which p(token) stays above the run's `learned_threshold`; -1:
        never), learned, rank (0 = learned first; the never-learned last). attrs: steps,
        learned_threshold."""
        pd = require_pandas()
        s, d = self._series("trajectories")
        if "trajectories" not in d:
            raise LearnvizError("holds no trajectories", path=s.path,
                                hint=f"`learnviz analyze --archive {self.dir}` writes them")
        learned_at: arc.Ragged = d["trajectories"]["learned_at"]
        order = np.asarray(d["trajectories"]["order"], dtype=np.int64).reshape(-1, 3)
        meta = self._series_probes(len(learned_at), s.path)
        lengths = np.diff(learned_at.offsets)
        probe = np.repeat(np.arange(len(learned_at)), lengths)
        rank = np.full(len(learned_at.values), -1, dtype=np.int64)
        rank[learned_at.offsets[order[:, 0]] + order[:, 1]] = np.arange(len(order))
        df = pd.DataFrame({
            "probe_id": np.asarray(meta["probe_ids"], dtype=object)[probe],
            "skill": np.asarray(meta["probe_skill"], dtype=object)[probe],
            "category": np.asarray(meta["probe_category"], dtype=object)[probe],
            "position": positions(learned_at), "learned_at": np.asarray(learned_at.values, dtype=np.int64),
            "learned": np.asarray(learned_at.values) >= 0, "rank": rank})
        df.attrs.update({"steps": [int(x) for x in d["steps"]],
                         "learned_threshold": s.stage(SERIES).attrs.get("learned_threshold")})
        return df

    def cartography(self):
        """One row per probe (series.h5, dataset cartography): probe_id, skill, category,
        confidence, variability, correctness, region over every checkpoint, and the same over the
        later half as late.confidence ... late.region. attrs: steps, first_step, late.first_step."""
        pd = require_pandas()
        s, d = self._series("cartography", "cartography_late")
        if "cartography" not in d:
            raise LearnvizError("holds no cartography (it needs at least 2 checkpoints)", path=s.path,
                                hint=f"`learnviz analyze --archive {self.dir}` writes it once there are two")
        fields = ("confidence", "variability", "correctness", "region")
        meta = self._series_probes(len(d["cartography"]["confidence"]), s.path)
        cols: dict[str, Any] = {"probe_id": meta["probe_ids"], "skill": meta["probe_skill"],
                                "category": meta["probe_category"]}
        attrs: dict[str, Any] = {"steps": [int(x) for x in d["steps"]]}
        for name, prefix in (("cartography", ""), ("cartography_late", "late.")):
            if name in d:
                cols.update({prefix + f: d[name][f] for f in fields})
                attrs[prefix + "first_step"] = int(d[name]["first_step"])
        df = pd.DataFrame(cols)
        df.attrs.update(attrs)
        return df

    # ---------------------------------------------------------------- figures and comparison

    def figures(self) -> list[str]:
        """The names of the drawn figures (<archive>/visualizations/), sorted."""
        from .visualize import DIR_NAME
        folder = self.dir / DIR_NAME
        return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".gif")) if folder.is_dir() else []

    def figure(self, name: str) -> Path:
        """The path of a drawn figure: `name` with its suffix ("radar_20.png"), or without one
        (.png, then .gif). An error names the file and lists the figures that exist."""
        from .visualize import DIR_NAME
        folder = self.dir / DIR_NAME
        candidates = [folder / name] if Path(name).suffix else [folder / f"{name}.png", folder / f"{name}.gif"]
        for path in candidates:
            if path.is_file():
                return path
        have = self.figures()
        hint = (f"figures there: {', '.join(have)}" if have
                else f"no figure is drawn yet: `learnviz visualize --archive {self.dir}` draws them")
        raise LearnvizError("does not exist", path=candidates[0], hint=hint)

    def compare(self, other: Run | str | Path, table: str = "checkpoints", names: tuple[str, str] | None = None):
        """This run and `other` (a Run or a path for `open_run`) side by side: `table`
        ("checkpoints" or "history") of each, outer-joined on the step (the index), with two-level
        columns (run name, column). Both must hold the same probe set."""
        pd = require_pandas()
        other = other if isinstance(other, Run) else open_run(other)
        if self.probe_hash != other.probe_hash:
            raise LearnvizError(f"the runs hold different probe sets: {self.probe_hash} in {self.dir}, "
                                f"{other.probe_hash} in {other.dir}",
                                hint="only runs of one probe set compare: archive both with the same --probes file")
        if table not in ("checkpoints", "history"):
            raise LearnvizError(f"compare joins 'checkpoints' or 'history', not {table!r}", field="table")
        if names is None:
            names = (self.name, other.name) if self.name != other.name else (str(self.dir), str(other.dir))
            if names[0] == names[1]:
                names = (f"{self.name} (1)", f"{self.name} (2)")
        if len(set(names)) != 2:
            raise LearnvizError(f"compare needs two different names, got {tuple(names)!r}", field="names")
        frames = {}
        for name, run in zip(names, (self, other)):
            df = getattr(run, table)
            dup = df["step"][df["step"].duplicated()].tolist()
            if dup:
                raise LearnvizError(f"holds step {dup[0]} twice (several runs under one checkpoints root?)",
                                    path=run.dir, hint="open each run's own archive folder")
            frames[name] = df.set_index("step")
        return pd.concat(frames, axis=1, join="outer", names=["run", None]).sort_index()


# ---------------------------------------------------------------- per-checkpoint rows and columns

def checkpoint_row(a: Archive) -> dict[str, Any]:
    """A checkpoint's row of `Run.checkpoints`, read once per version of its archive (`Archive.memo`,
    one entry per archive besides its header). Treat as read-only."""
    return a.memo("notebook.checkpoint", lambda: _checkpoint_row(a))


def _checkpoint_row(a: Archive) -> dict[str, Any]:
    row: dict[str, Any] = {"step": a.step, "name": a.attrs.get("checkpoint_name") or a.path.stem,
                           "checkpoint": a.attrs.get("checkpoint", ""), "archive": a.path.name}
    for stage in CHECKPOINT_STAGES:
        info = a.stage(stage)
        row[stage] = info.status if info is not None else None
    row["reason"] = next((f"{info.name}: {info.reason}" for info in a.stages.values() if not info.ok), "")
    row["accuracy"] = None
    if readout.extracted(a):
        d = a.read(EXTRACT, ["correct", "probe_skill"])
        if len(d["correct"]):
            row["accuracy"] = float(np.mean(d["correct"]))
            for skill, acc in readout.skill_accuracy(d["correct"], list(d["probe_skill"])).items():
                row[f"accuracy.{skill}"] = acc
    row.update(dict.fromkeys(CALIBRATION_COLUMNS))
    if readout.stage_ok(a, ANALYSIS):
        cal = readout.read_analysis(a, ["calibration"]).calibration
        row.update({"ece": cal.ece, "mce": cal.mce, "brier": cal.brier, "calibration_gap": cal.gap,
                    "calibration_direction": cal.direction})
    row.update(dict.fromkeys(GEOMETRY_METRICS))
    if readout.stage_ok(a, GEOMETRY):
        geo = readout.read_geometry(a, readout.extract_layers(a)[0] or None, elements=GEOMETRY_METRICS)
        if geo.layers:
            row.update({m: geo.layers[max(geo.layers)].metrics.get(m) for m in GEOMETRY_METRICS})
        for k in sorted(geo.layers):
            row.update({f"layer_{k}.{m}": geo.layers[k].metrics.get(m) for m in GEOMETRY_METRICS})
    return row


def probe_columns(a: Archive, d: dict[str, Any]) -> dict[str, Any]:
    """The columns of `Run.probes` for one checkpoint from its extract elements `d`."""
    n = len(d["probe_ids"])
    entropy: arc.Ragged | None = d.get("token_entropy")
    cols: dict[str, Any] = {
        "step": np.full(n, a.step, dtype=np.int64), "probe_id": d["probe_ids"], "skill": d.get("probe_skill"),
        "category": d.get("probe_category"), "prompt": d.get("prompt"), "expected": d.get("expected"),
        "greedy_answer": d.get("greedy_answer"), "correct": np.asarray(d["correct"], dtype=bool),
        "answer_logprob": d.get("answer_logprob"), "confidence": d.get("answer_confidence"),
        "mean_entropy": ragged_row_means(entropy) if entropy is not None else None,
        "first_divergence": d.get("first_divergence"),
        "answer_tokens": np.diff(d["answer_ids"].offsets) if "answer_ids" in d else None,
        "stop_prob": d.get("stop_prob"), "prompt_tokens": d.get("prompt_tokens"), "truncated": d.get("truncated"),
        # the probes that could not be run: their numbers are placeholders (absent before it existed: none)
        "failed": np.asarray(d["failed"], dtype=bool) if "failed" in d else np.zeros(n, dtype=bool)}
    return {k: v for k, v in cols.items() if v is not None}


TOKEN_FIELDS = {"token_text": "token_text", "logprob": "token_logprob", "entropy": "token_entropy",
                "top1_prob": "token_top1_prob", "argmax": "token_argmax"}


def token_columns(a: Archive, d: dict[str, Any]) -> dict[str, Any]:
    """The columns of `Run.tokens` for one checkpoint from its extract elements `d`."""
    ids: arc.Ragged = d["answer_ids"]
    lengths = np.diff(ids.offsets)
    cols: dict[str, Any] = {"step": np.full(len(ids.values), a.step, dtype=np.int64),
                            "probe_id": np.repeat(np.asarray(d["probe_ids"], dtype=object), lengths),
                            "position": positions(ids), "token_id": ids.values}
    cols.update({col: d[key].values for col, key in TOKEN_FIELDS.items() if key in d})
    if "token_argmax" in d:
        cols["is_argmax"] = ids.values == d["token_argmax"].values
    return cols
