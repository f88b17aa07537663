"""`learnviz export`: a run's archives in other tools' formats (docs/api.md).

  tensorboard   TensorBoard's embedding projector, one embedding per checkpoint (one layer):
                <out>/projector_config.pbtxt, and per checkpoint <out>/step_<S>/layer_<L>.tsv (the
                tensor, one probe a line) and <out>/step_<S>/metadata.tsv (probe id, skill,
                category, correct, greedy answer, prompt; a header line). `tensorboard --logdir OUT`.
  npz           <out>/embeddings/probe_set.json (the probe set), checkpoint_<S>.npz (probe_ids, step,
                layers and layer_<k>: the (n_probes, hidden) embeddings of every pooled layer) and
                umap_coords.json (the aligned 2-D layouts per step and layer).
  parquet, csv  <out>/history, <out>/checkpoints and <out>/probes (every chosen checkpoint, long
                format: one row per step and probe) as .parquet or .csv. In CSV, list values are
                JSON text.

A reader (docs/architecture.md): it reads through learnviz.notebook (and so learnviz.readout),
never through an orchestrator. Every file is written whole (a temporary file, then `os.replace`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import readout
from .common import clean_json, discard, naming, sweep_due, tmp_path, write_atomic, write_json_atomic
from .errors import TOO_LONG_HINT, WRITE_ERRNOS, LearnvizError, WriteError
from .notebook import NOTEBOOK_EXTRA, MissingExtraError, Run, open_run, require_pandas
from .version import __version__

__all__ = ["FORMATS", "LABEL_CHARS", "export", "export_npz", "export_tables", "export_tensorboard", "tsv_cell"]

FORMATS = ("tensorboard", "npz", "parquet", "csv")
LABEL_CHARS = 100                   # a metadata cell's text is cut to this many characters
PROJECTOR_CONFIG = "projector_config.pbtxt"
METADATA_COLUMNS = ("probe_id", "skill", "category", "correct", "greedy_answer", "prompt")


def export(run: Run | str | Path, fmt: str, out: str | Path, *, layer: int | None = None,
           which: str = "all") -> list[Path]:
    """Write `run` (a Run, or a path for `open_run`) as `fmt` into the folder `out`; the files
    written. `which`: latest, a step or all (the checkpoints whose embeddings or probe rows are
    written); `layer`: the pooled layer (tensorboard: default the last one; npz: default every one)."""
    if fmt not in FORMATS:
        raise LearnvizError(f"unknown export format {fmt!r}", field="format", hint=f"one of {', '.join(FORMATS)}")
    run = run if isinstance(run, Run) else open_run(run)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LearnvizError("is a file, not a folder", path=out, hint="pass --out a folder (it is created)")
    try:
        if fmt == "tensorboard":
            return export_tensorboard(run, out, layer=layer, which=which)
        if fmt == "npz":
            return export_npz(run, out, layer=layer, which=which)
        return export_tables(run, out, fmt, which=which)
    except OSError as exc:      # a read-only or full --out: the file it stopped at, and what to do
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise WriteError(f"cannot write: {os.strerror(exc.errno)}", path=exc.filename or out,
                         hint=TOO_LONG_HINT if exc.errno == errno.ENAMETOOLONG else
                         "pass --out a folder you can write to, or make it writable or free some space") from None


def _chosen(run: Run, which: str) -> list[int]:
    steps = run.steps
    if not steps:
        raise LearnvizError("holds no checkpoint with a successful extraction", path=run.dir,
                            hint=f"`learnviz status --archive {run.dir}` shows what is archived")
    return readout.chosen_steps(steps, str(which), run.left_out if str(which).isdigit() else None)


def _write_with(path: Path, fill: Callable[[Path], None]) -> Path:
    """`fill(tmp)` writes the whole file into a temporary sibling, which then replaces `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with naming(path):      # an error names `path`, not the hidden temporary file
            fill(tmp)
            os.replace(tmp, path)
    finally:
        discard(tmp)
    sweep_due(path.parent, path)
    return path


# ---------------------------------------------------------------- TensorBoard projector

_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# control characters and the Unicode line breaks: whatever a TSV reader might split a line at
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _escape(match: re.Match) -> str:
    c = match.group()
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")


def tsv_cell(value: Any, limit: int = LABEL_CHARS) -> str:
    """A metadata cell: the text cut to `limit` characters (an ellipsis marks the cut), then a
    backslash, tab, newline or carriage return written as \\\\, \\t, \\n, \\r (other control
    characters and Unicode line breaks as \\xNN, \\uNNNN), so that one probe stays one line of
    tab-separated cells."""
    text = str(value)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "\u2026"
    return _CONTROL.sub(_escape, text.replace("\\", "\\\\"))


def _pb_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def export_tensorboard(run: Run, out: Path, *, layer: int | None = None, which: str = "all") -> list[Path]:
    """TensorBoard's projector format (see the module's docstring); one embedding per checkpoint."""
    written: list[Path] = []
    blocks: list[str] = []
    for step in _chosen(run, which):
        emb = run.embeddings(step, layer)
        k = run.layer_of(step, layer)
        probes = run.probes(step)
        folder = f"step_{step}"
        tensor = out / folder / f"layer_{k}.tsv"
        # 9 significant digits: every float32 (and float16) value reads back exactly
        written.append(_write_with(tensor, lambda tmp, e=emb: np.savetxt(tmp, np.asarray(e, dtype=np.float32),
                                                                          fmt="%.9g", delimiter="\t")))
        lines = ["\t".join(METADATA_COLUMNS)]
        for r in probes.itertuples(index=False):
            cells = (r.probe_id, r.skill, r.category, "true" if r.correct else "false", r.greedy_answer, r.prompt)
            lines.append("\t".join(tsv_cell(c) for c in cells))
        written.append(write_atomic(out / folder / "metadata.tsv", "\n".join(lines) + "\n"))
        blocks.append("embeddings {\n"
                      f"  tensor_name: {_pb_string(f'step_{step}/layer_{k}')}\n"
                      f"  tensor_path: {_pb_string(f'{folder}/{tensor.name}')}\n"
                      f"  metadata_path: {_pb_string(f'{folder}/metadata.tsv')}\n"
                      f"  tensor_shape: {emb.shape[0]}\n  tensor_shape: {emb.shape[1]}\n"
                      "}\n")
    written.append(write_atomic(out / PROJECTOR_CONFIG, "".join(blocks)))
    return written


# ---------------------------------------------------------------- npz

def export_npz(run: Run, out: Path, *, layer: int | None = None, which: str = "all") -> list[Path]:
    """<out>/embeddings/: probe_set.json, checkpoint_<step>.npz per checkpoint, umap_coords.json."""
    folder = out / "embeddings"
    steps = _chosen(run, which)
    meta = run.probes(steps[-1])
    ids = [str(x) for x in meta["probe_id"]]
    written: list[Path] = []
    coords: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[str]] = {}
    all_layers: list[int] = []
    for step in steps:
        layers = [run.layer_of(step, layer)] if layer is not None else run.pooled_layers(step)
        all_layers = list(dict.fromkeys(all_layers + layers))
        arrays: dict[str, np.ndarray] = {"probe_ids": np.asarray(ids, dtype=str), "step": np.int64(step),
                                         "layers": np.asarray(layers, dtype=np.int64)}
        arrays.update({f"layer_{k}": run.embeddings(step, k) for k in layers})

        def fill(tmp: Path, arrays=arrays) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        written.append(_write_with(folder / f"checkpoint_{step}.npz", fill))
        for k in layers:
            try:
                xy = run.coords(step, k)
            except LearnvizError as exc:     # every layer's reason (each names its layer), once
                why = missing.setdefault(str(step), [])
                if str(exc) not in why:
                    why.append(str(exc))
            else:
                coords.setdefault(str(step), {})[str(k)] = xy
    probe_set = {"probe_hash": run.probe_hash, "probe_count": len(ids), "layers": all_layers, "steps": steps,
                 "files": {str(s): f"checkpoint_{s}.npz" for s in steps}, "learnviz_version": __version__,
                 "probes": [{"id": r.probe_id, "skill": r.skill, "category": r.category, "prompt": r.prompt,
                             "expected": r.expected} for r in meta.itertuples(index=False)]}
    written.append(write_json_atomic(folder / "probe_set.json", probe_set))
    layout = {"probe_hash": run.probe_hash, "probe_ids": ids, "layers": all_layers,
              "steps": [int(s) for s in coords], "coords": coords,
              "missing": {step: "; ".join(why) for step, why in missing.items()}}
    written.append(write_json_atomic(folder / "umap_coords.json", layout, indent=None))
    return written


# ---------------------------------------------------------------- parquet, csv

def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MissingExtraError("pyarrow is not installed: pandas writes Parquet with it",
                                hint=NOTEBOOK_EXTRA) from None


def _jsonable_cells(df):
    """A copy of `df` whose list and dict cells are JSON text (CSV has no lists)."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object and df[col].map(lambda v: isinstance(v, (list, dict, tuple))).any():
            df[col] = df[col].map(lambda v: json.dumps(clean_json(v)) if isinstance(v, (list, dict, tuple)) else v)
    return df


def export_tables(run: Run, out: Path, fmt: str = "parquet", *, which: str = "all") -> list[Path]:
    """<out>/history, checkpoints and probes (long: every chosen checkpoint) as .parquet or .csv."""
    require_pandas()
    if fmt == "parquet":
        _require_pyarrow()
    tables = {"history": run.history, "checkpoints": run.checkpoints, "probes": run.probes(_chosen(run, which))}
    written = []
    for name, df in tables.items():
        if fmt == "parquet":
            written.append(_write_with(out / f"{name}.parquet", lambda tmp, df=df: df.to_parquet(tmp, index=False)))
        else:
            written.append(_write_with(out / f"{name}.csv",
                                       lambda tmp, df=df: _jsonable_cells(df).to_csv(tmp, index=False)))
    return written
