"""LearnvizCallback: learnviz inside a transformers `Trainer` (docs/integrations.md).

    from learnviz.integrations.hf import LearnvizCallback
    trainer = Trainer(model, args, train_dataset=data,
                      callbacks=[LearnvizCallback(tokenizer="tokenizer/", embedded=True)])

It acts in the main process only (`state.is_world_process_zero`):
  on_log   appends the Trainer's metrics (loss as `train_loss`, learning_rate, grad_norm, eval_*)
           to the run's learning_history.jsonl, one row per logged step;
  on_save  hands the new checkpoint on without blocking the training:
           - embedded=True: to a separate process (device: CPU unless asked) that runs it through
             every stage. The checkpoint's files are first kept as hard links under
             <archive>/.keep/ (no data copied), so that `save_total_limit` may rotate the folder
             away while it waits: its archive is made all the same, then the links go;
           - else, with a broker configured (`broker=URL`, or broker_url in the settings file or
             LEARNVIZ_BROKER_URL): `learnviz submit` in the background, to the Celery queue;
           - else: nothing; `learnviz run --watch` or the next `learnviz run` picks it up.
  on_step_end  with `source_column`: appends to <output_dir>/data_log.jsonl how many examples of
           each data source the step trained on (learnviz.datalog; what data impact reads). The
           sources are counted by `callback.collator()`, which the Trainer must be given as its
           data collator: it takes the column out of each example, counts it, and hands the rest
           to the collator it wraps. Give the Trainer `remove_unused_columns=False` (else it drops
           the column first) and keep `dataloader_num_workers=0` (a worker process's counts do
           not reach the callback). Batches are counted as they are fetched (accelerate fetches one
           ahead) and each step takes the oldest `gradient_accumulation_steps` of them, so a row
           holds the batches that step trained on; only the main process's are counted.
  on_train_end  waits for the embedded process to finish the checkpoints handed to it.

The run is the Trainer's output_dir; its archive folder is <output_dir>/learnviz-archive unless
`archive=` says otherwise. Keyword arguments beyond those below are settings (learnviz.settings),
e.g. probes=, hard_examples=, layers=.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .. import datalog, history
from ..archive import now_iso
from ..settings import Settings, load_settings

KEEP_DIR = ".keep"   # under the archive folder: hard-linked copies of the checkpoints handed on
SUMMARY_KEY = "train_runtime"   # the Trainer's end-of-training summary log, not a step's metrics


class LearnvizCallback(TrainerCallback):
    """See the module docstring. `tokenizer`: the tokenizer folder for checkpoints saved without
    one (a Trainer given no tokenizer saves none); `embedded`: archive each checkpoint in a separate
    process on `device` (default "cpu": never the training GPU unless asked); `broker`: the Redis
    URL to submit checkpoints to instead; `config`: a settings file."""

    def __init__(self, *, tokenizer: str | os.PathLike | None = None, embedded: bool = False, device: str = "cpu",
                 archive: str | os.PathLike | None = None, broker: str | None = None,
                 config: str | os.PathLike | None = None, source_column: str | None = None, **settings: Any):
        self.embedded, self.broker, self.config = embedded, broker, config
        self.source_column = source_column
        self._batches: deque[Counter[str]] = deque()   # sources of each fetched batch, oldest first
        self.overrides = {"tokenizer": tokenizer, "device": device, "archive": archive,
                          "broker_url": broker, **settings}
        self.settings: Settings | None = None
        self._queue = None
        self._process = None
        self._submitted: list[subprocess.Popen] = []

    # ------------------------------------------------------------ the Trainer's events

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._setup(args)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or SUMMARY_KEY in logs:
            return
        row = training_row(state.global_step, logs)
        if row:
            history.append(self._setup(args).archive_dir(), row)

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self._batches:
            return
        counts: Counter[str] = Counter()
        for _ in range(min(max(1, args.gradient_accumulation_steps), len(self._batches))):
            counts.update(self._batches.popleft())
        datalog.append(args.output_dir, state.global_step, dict(counts))

    def collator(self, inner=None):
        """The Trainer's data collator when `source_column` is set: counts each example's source
        (the column's value, as text), drops the column and calls `inner` (default: transformers'
        default_data_collator) on the rest. ValueError naming the column when an example lacks it."""
        if not self.source_column:
            raise ValueError("LearnvizCallback.collator(): set source_column= to the column that names each "
                             "example's data source")
        if inner is None:
            from transformers import default_data_collator as inner
        column = self.source_column

        def collate(features):
            rest, batch = [], Counter()
            for i, f in enumerate(features):
                if column not in f:
                    raise ValueError(f"LearnvizCallback: example {i} of a batch has no {column!r} column "
                                     f"(its columns: {', '.join(map(str, f))}); with the Trainer, set "
                                     f"remove_unused_columns=False")
                f = dict(f)
                batch[str(f.pop(column))] += 1
                rest.append(f)
            self._batches.append(batch)
            return inner(rest)

        return collate

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        settings = self._setup(args)
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        if self.embedded:
            kept = keep(checkpoint, settings.archive_dir() / KEEP_DIR)
            self._start_process()
            self._queue.put((str(checkpoint), str(kept)))
        elif self._broker_configured(settings):
            self._submitted = [p for p in self._submitted if p.poll() is None]
            self._submitted.append(subprocess.Popen(
                [sys.executable, "-m", "learnviz.cli", "submit", str(checkpoint), "--checkpoints",
                 str(settings.checkpoints), "--archive", str(settings.archive_dir()), "--broker", settings.broker_url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.wait()

    # ------------------------------------------------------------ the rest

    def wait(self) -> int:
        """Let the embedded process finish what it was handed, and end it. Its exit code (0: none ran)."""
        if self._process is None:
            return 0
        self._queue.put(None)
        self._process.join()
        code = self._process.exitcode or 0
        self._process = self._queue = None
        return code

    def _setup(self, args) -> Settings:
        if self.settings is None:
            self.settings = load_settings(self.config, {**self.overrides, "checkpoints": str(args.output_dir)})
        return self.settings

    def _broker_configured(self, settings: Settings) -> bool:
        return bool(self.broker) or "broker_url" in settings.sources

    def _start_process(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        ctx = multiprocessing.get_context("spawn")   # a fresh interpreter: no copy of the training's CUDA state
        self._queue = ctx.Queue()
        self._process = ctx.Process(target=embedded_main, args=(self.settings, self._queue),
                                    name="learnviz-embedded", daemon=False)
        self._process.start()


def training_row(step: int, logs: dict) -> dict | None:
    """A history row of one Trainer log: its numbers (`loss` as `train_loss`, as learnviz reads
    trainer_state.json), at the Trainer's global step. None when it holds no number."""
    row: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        row["train_loss" if key == "loss" else key] = float(value)
    if not row:
        return None
    return {"step": int(step), "timestamp": now_iso(), "source": "trainer", **row}


def keep(checkpoint: Path, keep_dir: Path) -> Path:
    """A copy of the checkpoint's files under `keep_dir`, made of hard links (no data copied; a
    plain copy where the file system has none), which outlives the checkpoint's rotation."""
    target = keep_dir / checkpoint.name
    if target.exists():
        shutil.rmtree(target)
    keep_dir.mkdir(parents=True, exist_ok=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(checkpoint, target, copy_function=link)
    return target


def embedded_main(settings: Settings, queue) -> None:
    """The embedded process: each (checkpoint, kept copy) through every stage, until None."""
    from .. import pipeline

    while True:
        item = queue.get()
        if item is None:
            return
        checkpoint, kept = item
        try:
            result, _ = pipeline.archive_checkpoint(settings, checkpoint, source=kept)
            if result.status not in ("ok", "current"):
                print(f"learnviz: {checkpoint}: extraction {result.status}: {result.reason}", file=sys.stderr)
        except Exception as exc:   # one checkpoint must not end the process: the next may do
            print(f"learnviz: {checkpoint}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            shutil.rmtree(kept, ignore_errors=True)


__all__ = ["KEEP_DIR", "LearnvizCallback", "embedded_main", "keep", "training_row"]
