"""The HTML views, and the figure files they show.

  /                      the run at a glance and the plan's six-panel figure grid
  /dynamics              the interactive panels (plotly.js over /api/runs/<run>/...), live; ?run=ID
  /checkpoints           one row per archive file: stages, accuracy per skill; unreadable ones with why
  /checkpoints/<step>    one checkpoint: its radar, UMAP frame, calibration, weight flags (or why its
                         archive cannot be read)
  /hard-examples         the hard-example board as a table, answers on hover (40 checkpoints; ?all=1: every one)
  /figures/<file>        a PNG or GIF from <archive>/visualizations/, nothing else
  /vendor/plotly.min.js  plotly.js from the installed `plotly` package (no CDN: nothing leaves the machine)
"""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    make_response,
    render_template,
    request,
    send_file,
    send_from_directory,
    url_for,
)

from . import runs as runs_mod
from . import serializers as ser
from .data import ARCHIVE_KEY, RunData, run
from .headers import PLOT_CSP

bp = Blueprint("pages", __name__)
FIGURE_SUFFIXES = {".png", ".gif"}


@bp.app_template_filter("pct")
def pct(value) -> str:
    """0.8 -> '80%'; None -> '–'."""
    return "–" if value is None else f"{100 * float(value):.0f}%"


@bp.app_template_filter("num")
def num(value, digits: int = 3) -> str:
    """A number to `digits` significant digits; None -> '–'."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}g}"


@bp.app_template_filter("fixed")
def fixed(value, decimals: int = 3) -> str:
    """A number with `decimals` decimals (ECE, Brier: small values stay readable); None -> '–'."""
    return "–" if value is None else f"{float(value):.{decimals}f}"


@bp.app_template_filter("decile")
def decile(value) -> str:
    """An accuracy's colour class: acc-0 (0-10%) ... acc-10 (100%); acc-none for no value."""
    return "acc-none" if value is None else f"acc-{int(round(float(value) * 10))}"


def figure_url(name: str, mtime_ns: int) -> str:
    """The figure's URL; its modification time in the query, so a redrawn figure is fetched anew."""
    return url_for("pages.figure", filename=name, v=mtime_ns)


def sub_runs() -> list[dict[str, str]]:
    """The runs in subfolders of the archive folder (<archive>/<run name>/): id and label."""
    folders = runs_mod.run_folders(current_app.config[ARCHIVE_KEY])
    return [{"id": i, "label": runs_mod.label(i, f)} for i, f in folders.items() if i != runs_mod.ROOT_RUN]


@bp.get("/")
def index():
    r = run()
    return render_template("index.html", summary=ser.summary(r), figures=ser.figures(r, figure_url),
                           runs=sub_runs())


@bp.get("/dynamics")
def dynamics():
    folders = runs_mod.run_folders(current_app.config[ARCHIVE_KEY])
    run_id = request.args.get("run") or next(iter(folders), runs_mod.ROOT_RUN)
    if run_id not in folders:
        abort(404, description=f"No run {run_id!r} (runs: {', '.join(folders) or 'none'}).")
    return _plotted(render_template("dynamics.html", run_id=run_id, run_version=RunData(folders[run_id]).version))


def _plotted(html: str):
    """A page that plotly.js draws on: its Content-Security-Policy lets plotly style and draw."""
    response = make_response(html)
    response.headers["Content-Security-Policy"] = PLOT_CSP
    return response


def plotly_path() -> Path:
    """plotly.min.js inside the installed plotly package (a runtime dependency)."""
    import plotly
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@bp.get("/vendor/plotly.min.js")
def plotly_js():
    path = plotly_path()
    if not path.is_file():
        abort(404, description=f"plotly.js is missing from the plotly package ({path}): pip install plotly")
    return send_file(path, mimetype="text/javascript", max_age=86400)


@bp.get("/checkpoints")
def checkpoints():
    r = run()
    rows = [ser.status_row(row) for row in r.rows]
    skills = list(dict.fromkeys(s for row in rows for s in row["skills"]))
    stages = list(dict.fromkeys(s for row in rows for s in row["stages"]))
    return render_template("checkpoints.html", rows=rows, skills=skills, stages=stages, runs=sub_runs())


@bp.get("/checkpoints/<int:step>")
def checkpoint(step: int):
    r = run()
    a = r.archive_at(step)
    bad = r.unreadable_at(step)
    if a is not None:
        ck = ser.checkpoint(r, a, figure_url)
    elif bad:
        ck, bad = ser.unreadable_checkpoint(r, bad[-1]), bad[:-1]
    else:
        steps = ", ".join(map(str, r.steps)) or "none yet"
        abort(404, description=f"No archived checkpoint at step {step} (archived steps: {steps}).")
    also = [{"file": u.path.name, "reason": u.reason} for u in bad]   # other files of this step that cannot be read
    return _plotted(render_template("checkpoint.html", ck=ck, also_unreadable=also, error_types=ser.ERROR_TYPES,
                                    run_id=runs_mod.ROOT_RUN))


@bp.get("/hard-examples")
def hard_examples():
    r = run()
    board = ser.hard_examples(r.board, r.board_problem)
    every = request.args.get("all") == "1"     # ?all=1: every checkpoint, however many
    return render_template("hard_examples.html", board=board if every else ser.thinned_board(board))


@bp.get("/figures/<path:filename>")
def figure(filename: str):
    """Only image files directly inside <archive>/visualizations/: `send_from_directory` refuses
    `..` and absolute paths, and a link that leads out of the folder is refused too."""
    vis = run().vis_dir
    if Path(filename).suffix.lower() not in FIGURE_SUFFIXES:
        abort(404)
    try:
        target = (vis / filename).resolve(strict=True)
        inside = target.parent == vis.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        abort(404)
    if not inside:
        abort(404)
    return send_from_directory(vis, filename)
