"""The `learnviz` command line. Thin: parse flags into settings, call the core, print."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .errors import LearnvizError
from .settings import load_settings

EPILOG = """\
Settings come from defaults, then config/learnviz.yaml (or --config FILE, or $LEARNVIZ_CONFIG),
then LEARNVIZ_<KEY> environment variables, then these flags. `learnviz config` shows them all.
"""


def _paths(p: argparse.ArgumentParser, *, checkpoints: bool = True) -> None:
    if checkpoints:
        p.add_argument("--checkpoints", metavar="DIR", help="folder holding checkpoint-N/ (or step_N/, global_stepN/) folders")
    p.add_argument("--archive", metavar="DIR", help="archive folder (default: <checkpoints>/learnviz-archive)")


def _extract_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probes", metavar="FILE", help="probe file, JSONL/JSON/YAML (default: the SYLLO probe set)")
    p.add_argument("--hard-examples", metavar="FILE", help="hard-example YAML (default: config/hard_examples.yaml; '' for none)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--batch-size", type=int, metavar="N", help="probes per forward pass (default: 64)")
    p.add_argument("--layers", metavar="L,L", type=lambda s: [int(x) if x.lstrip('-').isdigit() else x for x in s.split(",")],
                   help="layers to pool, e.g. mid,last or 0,6,-1 (default: mid,last)")
    p.add_argument("--settle-seconds", type=float, metavar="S", help="skip checkpoints changed less than S seconds ago (default: 10)")
    p.add_argument("--retry-failed", action="store_true", default=None, help="re-run stages recorded as failed")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="let checkpoints run their own Python code (only for checkpoints you trust)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learnviz",
        description="See what your language model learns, checkpoint by checkpoint: one fixed probe set "
                    "through every checkpoint, recorded in one HDF5 archive per checkpoint.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"learnviz {__version__}")
    parser.add_argument("--config", metavar="FILE", help="settings file (YAML)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train a tiny model, archive its checkpoints, show the results",
                       description="Train a tiny GPT-2-style model on the SYLLO syllogism task (about a minute on "
                                   "2 CPU cores), write its checkpoints in the Hugging Face Trainer layout, run the "
                                   "whole pipeline over them and show the results. No Redis, no GPU, no downloads.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", dest="demo_out", metavar="DIR", help="output folder (default: ./learnviz-demo)")
    p.add_argument("--steps", dest="demo_steps", type=int, metavar="N", help="training steps (default: 500)")
    p.add_argument("--checkpoints-count", dest="demo_checkpoints", type=int, metavar="N", help="checkpoints to write (default: 10)")
    p.add_argument("--seed", dest="demo_seed", type=int, help="seed (default: 0)")
    p.add_argument("--retrain", action="store_true", help="train again even if the checkpoints exist")
    p.add_argument("--no-serve", action="store_true", help="stop after the archives instead of serving the dashboard")

    p = sub.add_parser("run", help="archive every complete checkpoint that is not archived yet (no Redis)",
                       description="The embedded pipeline: find complete checkpoints under --checkpoints, run the "
                                   "probe set through each that lacks a current archive, write "
                                   "<archive>/<checkpoint>.h5 and learning_history.jsonl. Re-running is a no-op; "
                                   "changed weights are recomputed; a broken checkpoint is recorded as failed and "
                                   "the others go on.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    _extract_flags(p)

    p = sub.add_parser("analyze", help="run the CPU analyses over archived checkpoints",
                       description="The CPU stages over the archive: skills, calibration (reliability bins, ECE, "
                                   "MCE, Brier), entropy flags, error positions and weight drift per checkpoint; "
                                   "RSA drift, linear CKA and the aligned UMAP layout in step order; logprob "
                                   "trajectories, dataset cartography and the hard-example board over the whole "
                                   "run. Stages that are current are skipped; `learnviz run` runs them too.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    p.add_argument("--checkpoint", default="all", metavar="latest|STEP|all",
                   help="which checkpoints' analysis to (re)compute (default: all that are not current)")
    p.add_argument("--force", action="store_true", help="recompute even when current")

    p = sub.add_parser("status", help="one row per archived checkpoint, with per-skill accuracy",
                       description="One row per archived checkpoint: its step, the state of each stage "
                                   "(ok/failed, with the reason) and the accuracy of the greedy answers "
                                   "per skill of the probe set. Reads the archives only; never loads a model.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("probes", help="show or check a probe set",
                       description="Summarise the probe set (default: SYLLO plus hard examples), validate a "
                                   "probe file, or regenerate the default SYLLO file.")
    p.add_argument("--probes", metavar="FILE", help="probe file to check")
    p.add_argument("--hard-examples", metavar="FILE", help="hard-example YAML")
    p.add_argument("--write-syllo", metavar="FILE", help="write the default 500-probe SYLLO set to FILE")

    p = sub.add_parser("config", help="show every setting, its value and where it came from",
                       description="Print every setting with its effective value and the layer it came from "
                                   "(default, settings file, environment, command line). Use it to check what "
                                   "a worker or a CI job will run with.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defaults", action="store_true", help="print config/learnviz.yaml as generated from the defaults")

    _figure_commands(sub)

    from .plugins import register_commands
    register_commands(sub)   # the adapters' commands (serve, worker, beat, submit), when installed
    return parser


def _figure_commands(sub) -> None:
    """The plan's quick-start commands: radar, embed, hard-examples, visualize."""
    which = "latest|STEP|all"
    drawn_into = "Figures go to <archive>/visualizations/."
    p = sub.add_parser("radar", help="skill radar of a checkpoint (accuracy per skill vs the base checkpoint)",
                       description="Bring the checkpoint up to date (extract it when --checkpoints is given and its "
                                   "archive is not current, then the CPU stages), then draw its skill radar "
                                   "(radar_<step>.png and skill_radar_latest.png): accuracy per skill against the "
                                   "run's first checkpoint. " + drawn_into,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    _extract_flags(p)
    p.add_argument("--checkpoint", default="latest", metavar=which, help="which checkpoint (default: latest)")
    p.add_argument("--gif", action="store_true", help="also assemble skill_radar_animated.gif")

    p = sub.add_parser("embed", help="collect a checkpoint's embeddings and draw its UMAP; --visualize: all of them",
                       description="Collect embeddings: run the probe set through the checkpoint (the extraction, "
                                   "when --checkpoints is given and its archive is not current), compute its aligned "
                                   "UMAP layout, and draw umap_<step>.png (probes coloured by skill, the same axes "
                                   "on every checkpoint). --visualize draws every checkpoint's UMAP figure and "
                                   "umap_animated.gif from the archives, running no model. " + drawn_into,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    _extract_flags(p)
    p.add_argument("--checkpoint", default=None, metavar=which,
                   help="which checkpoint to collect (default: latest; with --visualize: none)")
    p.add_argument("--visualize", action="store_true", help="draw every UMAP figure and the animated GIF")

    p = sub.add_parser("hard-examples", help="update and draw the hard-example board",
                       description="Bring the checkpoint up to date (extraction and CPU stages, which rebuild "
                                   "hard_example_board.json), then draw hard_example_board.png: each hard example "
                                   "right or wrong (and how) at every checkpoint. " + drawn_into,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    _extract_flags(p)
    p.add_argument("--checkpoint", default="latest", metavar=which, help="which checkpoint to add (default: latest)")

    p = sub.add_parser("visualize", help="draw every figure of the run, animated GIFs included",
                       description="Draw every figure from the archives (no model is run): loss curve, skill "
                                   "radars, UMAP layouts, weight drift, calibration, hard-example board, logprob "
                                   "heatmaps, error positions, entropy and geometry over training, and the "
                                   "animated GIFs. Only figures whose inputs changed are drawn again. "
                                   "docs/visualizations.md describes each one. " + drawn_into,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _paths(p)
    p.add_argument("--probe", metavar="ID", help="probe id of the canonical-answer logprob heatmap "
                                                 "(default: the hard example with the longest answer)")
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIFs")
    p.add_argument("--force", action="store_true", help="draw every figure again, even when current")


SETTING_FLAGS = ("checkpoints", "archive", "probes", "hard_examples", "device", "dtype", "batch_size", "layers",
                 "settle_seconds", "retry_failed", "trust_remote_code", "demo_out", "demo_steps",
                 "demo_checkpoints", "demo_seed")


def settings_from(args: argparse.Namespace):
    overrides = {k: getattr(args, k) for k in SETTING_FLAGS if hasattr(args, k)}
    return load_settings(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except LearnvizError as exc:
        print(f"learnviz: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("learnviz: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- commands

def cmd_run(args) -> int:
    from .pipeline import run
    settings = settings_from(args)
    report = run(settings, progress=not args.quiet)
    print_report(report, settings)
    vis_failed = bool(report.visualizations and report.visualizations.get("failed"))
    return 1 if report.failed or (report.cpu is not None and report.cpu.failed) or vis_failed else 0


def cmd_analyze(args) -> int:
    from .analyze import run_cpu_stages, series
    settings = settings_from(args)
    steps = None
    if args.checkpoint != "all":
        archived = [a.step for a in series(settings.archive_dir())]
        if not archived:
            raise LearnvizError("no archived checkpoints to analyse", path=settings.archive_dir(),
                                hint="run `learnviz run --checkpoints DIR` first")
        if args.checkpoint == "latest":
            steps = {archived[-1]}
        elif args.checkpoint.isdigit() and int(args.checkpoint) in archived:
            steps = {int(args.checkpoint)}
        else:
            raise LearnvizError(f"no archived checkpoint at step {args.checkpoint!r}", field="--checkpoint",
                                hint=f"archived steps: {', '.join(map(str, archived))}")
    report = run_cpu_stages(settings, steps=steps, force=args.force, progress=not args.quiet)
    print_cpu_report(report)
    return 1 if report.failed else 0


def print_cpu_report(report) -> None:
    print(f"analysis: {len(report.analysed)} checkpoints, geometry: {len(report.geometry)}, "
          f"series: {'updated' if report.series else 'current'} in {report.seconds:.1f}s")
    for step, stage, reason in report.failed:
        print(f"  failed: step {step} {stage}: {reason}")


def print_report(report, settings) -> None:
    print(f"archive: {settings.archive_dir()}")
    print(f"{len(report.done)} archived, {len(report.current)} already current, "
          f"{len(report.failed)} failed, {len(report.incomplete)} incomplete (skipped for now) "
          f"in {report.seconds:.1f}s")
    for path, reason in report.failed:
        print(f"  failed: {path}: {reason}")
    for path, reason in report.incomplete:
        print(f"  incomplete: {path}: {reason}")
    if report.cpu is not None and (report.cpu.analysed or report.cpu.geometry or report.cpu.series or report.cpu.failed):
        print_cpu_report(report.cpu)
    vis = report.visualizations
    if vis is not None and (vis.get("drawn") or vis.get("failed")):
        print_vis_report(vis)


def cmd_status(args) -> int:
    from .pipeline import status_rows
    settings = settings_from(args)
    rows = status_rows(settings.archive_dir())
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    if not rows:
        print(f"no archives in {settings.archive_dir()}")
        return 0
    print(format_status(rows))
    return 0


def format_status(rows) -> str:
    skills = list(dict.fromkeys(s for r in rows for s in r.skills))
    head = ["step", "checkpoint", "stages", "acc"] + skills
    table = []
    for r in rows:
        stages = " ".join(f"{k}:{v}" for k, v in r.stages.items())
        cells = [str(r.step), r.name, stages, "-" if r.accuracy is None else f"{r.accuracy:.2f}"]
        cells += [f"{r.skills[s]:.2f}" if s in r.skills else "-" for s in skills]
        table.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in table)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in table]
    for r in rows:
        if r.reason:
            lines.append(f"step {r.step} ({r.name}) failed: {r.reason}")
    return "\n".join(lines)


def cmd_probes(args) -> int:
    from .probes import generate_syllo_probes, load_probe_set, write_jsonl
    if args.write_syllo:
        probes = generate_syllo_probes()
        write_jsonl(probes, args.write_syllo)
        print(f"wrote {len(probes)} probes to {args.write_syllo}")
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
    from .settings import defaults_yaml, public_fields
    if args.defaults:
        print(defaults_yaml())
        return 0
    settings = settings_from(args)
    for f in public_fields():
        print(f"{f.name:<18} {json.dumps(getattr(settings, f.name)):<28} ({settings.sources.get(f.name, 'default')})")
    return 0


def cmd_demo(args) -> int:
    from .demo.run import run_demo
    settings = settings_from(args)
    t0 = time.time()
    run_demo(settings, retrain=args.retrain, serve=not args.no_serve, progress=not args.quiet)
    print(f"demo finished in {time.time() - t0:.0f}s")
    return 0


def _chosen_steps(archived: list[int], which: str) -> list[int]:
    if not archived:
        return []
    if which == "all":
        return archived
    if which == "latest":
        return [archived[-1]]
    if which.isdigit() and int(which) in archived:
        return [int(which)]
    raise LearnvizError(f"no archived checkpoint at step {which!r}", field="--checkpoint",
                        hint=f"archived steps: {', '.join(map(str, archived))}")


def bring_up_to_date(settings, which: str, *, progress: bool) -> list[int]:
    """Extract the chosen checkpoint(s) (latest|STEP|all) when a checkpoint folder is known and
    their archive is not current, then run the CPU stages for them. Returns their archived steps."""
    from .analyze import run_cpu_stages, series
    if which not in ("latest", "all") and not which.isdigit():
        raise LearnvizError(f"--checkpoint must be latest, all or a step number, got {which!r}", field="--checkpoint")
    archived = [a.step for a in series(settings.archive_dir())]
    if settings.checkpoints:
        from .pipeline import load_probes, plan, run_extract
        probes = load_probes(settings)
        jobs = plan(settings, probes)
        if which == "latest":   # the newest checkpoint on disk, unless an archived one is newer
            newest = max(jobs, key=lambda j: j.checkpoint.step, default=None)
            jobs = [newest] if newest is not None and newest.checkpoint.step >= max(archived, default=-1) else []
        elif which != "all":
            jobs = [j for j in jobs if j.checkpoint.step == int(which)]
        for job in jobs:
            if not run_extract(job, settings, probes, progress=progress):
                print(f"  failed: extraction of {job.checkpoint.path} (see `learnviz status`)", file=sys.stderr)
        archived = [a.step for a in series(settings.archive_dir())]
    steps = _chosen_steps(archived, which)
    if not steps:
        raise LearnvizError("no archived checkpoints", path=settings.archive_dir(),
                            hint="pass --checkpoints DIR, or run `learnviz run --checkpoints DIR` first")
    report = run_cpu_stages(settings, steps=None if which == "all" else set(steps), progress=progress)
    if report.analysed or report.geometry or report.series or report.failed:
        print_cpu_report(report)
    return steps


def print_vis_report(result: dict) -> None:
    print(f"visualizations: {len(result['drawn'])} drawn, {result['current']} current, "
          f"in {result['seconds']:.1f}s -> {result['dir']}")
    for name, reason in result["skipped"].items():
        print(f"  skipped: {name}: {reason}")
    for name, reason in result["failed"].items():
        print(f"  failed: {name}: {reason}")


def _draw(settings, show: list[str] = (), **kw) -> int:
    """Draw, print the summary and the paths of the `show` files that exist."""
    from .visualize import generate
    result = generate(settings, **kw)
    print_vis_report(result)
    for name in show:
        if (Path(result["dir"]) / name).exists():
            print(f"  {Path(result['dir']) / name}")
    return 1 if result["status"] == "failed" else 0


def cmd_radar(args) -> int:
    settings = settings_from(args)
    steps = bring_up_to_date(settings, args.checkpoint, progress=not args.quiet)
    show = [f"radar_{s}.png" for s in steps][-5:] + ["skill_radar_latest.png"] + (["skill_radar_animated.gif"] if args.gif else [])
    return _draw(settings, show, only=["radar"], steps=steps, gifs=args.gif)


def cmd_embed(args) -> int:
    settings = settings_from(args)
    steps = []
    if args.checkpoint is not None or not args.visualize:
        steps = bring_up_to_date(settings, args.checkpoint or "latest", progress=not args.quiet)
    show = [f"umap_{s}.png" for s in steps][-5:] + ["umap_latest.png"] + (["umap_animated.gif"] if args.visualize else [])
    return _draw(settings, show, only=["umap"], steps=None if args.visualize else steps, gifs=args.visualize)


def cmd_hard_examples(args) -> int:
    settings = settings_from(args)
    bring_up_to_date(settings, args.checkpoint, progress=not args.quiet)
    return _draw(settings, ["hard_example_board.png"], only=["hard_examples"])


def cmd_visualize(args) -> int:
    settings = settings_from(args)
    return _draw(settings, gifs=not args.no_gifs, force=args.force, probe=args.probe)


COMMANDS = {"analyze": cmd_analyze, "run": cmd_run, "status": cmd_status, "probes": cmd_probes, "config": cmd_config, "demo": cmd_demo,
            "radar": cmd_radar, "embed": cmd_embed, "hard-examples": cmd_hard_examples, "visualize": cmd_visualize}


if __name__ == "__main__":
    sys.exit(main())
