"""Visualization speed on the demo series (525 probes, 10 checkpoints, every stage archived).

Prints, in one warm process (matplotlib imported and one full draw done before timing):
  - the full set: every PNG (radars, UMAP frames, run-level figures, latest copies) and both
    GIFs, drawn from scratch (goal <= 30 s), and the PNGs alone;
  - incremental after one new checkpoint: the series holds the first 9 checkpoints, all drawn;
    the 10th arrives (its archive and the CPU stages, not timed); then what `learnviz run` draws
    (gifs=False), and the GIFs that `learnviz visualize` adds on top (goal: <= 1/4 of the full set).

It also splits the incremental draw into its two parts: the new checkpoint's own images (which
is all an incremental draw would be if figures only ever showed one checkpoint) and the nine
run-level figures, each of which plots every checkpoint and so is redrawn whenever one arrives.
The second part does not grow with the run while the full set does; `--checkpoints N` measures a
longer series of the same model to show where the share lands.

    python bench/visualize.py                    # builds the demo archive once in .bench-cache/
    python bench/visualize.py --checkpoints 30   # the demo model with 30 checkpoints (~4 min once)
    python bench/visualize.py --archive DIR      # or copies a complete demo archive (read only)
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import CACHE, complete_archive  # noqa: E402


def timed(fn) -> tuple[float, dict]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", help="a complete demo archive folder to copy (default: build one)")
    parser.add_argument("--checkpoints", type=int, metavar="N",
                        help="train the demo model with N checkpoints instead of its 10 (cached per N)")
    parser.add_argument("--repeat", type=int, default=3, metavar="K",
                        help="time each draw K times, interleaved, and print medians (default 3)")
    args = parser.parse_args()
    from learnviz.pipeline import run_cpu_stages
    from learnviz.readout import series
    from learnviz.settings import load_settings
    from learnviz.visualize import _run_level, generate

    if args.archive:
        source = Path(args.archive)
        settings = load_settings(environ={}, overrides={"archive": str(source)})
    else:
        source, settings = complete_archive(args.checkpoints)
    work = CACHE / "visualize-work"
    held = CACHE / "visualize-held"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(held, ignore_errors=True)
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("visualizations", ".locks", ".*.tmp"))
    s = dataclasses.replace(settings, archive=str(work))
    archives = series(work)
    assert len(archives) >= 2 and all(a.stage("geometry") and a.stage("geometry").ok for a in archives), \
        "the archive needs every stage (run `learnviz analyze` on it first)"
    last = archives[-1]
    print(f"demo series: {len(archives)} checkpoints, {last.attrs.get('probe_count')} probes; "
          f"the last (step {last.step}) arrives for the incremental draw")

    # the series without its last checkpoint, as it was before that checkpoint arrived, all drawn
    held.mkdir(parents=True)
    shutil.move(str(last.path), held / last.path.name)
    run_cpu_stages(s)
    generate(s, gifs=True)                      # also warms up: imports, font cache, first layouts

    shutil.move(str(held / last.path.name), last.path)
    cpu = run_cpu_stages(s)                     # the new checkpoint's series update (not timed)
    assert not cpu.failed, cpu.failed
    vis = work / "visualizations"
    before = CACHE / "visualize-before"         # the figures as they were when the checkpoint arrived
    shutil.rmtree(before, ignore_errors=True)
    shutil.copytree(vis, before)

    # each measurement `--repeat` times, interleaved (this machine is noisy); medians are printed
    inc, gif, png, full = [], [], [], []
    for _ in range(args.repeat):
        shutil.rmtree(vis)
        shutil.copytree(before, vis)
        t, r = timed(lambda: generate(s, gifs=False))
        inc.append((t, r))
        gif.append(timed(lambda: generate(s, gifs=True))[0])
        png.append(timed(lambda: generate(s, gifs=False, force=True)))
        full.append(timed(lambda: generate(s, gifs=True, force=True)))
        assert not full[-1][1]["failed"], full[-1][1]["failed"]
    med = statistics.median
    t_inc, t_gif = med(t for t, _ in inc), med(gif)
    t_png, t_full = med(t for t, _ in png), med(t for t, _ in full)
    drawn, r = inc[0][1]["drawn"], full[0][1]
    print(f"full set, warm ({len(archives)} checkpoints): {t_full:.1f}s for {len(r['drawn'])} files "
          f"({len(png[0][1]['drawn'])} PNGs alone: {t_png:.1f}s)  goal <= 30 s   [median of {args.repeat}]")
    new = [n for n in drawn if n in (f"radar_{last.step}.png", f"umap_{last.step}.png")]
    print(f"incremental, one new checkpoint: {t_inc:.2f}s for {len(drawn)} files ({', '.join(new)}, "
          f"{len(drawn) - len(new)} latest copies and run-level figures): {t_inc / t_full:.2f} of the full set  "
          f"goal <= 0.25   (each run: {', '.join(f'{t / f:.2f}' for (t, _), (f, _) in zip(inc, full))})")
    run_level = {name for _, name, *_ in _run_level(None)}
    t_own = med(sum(v for k, v in x["timings"].items() if k not in run_level) for _, x in inc)
    t_run = med(sum(v for k, v in x["timings"].items() if k in run_level) for _, x in inc)
    print(f"  of which the new checkpoint's own images: {t_own:.2f}s = {t_own / t_full:.3f} of the full set; "
          f"the {len(run_level & set(drawn))} run-level figures (each plots every checkpoint): {t_run:.2f}s "
          f"= {t_run / t_full:.2f}")
    print(f"  + both GIFs (learnviz visualize): {t_gif:.1f}s, together {(t_inc + t_gif) / t_full:.2f} of the full set")
    t_none, r = timed(lambda: generate(s, gifs=True))
    print(f"nothing new: {t_none:.2f}s ({r['current']} files current)")


if __name__ == "__main__":
    main()
