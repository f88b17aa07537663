"""The JSON API under /api/ (kept apart from the HTML views, as rq-dashboard does).

  /api/status.json               the run summary and one row per archive file (unreadable ones too)
  /api/history.json              learning_history.jsonl, one merged row per step
  /api/checkpoints/<step>.json   one checkpoint: stages, accuracy, calibration, weights, figures;
                                 for an unreadable archive, `unreadable` and the reason
  /api/hard_examples.json        the hard-example board, examples x checkpoints
  /api/version.json              a cheap signature of the archive folder (the pages poll it)
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

from learnviz.common import clean_json

from . import serializers as ser
from .data import run
from .pages import figure_url

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/status.json")
def status():
    return jsonify(ser.status(run()))


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
