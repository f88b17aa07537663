"""`learnviz demo`: registered through the `learnviz.commands` entry point, as the adapters'
commands are, so that the core's CLI never imports the demo."""

from __future__ import annotations

import time

from ..flags import FORMATTER, examples, settings_from


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a tiny model, archive its checkpoints, show the results",
                       description="Train a tiny GPT-2-style model on the SYLLO syllogism task (about a minute on "
                                   "2 CPU cores), write its checkpoints in the Hugging Face Trainer layout, run the "
                                   "whole pipeline over them and show the results. No Redis, no GPU, no downloads.",
                       epilog=examples("learnviz demo",
                                       "learnviz demo --out /tmp/lv-demo --no-serve"),
                       formatter_class=FORMATTER)
    p.add_argument("--out", dest="demo_out", metavar="DIR",
                   help="output folder (default: ./learnviz-demo); its checkpoints/ is trained into, and refused when "
                        "it holds anything an earlier demo did not write")
    p.add_argument("--steps", dest="demo_steps", type=int, metavar="N", help="training steps (default: 500)")
    p.add_argument("--checkpoints-count", dest="demo_checkpoints", type=int, metavar="N",
                   help="checkpoints to write (default: 10)")
    p.add_argument("--seed", dest="demo_seed", type=int, metavar="N", help="seed of the data, weights and order "
                                                                         "(default: 0)")
    p.add_argument("--retrain", action="store_true", help="train again even if the checkpoints exist")
    p.add_argument("--no-serve", action="store_true", help="stop after the archives instead of serving the dashboard")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args) -> int:
    from .run import run_demo
    settings = settings_from(args)
    t0 = time.time()
    run_demo(settings, retrain=args.retrain, serve=not args.no_serve, progress=not args.quiet)
    print(f"demo finished in {time.time() - t0:.0f}s")
    return 0
