"""Visualization speed on the demo series (525 probes, 10 checkpoints, every stage archived).

Prints, in one warm process (matplotlib imported and one full draw done before timing):
  - the full set: every PNG (radars, UMAP frames, run-level figures, latest copies) and both
    GIFs, drawn from scratch (goal <= 30 s), and the PNGs alone;
  - incremental after one new checkpoint: the series holds the first 9 checkpoints, all drawn;
    the 10th arrives (its archive and the CPU stages, not timed); then what `learnviz run` draws
    (gifs=False), and the GIFs that `learnviz visualize` adds on top (goal: <= 1/4 of the full set).

    python bench/visualize.py                    # builds the demo archive once in .bench-cache/
    python bench/visualize.py --archive DIR      # or copies a complete demo archive (read only)
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo import CACHE, extracted_archive  # noqa: E402


def complete_archive() -> tuple[Path, object]:
    """The demo series with every stage (extract, analysis, geometry, series), cached."""
    from learnviz.analyze import run_cpu_stages
    folder, settings = extracted_archive("archive-visualize", hard_examples=True)
    report = run_cpu_stages(settings)
    assert not report.failed, report.failed
    return folder, settings


def timed(fn) -> tuple[float, dict]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", help="a complete demo archive folder to copy (default: build one)")
    args = parser.parse_args()
    from learnviz import archive as arc
    from learnviz.analyze import run_cpu_stages, series
    from learnviz.settings import load_settings
    from learnviz.visualize import generate

    if args.archive:
        source = Path(args.archive)
        settings = load_settings(environ={}, overrides={"archive": str(source)})
    else:
        source, settings = complete_archive()
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
    t_inc, r = timed(lambda: generate(s, gifs=False))
    drawn = r["drawn"]
    t_gif, _ = timed(lambda: generate(s, gifs=True))

    t_png, r = timed(lambda: generate(s, gifs=False, force=True))
    n_png = len(r["drawn"])
    t_full, r = timed(lambda: generate(s, gifs=True, force=True))
    assert not r["failed"], r["failed"]
    print(f"full set, warm ({len(archives)} checkpoints): {t_full:.1f}s for {len(r['drawn'])} files "
          f"({n_png} PNGs alone: {t_png:.1f}s)  goal <= 30 s")
    new = [n for n in drawn if n in (f"radar_{last.step}.png", f"umap_{last.step}.png")]
    print(f"incremental, one new checkpoint: {t_inc:.1f}s for {len(drawn)} files ({', '.join(new)}, "
          f"{len(drawn) - len(new)} latest copies and run-level figures): {t_inc / t_full:.2f} of the full set  "
          f"goal <= 0.25")
    print(f"  + both GIFs (learnviz visualize): {t_gif:.1f}s, together {(t_inc + t_gif) / t_full:.2f} of the full set")
    t_none, r = timed(lambda: generate(s, gifs=True))
    print(f"nothing new: {t_none:.2f}s ({r['current']} files current)")


if __name__ == "__main__":
    main()
