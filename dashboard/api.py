"""The JSON API under /api/ (kept apart from the HTML views, as rq-dashboard does).

  /api/status.json               the run summary and one row per archive file (unreadable ones too)
  /api/history.json              learning_history.jsonl, one merged row per step
  /api/checkpoints/<step>.json   one checkpoint: stages, accuracy, calibration, weights, figures;
                                 for an unreadable archive, `unreadable` and the reason
  /api/hard_examples.json        the hard-example board, examples x checkpoints
  /api/version.json              a cheap signature of the archive folder (the pages poll it)

These carry the probe texts as they are (data: the HTML pages render them, escaped once by
Jinja). The panels' answers escape every probe text (ids, prompts, answers, skill and category
names: `panels.esc`), because plotly renders labels as HTML.

The interactive page's panels, per run (dashboard.runs; docs/api.md, "Panels"), each answer kept
per run version (`runs.cached`):

  /api/runs.json                                the runs: id, label, version, probe set, steps
  /api/runs/<run>/version.json                  that run's signature (the live page polls it)
  /api/runs/<run>/overview.json                 steps, layers, skills, latest step
  /api/runs/<run>/metrics.json                  loss, learning rate, accuracy per skill, ECE per step
  /api/runs/<run>/drift.json                    weight drift, layer x step
  /api/runs/<run>/umap.json                     probes (escaped texts), steps, layers, fixed axes
  /api/runs/<run>/umap/<step>.json?layer=K      one frame: x, y, right/wrong, greedy answers
  /api/runs/<run>/board.json                    hard examples x steps, answers
  /api/runs/<run>/calibration/<step>.json       reliability bins and scores of one step
  /api/runs/<run>/logprob.json                  canonical answer's token logprobs; per category
  /api/runs/<run>/entropy.json                  mean entropy per answer position x step
  /api/runs/<run>/geometry.json                 RSA drift and CKA per layer x step
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, jsonify, request

from learnviz import archive as arc
from learnviz.common import clean_json

from . import panels
from . import runs as runs_mod
from . import serializers as ser
from .data import ARCHIVE_KEY, RunData, run
from .pages import figure_url, sub_runs

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/status.json")
def status():
    # `runs` (only when there are any): the runs in subfolders (<archive>/<run name>/), their
    # panels under /api/runs/<id>/; a folder of one run answers as it always did
    subs = [r["id"] for r in sub_runs()]
    return jsonify({**ser.status(run()), **({"runs": subs} if subs else {})})


@bp.get("/history.json")
def history():
    r = run()
    return jsonify({"probe_hash": r.probe_hash, "rows": clean_json(r.history)})


@bp.get("/checkpoints/<int:step>.json")
def checkpoint(step: int):
    r = run()
    a = r.archive_at(step)
    if a is not None:
        return jsonify(ser.checkpoint(r, a, figure_url))
    bad = r.unreadable_at(step)
    if bad:
        return jsonify(ser.unreadable_checkpoint(r, bad[-1]))
    abort(404, description=f"no archived checkpoint at step {step}")


@bp.get("/hard_examples.json")
def hard_examples():
    r = run()
    return jsonify(ser.hard_examples(r.board, r.board_problem))


@bp.get("/version.json")
def version():
    return jsonify({"version": run().version})


# ---------------------------------------------------------------- the interactive page's panels

def _run_data(run_id: str) -> RunData:
    """The run of an id, looked up in the listing of the archive root (never joined to a path)."""
    folders = runs_mod.run_folders(current_app.config[ARCHIVE_KEY])
    if run_id not in folders:
        abort(404, description=f"no run {run_id!r} (runs: {', '.join(folders) or 'none'})")
    r = RunData(folders[run_id])
    # one read of the folder per version, shared by every panel's request (its listing, history, ...)
    return runs_mod.cached((str(r.dir), r.version, "run data"), lambda: r)


def _panel(run_id: str, name: str, compute, *args):
    """A panel's answer, kept per (run folder, run version, panel, arguments). Readers never lock,
    so an archive may be removed, moved aside or replaced while a panel is built from the run's
    listing: when building it fails on a file (OSError, KeyError, ArchiveError) or the run's
    version changed meanwhile, the run is listed once more and the panel built from what is
    there now (else the answer, which a reader may skip on error, would speak of a file that is
    gone, and the page, already at the new version, would keep it); a second failure is raised."""
    for retry in (True, False):
        r = _run_data(run_id)
        built = []

        def build(r=r, built=built):
            built.append(True)
            return current_app.json.dumps(compute(r, *args), separators=(",", ":"))
        try:
            body = runs_mod.cached((str(r.dir), r.version, name, args), build)
        except panels.NotThere as exc:
            abort(404, description=str(exc))
        except (OSError, KeyError, arc.ArchiveError):
            if retry:
                continue
            raise
        if retry and built and RunData(r.dir).version != r.version:
            continue
        return current_app.response_class(body + "\n", mimetype="application/json")


@bp.get("/runs.json")
def runs():
    out = []
    for run_id, folder in runs_mod.run_folders(current_app.config[ARCHIVE_KEY]).items():
        r = _run_data(run_id)
        o = runs_mod.cached((str(folder), r.version, "overview", ()), lambda r=r, i=run_id: panels.overview(r, i))
        out.append({"id": run_id, "label": runs_mod.label(run_id, folder), "version": r.version,
                    "probe_hash": o["probe_hash"], "checkpoints": o["checkpoints"],
                    "steps": len(o["steps"]), "latest": o["latest"]})
    return jsonify({"runs": out})


@bp.get("/runs/<run_id>/version.json")
def run_version(run_id: str):
    return jsonify({"run": run_id, "version": _run_data(run_id).version})


@bp.get("/runs/<run_id>/overview.json")
def run_overview(run_id: str):
    return _panel(run_id, "overview", panels.overview, run_id)


@bp.get("/runs/<run_id>/metrics.json")
def run_metrics(run_id: str):
    return _panel(run_id, "metrics", panels.metrics)


@bp.get("/runs/<run_id>/drift.json")
def run_drift(run_id: str):
    return _panel(run_id, "drift", panels.drift)


@bp.get("/runs/<run_id>/umap.json")
def run_umap(run_id: str):
    return _panel(run_id, "umap", panels.umap)


@bp.get("/runs/<run_id>/umap/<int:step>.json")
def run_umap_frame(run_id: str, step: int):
    layer = request.args.get("layer", "")
    # ASCII digits only, and few of them: str.isdigit() also passes "²" and "--1", which int()
    # refuses, and int() refuses more than 4300 digits; each was a 500 instead of this 404
    if not re.fullmatch(r"-?[0-9]{1,9}", layer):
        abort(404, description="give the layer: ?layer=K (umap.json lists them)")
    return _panel(run_id, "umap_frame", panels.umap_frame, step, int(layer))


@bp.get("/runs/<run_id>/board.json")
def run_board(run_id: str):
    return _panel(run_id, "board", panels.board)


@bp.get("/runs/<run_id>/calibration/<int:step>.json")
def run_calibration(run_id: str, step: int):
    return _panel(run_id, "calibration", panels.calibration, step)


@bp.get("/runs/<run_id>/logprob.json")
def run_logprob(run_id: str):
    return _panel(run_id, "logprob", panels.logprob)


@bp.get("/runs/<run_id>/entropy.json")
def run_entropy(run_id: str):
    return _panel(run_id, "entropy", panels.entropy)


@bp.get("/runs/<run_id>/geometry.json")
def run_geometry(run_id: str):
    return _panel(run_id, "geometry", panels.geometry)
