"""Every figure of a run, drawn from the archives into `<archive dir>/visualizations/`.

Files (the plan's, then ours):

  loss_curve.png                 loss, probe accuracy per skill, learning rate      (history)
  radar_<step>.png               accuracy per skill vs the base checkpoint          (analysis)
  skill_radar_latest.png         the newest radar;  skill_radar_animated.gif: all of them
  umap_<step>.png                UMAP of the probes per layer, by skill, fixed axes (geometry)
  umap_latest.png                the newest one;    umap_animated.gif: all of them
  layer_drift_heatmap.png        relative weight change, layer x checkpoint         (history)
  calibration_latest.png         reliability diagram of the newest checkpoint, ECE over time
  hard_example_board.png         hard examples x checkpoints, right or how wrong    (board JSON)
  logprob_canonical.png          per-token logprob of one canonical answer x checkpoint
  logprob_by_category.png        the same, averaged per probe category              (series)
  error_positions.png            where wrong answers depart, per checkpoint         (history)
  entropy_by_position.png        mean entropy per answer position, per checkpoint   (analysis)
  geometry_drift_cka.png         RSA drift and CKA per layer over training          (history)
  checkpoint_health.png          health flags: robust z-score per signal x checkpoint (series)
  data_impact.png                training source x skill impact, with the mix        (series; needs a data log)
  manifest.json                  what each file was drawn from (below)

Incremental: `manifest.json` maps each file to a signature of its inputs. A per-checkpoint image's
signature is made of the keys and finish times of the stages it reads (its own checkpoint's; for
a radar also the base checkpoint's and those of the earlier checkpoints it outlines; for a UMAP
frame also the shared axes limits), so only missing images and those whose stage was recomputed
(a checkpoint that arrived out of order changes its neighbours' analysis, the radars after it
and every later layout) are drawn. A run-level figure's signature is a hash
of the data it plots, which is small to load; it is redrawn when that changed. GIFs are assembled
from the per-checkpoint PNGs only when asked (`gifs=True`) and only when a frame changed. The UMAP
axes are sticky: kept while new frames fit inside them, widened (and every frame redrawn) when a
frame does not. Nothing here loads a model; the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from filelock import FileLock

from . import archive as arc
from .common import write_atomic
from .errors import LearnvizError
from .plots import sources
from .plots.sources import Run, Skip
from .results import ANALYSIS, EXTRACT, GEOMETRY
from .settings import Settings

DIR_NAME = "visualizations"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
GROUPS = ("loss", "radar", "umap", "drift", "calibration", "hard_examples", "logprob", "errors", "entropy", "geometry",
          "health", "impact")
GIF_NAMES = {"radar": "skill_radar_animated.gif", "umap": "umap_animated.gif"}
LATEST_NAMES = {"radar": "skill_radar_latest.png", "umap": "umap_latest.png"}
PATTERNS = {"radar": "radar_{step}.png", "umap": "umap_{step}.png"}
GROWTH = 0.25  # extra margin (of the box's side) when a new UMAP frame widens the shared box
STYLE = 1      # part of every signature: bump when learnviz.plots.common changes how every figure looks


@dataclass
class VisReport:
    """What `generate` did; `to_dict` is what a Celery task returns."""
    dir: str = ""
    status: str = "ok"                                   # ok | failed (some figure raised) | skipped
    drawn: list[str] = field(default_factory=list)       # files written this call
    current: list[str] = field(default_factory=list)     # files whose inputs had not changed
    removed: list[str] = field(default_factory=list)     # images of checkpoints no longer archived
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)   # file -> seconds to draw and write it
    notes: dict[str, str] = field(default_factory=dict)        # file -> what it shows (a GIF: its steps)

    def to_dict(self) -> dict:
        return {"status": self.status, "dir": self.dir, "drawn": self.drawn, "current": len(self.current),
                "removed": self.removed, "skipped": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 3), "timings": {k: round(v, 4) for k, v in self.timings.items()},
                "notes": self.notes}


def visualizations_dir(settings: Settings) -> Path:
    return settings.archive_dir() / DIR_NAME


def digest(obj: Any) -> str:
    """A short hash of JSON-like data holding numpy arrays (by dtype, shape and bytes)."""
    def default(o):
        if isinstance(o, np.ndarray):
            if o.dtype == object:
                return {"object-array": [str(x) for x in o.ravel()], "shape": list(o.shape)}
            return {"array": hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest(),
                    "dtype": str(o.dtype), "shape": list(o.shape)}
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, arc.Ragged):
            return {"ragged": [default(o.values), default(o.offsets)]}
        return str(o)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- per-checkpoint figures

def _radar_inputs(run: Run, i: int) -> list:
    from .plots import skill_radar
    return [STYLE, skill_radar.VERSION, run.stamp(run.archives[i], ANALYSIS),
            run.stamp(run.archives[0], ANALYSIS),
            [run.stamp(run.archives[j], ANALYSIS) for j in sources.radar_trail(run, i)]]


def _radar_draw(run: Run, i: int, _limits: dict):
    from .plots.skill_radar import skill_radar
    return skill_radar(**sources.radar_data(run, i))


def _umap_inputs(run: Run, i: int, limits: dict) -> list:
    from .plots import umap_scatter
    a = run.archives[i]
    return [STYLE, umap_scatter.VERSION, run.stamp(a, GEOMETRY), run.stamp(a, EXTRACT), limits]


def _umap_draw(run: Run, i: int, limits: dict):
    from .plots.umap_scatter import umap_scatter
    return umap_scatter(**sources.umap_data(run, i, limits))


def _umap_limits(run: Run, stored: dict, todo: list[int], force: bool) -> dict[str, list[float]]:
    """The shared axes box per layer panel: the stored one while every frame to draw fits in it,
    else one box over every archived frame."""
    from .plots.umap_scatter import MARGIN, contains, fixed_limits
    drawable = [i for i, a in enumerate(run.archives) if run.ok(a, GEOMETRY)]
    fits = bool(stored) and not force
    for i in todo if fits else []:
        coords, _ = run.layouts(run.archives[i])
        if any(name not in stored or not contains(stored[name], xy) for name, xy in coords.items()):
            fits = False
            break
    if fits:
        return stored
    per_panel: dict[str, list[np.ndarray]] = {}
    for i in drawable:
        for name, xy in run.layouts(run.archives[i])[0].items():
            per_panel.setdefault(name, []).append(xy)
    out = {}
    for name, xs in per_panel.items():
        # a box that no longer fits grows with room to spare: each widening redraws every frame
        lim = fixed_limits(xs, margin=MARGIN + (GROWTH if stored and not force else 0.0))
        if lim is not None:
            out[name] = [round(v, 6) for v in lim]
    return out


def _run_level(probe_id: str | None) -> list[tuple[str, str, Callable, Callable, int]]:
    """(group, file, data loader, figure function, its module's VERSION) per run-level figure."""
    from .plots import (
        calibration,
        data_impact,
        entropy_positions,
        error_positions,
        geometry,
        hard_board,
        health,
        layer_drift,
        logprob_heatmap,
        loss_curve,
    )
    return [
        ("loss", "loss_curve.png", sources.loss_data, loss_curve.loss_curve, loss_curve.VERSION),
        ("drift", "layer_drift_heatmap.png", sources.drift_data, layer_drift.layer_drift_heatmap, layer_drift.VERSION),
        ("calibration", "calibration_latest.png", sources.calibration_data, calibration.calibration_figure,
         calibration.VERSION),
        ("hard_examples", "hard_example_board.png", sources.board_data, hard_board.hard_example_board_figure,
         hard_board.VERSION),
        ("logprob", "logprob_canonical.png", lambda r: sources.canonical_data(r, probe_id),
         logprob_heatmap.canonical_heatmap, logprob_heatmap.VERSION),
        ("logprob", "logprob_by_category.png", sources.category_data, logprob_heatmap.category_heatmaps,
         logprob_heatmap.VERSION),
        ("errors", "error_positions.png", sources.errors_data, error_positions.error_positions_figure,
         error_positions.VERSION),
        ("entropy", "entropy_by_position.png", sources.entropy_data, entropy_positions.entropy_positions_figure,
         entropy_positions.VERSION),
        ("geometry", "geometry_drift_cka.png", sources.geometry_data, geometry.geometry_figure, geometry.VERSION),
        ("health", "checkpoint_health.png", sources.health_data, health.health_timeline, health.VERSION),
        ("impact", "data_impact.png", sources.impact_data, data_impact.data_impact_heatmap, data_impact.VERSION),
    ]


# ---------------------------------------------------------------- the driver

def _read_manifest(path: Path) -> dict:
    try:
        m = json.loads(path.read_text())
        if m.get("version") == MANIFEST_VERSION and isinstance(m.get("files"), dict):
            return m
    except (OSError, ValueError, AttributeError):
        pass
    return {"version": MANIFEST_VERSION, "files": {}}   # unreadable or another version: redraw all


def _write_manifest(path: Path, manifest: dict) -> None:
    text = json.dumps(manifest, sort_keys=True, indent=1)
    try:
        if path.read_text() == text:
            return          # nothing drawn: a re-run writes nothing
    except OSError:
        pass
    write_atomic(path, text)


@dataclass
class _Pass:
    """One `generate` call's state: the output folder, the manifest's file signatures, the report."""
    out: Path
    files: dict[str, str]
    report: VisReport
    force: bool
    produced: set[str] = field(default_factory=set)

    def fresh(self, name: str, sig: str) -> bool:
        self.produced.add(name)
        if not self.force and self.files.get(name) == sig and (self.out / name).exists():
            self.report.current.append(name)
            return True
        return False

    def draw(self, name: str, sig: str, make: Callable) -> None:
        """Draw and save one figure; a failure is reported, not raised."""
        from .plots.common import save_png
        t0 = time.perf_counter()
        try:
            save_png(make(), self.out / name)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Skip as exc:
            self.report.skipped[name] = str(exc)
            return
        except Exception as exc:  # one figure must not stop the others
            self.report.failed[name] = f"{type(exc).__name__}: {exc}"
            return
        self.files[name] = sig
        self.report.drawn.append(name)
        self.report.timings[name] = time.perf_counter() - t0


def _has_layout(a) -> bool:
    """False when the geometry stage stored no layout (too few probes for UMAP)."""
    return "skipped" not in str(a.stage(GEOMETRY).attrs.get("umap_params", ""))


def _per_checkpoint(p: _Pass, run: Run, manifest: dict, group: str, wanted: set[int] | None, gifs: bool) -> None:
    """One group of per-checkpoint images (radar or umap), its `latest` copy and, if asked, its GIF."""
    stage = ANALYSIS if group == "radar" else GEOMETRY
    idx = [i for i, a in enumerate(run.archives) if run.ok(a, stage) and (group != "umap" or _has_layout(a))]
    if not idx:
        p.report.skipped[group] = (f"no checkpoint has a successful {stage} stage yet" if group != "umap" else
                                   "no checkpoint has a UMAP layout yet (a layout needs at least 5 probes)")
        return
    name_of = {i: PATTERNS[group].format(step=run.archives[i].step) for i in idx}
    widened = False
    if group == "umap":
        old = manifest.get("umap_limits") or {}
        todo = [i for i in idx if p.force or p.files.get(name_of[i]) != digest(_umap_inputs(run, i, old))]
        limits = _umap_limits(run, old, [i for i in todo if wanted is None or run.archives[i].step in wanted], p.force)
        manifest["umap_limits"] = limits
        widened = limits != old      # every frame must share the new box, asked for or not
        sig = {i: digest(_umap_inputs(run, i, limits)) for i in idx}
        make = _umap_draw
    else:
        limits = {}
        sig = {i: digest(_radar_inputs(run, i)) for i in idx}
        make = _radar_draw
    for i in idx:
        if not p.fresh(name_of[i], sig[i]) and (wanted is None or run.archives[i].step in wanted or widened):
            p.draw(name_of[i], sig[i], partial(make, run, i, limits))
    frames = [name_of[i] for i in idx if name_of[i] in p.files and (p.out / name_of[i]).exists()]
    if not frames:
        return
    latest, last = LATEST_NAMES[group], frames[-1]
    s = digest([last, p.files[last]])
    if not p.fresh(latest, s):
        shutil.copyfile(p.out / last, p.out / latest)
        p.files[latest] = s
        p.report.drawn.append(latest)
    if gifs:
        from .plots.gif import VERSION, capped, write_gif
        gif = GIF_NAMES[group]
        shown = capped(frames)
        steps = [f[len(PATTERNS[group].split("{")[0]):-len(".png")] for f in shown]
        note = (f"steps {', '.join(steps)}" if len(shown) == len(frames) else
                f"{len(shown)} of {len(frames)} checkpoints, evenly spaced (first and latest included): "
                f"steps {', '.join(steps)}")
        p.report.notes[gif] = note
        s = digest([VERSION, shown, [p.files[f] for f in shown]])
        if not p.fresh(gif, s):
            t0 = time.perf_counter()
            try:
                write_gif([p.out / f for f in shown], p.out / gif, comment=note)
            except (OSError, ValueError) as exc:
                p.report.failed[gif] = f"{type(exc).__name__}: {exc}"
                return
            p.files[gif] = s
            p.report.drawn.append(gif)
            p.report.timings[gif] = time.perf_counter() - t0


def generate(settings: Settings, *, gifs: bool = False, only: Iterable[str] | None = None,
             steps: Iterable[int] | None = None, force: bool = False, probe: str | None = None) -> dict:
    """Draw every figure whose inputs changed (see the module docstring) and return a JSON-able
    summary (`VisReport.to_dict`).

    `gifs`: also assemble the animated GIFs (on demand: `learnviz visualize`, the demo).
    `only`: figure groups to consider (GROUPS; default all). `steps`: per-checkpoint images only
    for these steps (default all; a widened UMAP box still redraws every frame). `force`: redraw
    even when current. `probe`: id of the canonical answer's probe (default: `canonical_probe`).
    A figure that fails is reported and the others go on. ValueError on an unknown group;
    LearnvizError on an unknown probe id.
    """
    t0 = time.perf_counter()
    groups = set(GROUPS if only is None else only)
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown figure group(s) {sorted(unknown)}; known: {', '.join(GROUPS)}")
    out = visualizations_dir(settings)
    report = VisReport(dir=str(out))
    run = Run(settings.archive_dir())
    if not run.archives:
        report.status = "skipped"
        report.skipped["all"] = f"no archived checkpoint with a successful extraction in {settings.archive_dir()}"
        return report.to_dict()
    if probe is not None and "logprob" in groups:
        sources.canonical_probe(run, probe)         # an unknown id is an error before anything is drawn
    wanted = None if steps is None else {int(s) for s in steps}
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".visualize.lock")):
        manifest = _read_manifest(out / MANIFEST_NAME)
        try:
            p = _Pass(out, manifest["files"], report, force)
            for group in ("radar", "umap"):
                if group in groups:
                    _per_checkpoint(p, run, manifest, group, wanted, gifs)
            for group, name, load, figure_fn, version in _run_level(probe):
                if group not in groups:
                    continue
                try:
                    data = load(run)
                except Skip as exc:
                    p.produced.add(name)
                    report.skipped[name] = str(exc)
                    continue
                except LearnvizError:
                    raise                       # the user's to fix (an unknown --probe id)
                except Exception as exc:  # one figure must not stop the others
                    p.produced.add(name)
                    report.failed[name] = f"reading its data: {type(exc).__name__}: {exc}"
                    continue
                sig = digest([STYLE, name, version, data])
                if not p.fresh(name, sig):
                    p.draw(name, sig, partial(figure_fn, **data))
            if steps is None:
                # a full pass knows every file that should exist; a pass over some groups knows the
                # per-checkpoint images of those groups (images of checkpoints no longer archived)
                prefixes = tuple(PATTERNS[g].split("{")[0] for g in ("radar", "umap") if g in groups)
                for name in sorted(set(p.files) - p.produced - set(GIF_NAMES.values())):
                    if only is None or (prefixes and name.startswith(prefixes)):
                        (out / name).unlink(missing_ok=True)
                        p.files.pop(name)
                        report.removed.append(name)
        finally:
            # also when stopped (Ctrl-C, SIGTERM) or failed midway: the figures already in place
            # stay known with their inputs, so the next pass draws only the rest, not every figure
            _write_manifest(out / MANIFEST_NAME, manifest)
    report.status = "failed" if report.failed else "ok"
    report.seconds = time.perf_counter() - t0
    return report.to_dict()
