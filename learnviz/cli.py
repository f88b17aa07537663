"""The `learnviz` command line. Thin: parse flags into settings, call the core, print."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from . import pipeline, readout
from .common import settle_heap
from .errors import TOO_LONG_HINT, WRITE_ERRNOS, LearnvizError, Terminated
from .flags import (
    EPILOG,
    FORMATTER,
    add_checkpoint_choice,
    add_extract_flags,
    add_paths,
    examples,
    missing_run_folder,
    settings_from,
)
from .version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learnviz",
        description="See what your language model learns, checkpoint by checkpoint: one fixed probe set "
                    "through every checkpoint, recorded in one HDF5 archive per checkpoint.",
        epilog=EPILOG, formatter_class=FORMATTER)
    parser.add_argument("--version", action="version", version=f"learnviz {__version__}")
    parser.add_argument("--config", metavar="FILE", help="settings file (YAML)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _pipeline_commands(sub)
    _info_commands(sub)
    _figure_commands(sub)
    _export_commands(sub)

    from .plugins import register_commands
    register_commands(sub)   # demo, and the adapters' commands (serve, worker, beat, submit), when installed
    return parser


def _pipeline_commands(sub) -> None:
    """run, analyze: the commands that write archives (`demo` comes from learnviz/demo/cli.py)."""
    p = sub.add_parser("run", help="archive every complete checkpoint that is not archived yet (no Redis)",
                       description="The embedded pipeline: find complete checkpoints under --checkpoints, run the "
                                   "probe set through each that lacks a current archive, write "
                                   "<archive>/<checkpoint>.h5 and learning_history.jsonl. Re-running is a no-op; "
                                   "changed weights are recomputed; a broken checkpoint is recorded as failed and "
                                   "the others go on.",
                       epilog=examples("learnviz run --checkpoints runs/gpt2-small",
                                       "learnviz run --checkpoints runs/gpt2-small --device cuda --layers 0,mid,last",
                                       "learnviz run --checkpoints runs/gpt2-small --tokenizer runs/tokenizer --watch "
                                       "--interval 30",
                                       "learnviz run --checkpoints runs/gpt2-small --force"),
                       formatter_class=FORMATTER)
    add_paths(p)
    add_extract_flags(p)
    p.add_argument("--watch", action="store_true",
                   help="keep going: archive each checkpoint once it has settled and redraw, until Ctrl-C or SIGTERM")
    p.add_argument("--interval", type=float, metavar="S", dest="scan_interval",
                   help="with --watch: seconds between two scans (default: the scan_interval setting, 30)")
    p.add_argument("--force", action="store_true",
                   help="extract every checkpoint again, and redo its CPU stages, even when its archive is current "
                        "(after a learnviz upgrade or another --dtype, which archives are not keyed by); not with "
                        "--watch")

    p = sub.add_parser("analyze", help="run the CPU analyses over archived checkpoints",
                       description="The CPU stages over the archive: skills, calibration (reliability bins, ECE, "
                                   "MCE, Brier), entropy flags, error positions and weight drift per checkpoint; "
                                   "RSA drift, linear CKA and the aligned UMAP layout in step order; logprob "
                                   "trajectories, dataset cartography and the hard-example board over the whole "
                                   "run. Stages that are current are skipped; `learnviz run` runs them too.",
                       epilog=examples("learnviz analyze --archive runs/gpt2-small/learnviz-archive",
                                       "learnviz analyze --checkpoints runs/gpt2-small --checkpoint 2000 --force"),
                       formatter_class=FORMATTER)
    add_paths(p)
    add_checkpoint_choice(p, "all", "all that are not current")
    p.add_argument("--force", action="store_true", help="recompute even when current")


def _info_commands(sub) -> None:
    """status, probes, config: the commands that only read."""
    p = sub.add_parser("status", help="one row per archived checkpoint, with per-skill accuracy",
                       description="One row per archived checkpoint: its step, the state of each stage "
                                   "(ok/failed, with the reason) and the accuracy of the greedy answers "
                                   "per skill of the probe set. A long run shows its newest checkpoints "
                                   "(--last) and every failed, unreadable or flagged one, and says how many "
                                   "it left out (--all: every one). Reads the archives only; never loads a model.",
                       epilog=examples("learnviz status --checkpoints runs/gpt2-small",
                                       "learnviz status --checkpoints runs/pythia --all",
                                       "learnviz status --archive runs/gpt2-small/learnviz-archive --json",
                                       "learnviz status --checkpoints runs/gpt2-small --flags",
                                       "learnviz status --archive runs/a/archive --flags loss_spike,accuracy_drop"),
                       formatter_class=FORMATTER)
    add_paths(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (every checkpoint)")
    p.add_argument("--last", type=int, default=readout.STATUS_LAST, metavar="N",
                   help=f"the newest checkpoints the table shows, besides every failed, unreadable or flagged one "
                        f"(default {readout.STATUS_LAST})")
    p.add_argument("--all", action="store_true", help="every checkpoint in the table")
    p.add_argument("--flags", nargs="?", const="all", metavar="FLAG,FLAG",
                   help="only the checkpoints with a health flag (any, or one of these: "
                        f"{', '.join(readout.HEALTH_FLAGS)}: NaN outputs, left out of the series)")

    p = sub.add_parser("probes", help="show or check a probe set",
                       description="Summarise the probe set (default: SYLLO plus hard examples), validate a "
                                   "probe file, or regenerate the default SYLLO file.",
                       epilog=examples("learnviz probes",
                                       'learnviz probes --probes my_probes.jsonl --hard-examples ""'),
                       formatter_class=FORMATTER)
    p.add_argument("--probes", metavar="FILE", help="probe file to check (default: the SYLLO probe set)")
    p.add_argument("--hard-examples", metavar="FILE",
                   help="hard-example YAML (default: config/hard_examples.yaml; '' for none)")
    p.add_argument("--write-syllo", metavar="FILE",
                   help="write the default 500-probe SYLLO set to FILE (an existing FILE with other probes is "
                        "kept unless --force)")
    p.add_argument("--force", action="store_true", help="with --write-syllo: replace FILE even when it holds other "
                                                        "probes")

    p = sub.add_parser("config", help="show every setting, its value and where it came from",
                       description="Print every setting with its effective value and the layer it came from "
                                   "(default, settings file, environment, command line). Use it to check what "
                                   "a worker or a CI job will run with.",
                       epilog=examples("learnviz config",
                                       "learnviz --config my.yaml config",
                                       "learnviz config --defaults"),
                       formatter_class=FORMATTER)
    p.add_argument("--defaults", action="store_true", help="print config/learnviz.yaml as generated from the defaults")


def _figure_commands(sub) -> None:
    """The plan's quick-start commands: radar, embed, hard-examples, visualize."""
    drawn_into = "Figures go to <archive>/visualizations/."
    p = sub.add_parser("radar", help="skill radar of a checkpoint (accuracy per skill vs the base checkpoint)",
                       description="Bring the checkpoint up to date (extract it when --checkpoints is given and its "
                                   "archive is not current, then the CPU stages), then draw its skill radar "
                                   "(radar_<step>.png and skill_radar_latest.png): accuracy per skill against the "
                                   "run's first checkpoint. " + drawn_into,
                       epilog=examples("learnviz radar --checkpoints runs/gpt2-small",
                                       "learnviz radar --archive runs/run1/learnviz-archive --checkpoint all --gif"),
                       formatter_class=FORMATTER)
    add_paths(p)
    add_extract_flags(p)
    add_checkpoint_choice(p, "latest", "latest")
    p.add_argument("--gif", action="store_true", help="also assemble skill_radar_animated.gif")

    p = sub.add_parser("embed", help="collect a checkpoint's embeddings and draw its UMAP; --visualize: all of them",
                       description="Collect embeddings: run the probe set through the checkpoint (the extraction, "
                                   "when --checkpoints is given and its archive is not current), compute its aligned "
                                   "UMAP layout, and draw umap_<step>.png (probes coloured by skill, the same axes "
                                   "on every checkpoint). --visualize draws every checkpoint's UMAP figure and "
                                   "umap_animated.gif from the archives, running no model. " + drawn_into,
                       epilog=examples("learnviz embed --checkpoints runs/gpt2-small --checkpoint 2000",
                                       "learnviz embed --archive runs/gpt2-small/learnviz-archive --visualize"),
                       formatter_class=FORMATTER)
    add_paths(p)
    add_extract_flags(p)
    add_checkpoint_choice(p, None, "latest; with --visualize: none")
    p.add_argument("--visualize", action="store_true", help="draw every UMAP figure and the animated GIF")

    p = sub.add_parser("hard-examples", help="update and draw the hard-example board",
                       description="Bring the checkpoint up to date (extraction and CPU stages, which rebuild "
                                   "hard_example_board.json), then draw hard_example_board.png: each hard example "
                                   "right or wrong (and how) at every checkpoint. " + drawn_into,
                       epilog=examples("learnviz hard-examples --checkpoints runs/gpt2-small"),
                       formatter_class=FORMATTER)
    add_paths(p)
    add_extract_flags(p)
    add_checkpoint_choice(p, "latest", "latest")

    p = sub.add_parser("visualize", help="draw every figure of the run, animated GIFs included",
                       description="Draw every figure from the archives (no model is run): loss curve, skill "
                                   "radars, UMAP layouts, weight drift, calibration, hard-example board, logprob "
                                   "heatmaps, error positions, entropy and geometry over training, and the "
                                   "animated GIFs. Only figures whose inputs changed are drawn again. "
                                   "docs/visualizations.md describes each one. " + drawn_into,
                       epilog=examples("learnviz visualize --archive runs/gpt2-small/learnviz-archive",
                                       "learnviz visualize --checkpoints runs/gpt2-small --no-gifs --force"),
                       formatter_class=FORMATTER)
    add_paths(p)
    p.add_argument("--probe", metavar="ID", help="probe id of the canonical-answer logprob heatmap "
                                                 "(default: the hard example with the longest answer)")
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIFs")
    p.add_argument("--force", action="store_true", help="draw every figure again, even when current")


def _export_commands(sub) -> None:
    """export: the archives in other tools' formats (learnviz/export.py, docs/api.md)."""
    p = sub.add_parser("export", help="write the archives as TensorBoard projector, npz, Parquet or CSV files",
                       description="Write a run's archives in other tools' formats (reads the archives only; never "
                                   "loads a model). tensorboard: TensorBoard's embedding projector, one embedding "
                                   "per checkpoint of one layer, with probe id, skill, category, correct and prompt "
                                   "as metadata (then `tensorboard --logdir OUT`). npz: embeddings/probe_set.json, "
                                   "embeddings/checkpoint_<step>.npz (every pooled layer, with the probe ids) and "
                                   "embeddings/umap_coords.json. parquet, csv: history, checkpoints and probes (one "
                                   "row per checkpoint and probe) tables. docs/api.md describes each file.",
                       epilog=examples("learnviz export tensorboard --checkpoints runs/gpt2-small --out tb --layer 11",
                                       "learnviz export npz --archive runs/gpt2-small/learnviz-archive --out export",
                                       "learnviz export parquet --archive runs/run1/learnviz-archive --out tables",
                                       "learnviz export csv --checkpoints runs/gpt2-small --out tables "
                                       "--checkpoint latest"),
                       formatter_class=FORMATTER)
    p.add_argument("format", choices=["tensorboard", "npz", "parquet", "csv"], help="the output format")
    add_paths(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created; files of the same "
                                                               "names are replaced)")
    p.add_argument("--layer", type=int, metavar="L",
                   help="pooled layer (decoder block, 0-based; negative counts from the end) to export "
                        "(default: tensorboard the last pooled layer, npz every pooled layer)")
    add_checkpoint_choice(p, "all", "all")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    settle_heap()
    stop_on_sigterm()
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except LearnvizError as exc:
        print(f"learnviz: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(interrupted(args.command, exc), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:          # `learnviz status | head`: the reader has what it wanted
        try:                         # (the Python idiom: no traceback, nor one more at exit)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        # a full disk or a read-only folder: the machine's to fix, named without a traceback
        hint = f" ({TOO_LONG_HINT})" if exc.errno == errno.ENAMETOOLONG else ""
        print(f"learnviz: error: {exc.filename or 'a file'}: {os.strerror(exc.errno)}{hint}", file=sys.stderr)
        return 2


def stop_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does (exit 143 instead of 130): its default action would
    kill the process in silence, leaving the temporary file being written and the run lock's holder
    note behind, and the user not knowing what was kept."""
    import signal
    import threading

    def on_term(signum, frame):
        raise Terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


# what a command run again does after an interrupt
AGAIN = {"export": "writes the whole export again",
         # the demo's training has no resume: a half-trained demo is trained again from its seed
         "demo": "retrains the model unless every checkpoint was saved, else does only what is left"}
READ_ONLY = ("status", "probes", "config")


def interrupted(command: str, exc: KeyboardInterrupt) -> str:
    """The one line an interrupted command prints: which signal, what it wrote (each archive whole:
    one cut off mid-write was a temporary file, removed, never put in place), and what the same
    command does when run again."""
    text = f"learnviz: {command} interrupted ({'SIGTERM' if isinstance(exc, Terminated) else 'Ctrl-C'})"
    if command in READ_ONLY:
        return text
    written = pipeline.written_here()
    if written:
        names = list(written)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        text += f": kept {len(names)} archive{'s' if len(names) > 1 else ''} written whole ({shown})"
    else:
        text += ": no archive written by this command"
    again = AGAIN.get(command, "does only what is left")
    return text + f"; nothing half-written is left in place; `learnviz {command}` again {again}"


# ---------------------------------------------------------------- commands

def cmd_run(args) -> int:
    if args.watch and args.force:
        raise LearnvizError("--force extracts every checkpoint again: once, not at every pass of --watch",
                            field="--force", hint="run `learnviz run --force` once, then `learnviz run --watch`")
    settings = settings_from(args)
    if args.watch:
        return watch(settings, args)
    report = pipeline.update(settings, require_checkpoints=True, force=args.force, progress=not args.quiet)
    print_report(report, settings)
    return 0 if report.ok else 1


def watch(settings, args) -> int:
    """`learnviz run --watch`: pipeline.watch until Ctrl-C or SIGTERM (both end it the same way: no
    partial archive is left), printing each pass that changed something."""
    import signal
    import threading

    stopped = threading.Event()

    def on_signal(signum, frame):
        # set first: an interrupt raised where Python ignores exceptions (a finalizer) still ends
        # the loop after the pass at hand
        stopped.set()
        raise KeyboardInterrupt

    def unraisable(info, default=sys.unraisablehook):
        if not (stopped.is_set() and isinstance(info.exc_value, KeyboardInterrupt)):
            default(info)   # the interrupt a finalizer swallowed is no error: the loop ends after this pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.unraisablehook = unraisable
    print(f"watching {settings.checkpoints} every {settings.scan_interval:g}s (archive: {settings.archive_dir()}); "
          f"Ctrl-C stops", flush=True)

    def on_report(report) -> None:
        if report.done or report.failed or report.gone or report.set_aside or (report.cpu and report.cpu.changed):
            print_report(report, settings)
            sys.stdout.flush()

    try:
        pipeline.watch(settings, interval=settings.scan_interval, stop=stopped.wait, on_report=on_report,
                       progress=not args.quiet)
    except KeyboardInterrupt:
        pass
    print("learnviz: stopped watching; every archive written is whole", flush=True)
    return 0


def cmd_analyze(args) -> int:
    settings = settings_from(args)
    report = pipeline.update(settings, which=args.checkpoint, stages=pipeline.CPU_STAGES, force=args.force,
                             progress=not args.quiet)
    for r in report.runs or [report]:
        if r.run:
            print(f"run {r.run}:")
        print_cpu_report(r.cpu)
    return 0 if report.ok else 1


def cmd_status(args) -> int:
    settings = settings_from(args)
    if settings.checkpoints and not Path(settings.checkpoints).exists() and not settings.archive_dir().exists():
        raise missing_run_folder(settings.checkpoints)
    if args.flags:
        readout.filter_flags([], args.flags)      # a flag name that does not exist: said before anything is read
    runs = pipeline.runs(settings, archived=True)
    several = len(runs) > 1 or any(name for name, _ in runs)
    out = {}
    for name, rs in runs:
        archive_dir = rs.archive_dir()
        counts = {}

        def shown(rows, counts=counts):     # which rows the output has (their accuracy is read)
            counts["all"] = len(rows)
            if args.flags:
                return readout.filter_flags(rows, args.flags)
            if args.json or args.all:
                return rows
            return readout.newest_and_notable(rows, args.last)

        rows = readout.status_rows(archive_dir, select=shown)
        readout.keep_index(archive_dir)
        out[name] = rows
        board_problem = readout.board_problem(archive_dir)
        if not args.json:
            if several:
                print(f"run {name or '(root)'}: {archive_dir}")
            if args.flags and not rows and counts.get("all"):
                print(f"no checkpoint flagged{'' if args.flags == 'all' else ' ' + args.flags} "
                      f"({counts['all']} archived in {archive_dir})")
            elif args.flags and rows:   # the others are not "all ok": flagged otherwise, or failed
                which = "" if args.flags == "all" else " " + args.flags
                print(f"{len(rows)} of {counts['all']} checkpoints flagged{which}")
                print(readout.format_status(rows))
            else:
                print(readout.format_status(rows, total=counts.get("all", 0)) if rows
                      else f"no archives in {archive_dir}")
            for line in readout.format_training_status(readout.training_status(archive_dir)):
                print(line)
        if board_problem:   # on stderr with --json, which prints the rows alone
            print(board_problem, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        if several:
            print(json.dumps({name: [r.__dict__ for r in rows] for name, rows in out.items()}, indent=2))
        else:
            print(json.dumps([r.__dict__ for r in out[runs[0][0]]], indent=2))
    return 0


def cmd_probes(args) -> int:
    from .probes import generate_syllo_probes, load_probe_set, read_probe_file, write_jsonl
    if args.write_syllo:
        probes = generate_syllo_probes()
        target = Path(args.write_syllo)
        if target.is_dir():
            raise LearnvizError("is a folder: --write-syllo takes the file to write", path=target,
                                field="--write-syllo")
        if target.exists() and not args.force:
            try:
                same = read_probe_file(target) == list(probes)
            except (LearnvizError, OSError, ValueError):
                same = False
            if same:
                print(f"{target} already holds the {len(probes)} SYLLO probes: left as it is")
                return 0
            # a user's own probe set, kept: its archives' results are keyed by its hash
            raise LearnvizError("exists and holds other probes: left as it is", path=target, field="--write-syllo",
                                hint="pass another file, or --force to replace it with the SYLLO set")
        write_jsonl(probes, target)
        print(f"wrote {len(probes)} probes to {target}")
        return 0
    settings = settings_from(args)
    ps = load_probe_set(settings.probes_path(), settings.hard_examples_path())
    print(f"{len(ps)} probes, hash {ps.hash}, from {', '.join(ps.sources)}")
    counts: dict[str, int] = {}
    for p in ps:
        counts[p.skill] = counts.get(p.skill, 0) + 1
    for skill, n in counts.items():
        print(f"  {skill:<16} {n}")
    return 0


def cmd_config(args) -> int:
    from .settings import Settings, defaults_yaml, find_config_file, public_fields
    if args.defaults:
        print(defaults_yaml())
        return 0
    settings = settings_from(args)
    used = find_config_file(args.config)
    print(f"settings file: {used if used is not None else 'none (built-in defaults)'}")
    defaults = Settings()
    rows = []
    for f in public_fields():        # a file that restates a default (the shipped one lists them all): "default"
        value = getattr(settings, f.name)
        source = "default" if value == getattr(defaults, f.name) else settings.sources.get(f.name, "default")
        rows.append((f.name, json.dumps(value), source))
    wide = [max(len(r[i]) for r in rows) for i in (0, 1)]
    for name, value, source in rows:
        print(f"{name:<{wide[0]}}  {value:<{wide[1]}}  ({source})")
    return 0


def _figures(args, which: str | None, figures: pipeline.Figures, show) -> int:
    """Bring `which` up to date (all stages; None: draw only), draw `figures`, print the summary
    and the paths of the files `show(steps)` names that exist."""
    settings = settings_from(args)
    stages = pipeline.STAGES if which is not None else (pipeline.FIGURES,)
    report = pipeline.update(settings, which=which or "all", stages=stages, figures=figures,
                             progress=not args.quiet)
    failed = False
    for r in report.runs or [report]:
        if r.run:
            print(f"run {r.run}:")
        for path, reason in r.failed:
            print(f"  failed: extraction of {path}: {reason}", file=sys.stderr)
        if r.cpu is not None and r.cpu.changed:
            print_cpu_report(r.cpu)
        result = r.visualizations
        print_vis_report(result)
        for name in show(r.steps if which is not None else []):
            if (Path(result["dir"]) / name).exists():
                print(f"  {Path(result['dir']) / name}")
        failed = failed or result["status"] == "failed"
    return 1 if failed else 0


def cmd_radar(args) -> int:
    gif = ["skill_radar_animated.gif"] if args.gif else []
    return _figures(args, args.checkpoint, pipeline.Figures(only=["radar"], gifs=args.gif, chosen_only=True),
                    lambda steps: [f"radar_{s}.png" for s in steps][-5:] + ["skill_radar_latest.png"] + gif)


def cmd_embed(args) -> int:
    which = args.checkpoint or "latest" if args.checkpoint is not None or not args.visualize else None
    gif = ["umap_animated.gif"] if args.visualize else []
    figures = pipeline.Figures(only=["umap"], gifs=args.visualize, chosen_only=not args.visualize)
    return _figures(args, which, figures,
                    lambda steps: [f"umap_{s}.png" for s in steps][-5:] + ["umap_latest.png"] + gif)


def cmd_hard_examples(args) -> int:
    return _figures(args, args.checkpoint, pipeline.Figures(only=["hard_examples"]),
                    lambda steps: ["hard_example_board.png"])


def cmd_visualize(args) -> int:
    return _figures(args, None, pipeline.Figures(gifs=not args.no_gifs, force=args.force, probe=args.probe),
                    lambda steps: [])


def cmd_export(args) -> int:
    from .export import export
    settings = settings_from(args)
    written = []
    runs = pipeline.runs(settings, archived=True)
    which = str(args.checkpoint)
    if len(runs) > 1 and which.isdigit():     # one step of several runs: the runs that have it, checked
        have = {name: [a.step for a in readout.series(rs.archive_dir())] for name, rs in runs}   # before writing
        runs = [(name, rs) for name, rs in runs if int(which) in have[name]]
        if not runs:
            raise LearnvizError(f"no run has an archived checkpoint at step {which}", field="--checkpoint",
                                hint="archived steps: " + "; ".join(f"{name}: {', '.join(map(str, steps)) or 'none'}"
                                                                    for name, steps in have.items()))
        for name, steps in have.items():
            if int(which) not in steps:
                print(f"run {name}: no archived checkpoint at step {which} "
                      f"(it has {', '.join(map(str, steps)) or 'none'}): left out")
    for name, rs in runs:   # several runs: each into OUT/<run name>/
        written += export(rs.archive_dir(), args.format, Path(args.out) / name, layer=args.layer,
                          which=args.checkpoint)
    print(f"wrote {len(written)} files ({args.format}) to {args.out}")
    for path in written[-5:]:
        print(f"  {path}")
    return 0


# ---------------------------------------------------------------- printing

def print_cpu_report(report) -> None:
    failed = any(stage == pipeline.SERIES for _, stage, _ in report.failed)
    series = ("updated" if report.series else "failed" if failed else "waiting" if report.series_waiting
              else "current")
    print(f"analysis: {len(report.analysed)} checkpoints, geometry: {len(report.geometry)}, "
          f"series: {series} in {report.seconds:.1f}s")
    for step, stage, reason in report.failed:
        print(f"  failed: step {step} {stage}: {reason}")
    for step, reason in report.left_out:
        print(f"  broken: step {step}: {reason} (flagged non_finite in `learnviz status`)")
    for u in report.unreadable:
        print(f"  unreadable: {'' if u.step is None else f'step {u.step} '}{u.reason}")
    held = [f"{stage} of step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}"
            for stage, steps in report.waiting.items()] + (["the series"] if report.series_waiting else [])
    if held:
        print(f"  waiting: {'; '.join(held)}: {pipeline.Holdback(report.unreadable).why()}")


def print_report(report, settings) -> None:
    if report.runs:
        for r in report.runs:
            print(f"run {r.run or '(root)'}:")
            print_report(r, settings)
        return
    print(f"archive: {report.archive_dir or settings.archive_dir()}")
    if report.found == 0:
        print("\n".join(pipeline.nothing_found(report.checkpoint_root, report.beside)))
    in_all = f", {report.failed_total} failed in all (see `learnviz status`)" if report.failed_total else ""
    print(f"{len(report.done)} archived, {len(report.current)} already current, "
          f"{len(report.failed)} failed now{in_all}, {len(report.incomplete)} incomplete (skipped for now) "
          f"in {report.seconds:.1f}s")
    for path, moved, reason in report.set_aside:
        print(f"  moved aside: {path} was unreadable, now {moved.name}, and archived again: {reason}")
    if report.replaced_probes:
        old = sorted({o for _, o, _ in report.replaced_probes})
        names = ", ".join(p.name for p, _, _ in report.replaced_probes[:5])
        more = f" and {len(report.replaced_probes) - 5} more" if len(report.replaced_probes) > 5 else ""
        print(f"  probe set changed: {len(report.replaced_probes)} archives ({names}{more}) held probe set "
              f"{', '.join(old)}; their results are replaced by this run's probe set {report.replaced_probes[0][2]}")
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}")
    for path, note in report.notes:
        print(f"  archived with probes failed alone: {path}: {note}")
    for path, reason in report.incomplete:
        print(f"  incomplete: {path}: {reason}")
    for path, reason in report.beside:
        print(f"  not a checkpoint: {path}: {reason}")
    for path in report.gone:
        print(f"  gone: {path} was deleted while it was processed (nothing recorded)")
    if report.status is not None:
        if report.status.appended:
            print(f"  status files ingested: {', '.join(report.status.appended)}")
        for path, problem in report.status.malformed:
            print(f"  status file skipped: {path}: {problem}")
    if report.cpu is not None and report.cpu.changed:
        print_cpu_report(report.cpu)
    elif report.unreadable:   # the CPU stages did not run: the unreadable archives still stand
        for u in report.unreadable:
            print(f"  unreadable: {'' if u.step is None else f'step {u.step} '}{u.reason}")
    vis = report.visualizations
    if vis is not None and (vis.get("drawn") or vis.get("failed")):
        print_vis_report(vis)


def print_vis_report(result: dict) -> None:
    print(f"visualizations: {len(result['drawn'])} drawn, {result['current']} current, "
          f"in {result['seconds']:.1f}s -> {result['dir']}")
    for name, reason in result["skipped"].items():
        print(f"  skipped: {name}: {reason}")
    for name, reason in result["failed"].items():
        print(f"  failed: {name}: {reason}")


COMMANDS = {"analyze": cmd_analyze, "run": cmd_run, "status": cmd_status, "probes": cmd_probes, "config": cmd_config,
            "radar": cmd_radar, "embed": cmd_embed, "hard-examples": cmd_hard_examples,
            "visualize": cmd_visualize, "export": cmd_export}


if __name__ == "__main__":
    sys.exit(main())
