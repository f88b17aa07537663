"""One typed settings object for every part of learnviz.

Layers, each overriding the one before:
  1. defaults in this file (the `Settings` dataclass),
  2. one YAML file: `--config FILE`, else `$LEARNVIZ_CONFIG`, else `./config/learnviz.yaml`,
     else the `config/learnviz.yaml` shipped beside the package,
  3. `LEARNVIZ_<FIELD>` environment variables (values parsed as YAML scalars or flow lists),
  4. CLI flags.
An unknown key or a value of the wrong type is a `ConfigError` naming the key and where it came
from. Celery's and Flask's configurations are built from this object, never read on their own.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import site
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

ENV_PREFIX = "LEARNVIZ_"
CONFIG_ENV = "LEARNVIZ_CONFIG"
REPO_ROOT = Path(__file__).resolve().parent.parent


def shipped_config_dir() -> Path:
    """The shipped `config/` (probe set, hard examples, default settings): beside the package in a
    source checkout or an editable install; in a wheel install, the copy pip put under
    `<prefix>/share/learnviz/config` (pyproject's data-files)."""
    beside = REPO_ROOT / "config"
    if (beside / "probes.jsonl").is_file():
        return beside
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, site.getuserbase())):
        installed = Path(prefix) / "share" / "learnviz" / "config"
        if (installed / "probes.jsonl").is_file():
            return installed
    return beside


SHIPPED_CONFIG_DIR = shipped_config_dir()


def _f(default: Any, help: str) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Settings:
    # --- where things are ---
    checkpoints: str | None = _f(None, "Folder that holds the training run's "
                                       "checkpoints (checkpoint-N/, step_N/, ...).")
    archive: str | None = _f(None, "Folder for the HDF5 archives and learning_history.jsonl; "
                                   "default: <checkpoints>/learnviz-archive.")
    probes: str | None = _f(None, "Probe file (JSONL, JSON or YAML); default: the SYLLO probe set config/probes.jsonl.")
    hard_examples: str | None = _f(None, "Hard-example file (YAML); default: "
                                         "config/hard_examples.yaml. Its examples join the probe set.")
    tokenizer: str | None = _f(None, "Folder with the tokenizer files, for checkpoints saved without them (the "
                                     "Trainer saves them only when given a tokenizer); default: the run "
                                     "folder's or its parent's. A checkpoint's own files come first.")
    status_dir: str | None = _f(None, "Folder of the training's status files (training_status.json, "
                                      "curriculum_eval.json, model_comparisons.json, deployment_status.json), "
                                      "ingested into the history by `learnviz run`; docs/integrations.md.")
    base_model: str | None = _f(None, "Base model folder of PEFT adapter checkpoints (adapter_config.json and "
                                      "adapter weights); default: the local folder the adapter config names. "
                                      "Needs learnviz[peft].")

    # --- checkpoint discovery ---
    settle_seconds: float = _f(10.0, "A checkpoint whose files changed less than this many "
                                     "seconds ago is still being written and is skipped for now.")
    watch_folders: bool = _f(True, "A long-lived process (a worker, `learnviz run --watch`) has the kernel report "
                                   "which checkpoint folders and archives changed (Linux inotify; never on a "
                                   "network file system) and from its second scan on looks only at those, and at "
                                   "everything every 10 minutes; false: every scan stats every checkpoint's files.")

    # --- extraction (the GPU stage) ---
    layers: list[Union[int, str]] = _f(["mid", "last"], "Layers whose mean-pooled hidden states are kept: block "
                                                        "indices (0-based, negative from the end) or 'mid'/'last'.")
    batch_size: int = _f(64, "Probes per forward pass (batches are length-sorted).")
    max_length: int = _f(512, "Longest prompt+answer in tokens; longer prompts lose tokens from the left.")
    device: str = _f("auto", "'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto",
        "'auto' is bfloat16 on a GPU that supports it (else float16) and float32 on CPU.",
    )
    trust_remote_code: bool = _f(False, "Allow a checkpoint's own Python code to run when loading "
                                        "it. Off: only turn on for checkpoints you trust.")
    max_new_tokens: int = _f(32, "Cap on a greedy answer's length in tokens (each answer may "
                                 "also run to at most twice its expected length plus 4).")
    stop_strings: list[str] = _f(["\n"], "The greedy answer ends at an end-of-sequence token (the "
                                        "tokenizer's EOS, or one that config.json or "
                                        "generation_config.json lists) or at any of these strings.")
    answer_match: Literal["exact", "prefix"] = _f("exact", "'exact': the greedy answer must equal the expected "
                                                           "one; 'prefix': it must start with it (case, "
                                                           "surrounding space and a final period ignored).")
    entropy_chunk: int = _f(8, "Rows per chunk when the full-vocabulary softmax "
                               "is taken (bounds memory on large vocabularies).")

    # --- analyses (the CPU stages) ---
    calibration_bins: int = _f(15, "Equal-width confidence bins of the reliability "
                                   "diagram and ECE (15, as torchmetrics).")
    entropy_low: float = _f(0.3, "Mean answer entropy (nats) below which a wrong answer is flagged overconfident.")
    entropy_high: float = _f(2.0, "Mean answer entropy (nats) above which an answer is flagged uncertain.")
    learned_threshold: float = _f(0.5, "A token counts as learned from the checkpoint "
                                       "where its probability stays above this.")
    umap_method: Literal["procrustes", "independent"] = _f(
        "procrustes",
        "'procrustes': each layout starts from the previous one and is aligned "
        "to it, so frames compare; 'independent': a fresh UMAP per checkpoint.",
    )
    umap_neighbors: int = _f(15, "UMAP n_neighbors (also the neighbourhood of the trustworthiness score).")
    umap_min_dist: float = _f(0.1, "UMAP min_dist.")
    umap_seed: int = _f(0, "Seed of the UMAP layouts.")
    weight_exploding: float = _f(10.0, "A layer whose weight norm grew more than this factor "
                                       "since the first checkpoint is flagged exploding.")
    weight_vanishing: float = _f(0.1, "A layer whose weight norm shrank below this fraction "
                                      "of the first checkpoint's is flagged vanishing.")
    weight_dead: float = _f(1e-8, "A layer whose relative change since the previous "
                                  "checkpoint is below this is flagged dead (unchanged).")

    health_window: int = _f(5, "Health flags: how many of the last healthy checkpoints form the trailing window "
                               "a checkpoint is compared with.")
    health_z: float = _f(3.5, "Health flags: a checkpoint is flagged when a signal's robust z-score (median and "
                              "MAD of the trailing window) passes this, in its bad direction.")
    health_min_history: int = _f(3, "Health flags: a signal is judged once the trailing window holds this many "
                                    "checkpoints (the first checkpoints of a run are not judged).")
    health_floor: float = _f(0.02, "Health flags: the smallest spread (in the signals' units: accuracy, share of "
                                   "probes, ECE, RSA drift, relative loss change) a z-score divides by.")

    # --- dashboard ---
    dashboard_host: str = _f("127.0.0.1", "Address `learnviz serve` listens on: 127.0.0.1 is this "
                                          "machine only; 0.0.0.0 every interface (containers).")
    dashboard_port: int = _f(5000, "Port of `learnviz serve` (0: any free port).")
    dashboard_allowed_hosts: list[str] = _f([], "Host names the dashboard answers to besides localhost, "
                                                "127.0.0.1, ::1 and the address it listens on; a request "
                                                "for any other name gets 400 (a guard against DNS "
                                                "rebinding). Listening on 0.0.0.0 or ::, it also answers "
                                                "to every IP address and this machine's host name. '*': "
                                                "any name. `learnviz serve --allow-host NAME`.")

    # --- pipeline ---
    worker_name: str | None = _f(None, "Name recorded in each archive stage as the worker that ran it (with the "
                                       "pid); default: the host name. Celery workers set it to their node name.")
    retry_failed: bool = _f(False, "Re-run stages recorded as failed even when the checkpoint did not change.")

    # --- demo ---
    demo_out: str = _f("learnviz-demo", "Folder the demo writes its checkpoints and archives into.")
    demo_steps: int = _f(500, "Training steps of the demo model.")
    demo_checkpoints: int = _f(10, "Checkpoints the demo writes (spaced densely early, where learning is fastest).")
    demo_seed: int = _f(0, "Seed of the demo's data, weights and order.")

    # --- distributed ---
    # Read only by the Celery adapters (workers/, beat/, `learnviz worker|beat|submit`); the core ignores them.
    broker_url: str = _f("redis://localhost:6379/0", "Redis URL of the Celery broker, "
                                                     "redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS). Every "
                                                     "worker, the beat and `learnviz submit` use the same one.")
    result_backend: str | None = _f(None, "Redis URL where task results are kept for a day "
                                          "(Flower, debugging); default: the broker URL.")
    redis_password: str | None = _f(None, "Password put into the broker and result backend URLs that carry none, "
                                          "so it stays out of URLs and process lists: set LEARNVIZ_REDIS_PASSWORD.")
    queue_gpu: str = _f("gpu", "Queue of the GPU stage (collect_embeddings); "
                               "`learnviz worker --queue gpu` consumes it.")
    queue_cpu: str = _f("cpu", "Queue of the CPU stages (analyze, update_learning_history, "
                               "generate_visualizations) and of the periodic scan.")
    gpu_soft_time_limit: float = _f(1800.0, "Seconds after which an extraction is interrupted and "
                                            "recorded as failed in the archive (Celery soft time limit).")
    gpu_time_limit: float = _f(2100.0, "Seconds after which the process running an extraction "
                                       "is killed (hard limit, above the soft one); the Redis "
                                       "visibility timeout is set above the longest hard limit.")
    cpu_soft_time_limit: float = _f(3600.0, "Soft time limit of a CPU task (an analysis, a "
                                            "history update over the run, the visualizations).")
    cpu_time_limit: float = _f(3900.0, "Hard time limit of a CPU task (above the soft one).")
    task_max_retries: int = _f(5, "Retries of a task hit by a passing fault (broker or "
                                  "connection error, CUDA out of memory, a lost worker process); "
                                  "a broken checkpoint is recorded as failed and never retried.")
    retry_backoff: float = _f(10.0, "Seconds before the first retry; each further retry waits "
                                    "about twice as long (with jitter), up to retry_backoff_max.")
    retry_backoff_max: float = _f(600.0, "Longest wait between two retries, in seconds.")
    scan_interval: float = _f(30.0, "Seconds between two scans of the checkpoint folder (`learnviz beat`, "
                                    "`learnviz run --watch --interval S`): every complete checkpoint whose "
                                    "archive lacks a stage is enqueued (or, with --watch, archived).")
    visualize_delay: float = _f(60.0, "Seconds the visualizations wait after the learning history "
                                      "changed, so that a burst of checkpoints draws once.")
    enqueue_ttl: float = _f(21600.0, "Seconds a (checkpoint, stage) stays marked as queued when its task never "
                                     "reports back (killed by its hard limit, or its message lost with the "
                                     "mark kept); a scan enqueues it again then, or at once when its message "
                                     "is gone from Redis.")
    cpu_concurrency: int | None = _f(None, "Processes of `learnviz worker --queue cpu` (default: the "
                                           "number of CPU cores). The GPU worker always runs one.")

    # ------------------------------------------------------------------
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False,
                                    metadata={"internal": True})

    def archive_dir(self) -> Path:
        """The archive folder: the setting, else `<checkpoints>/learnviz-archive`."""
        if self.archive:
            return Path(self.archive)
        if self.checkpoints:
            return Path(self.checkpoints) / "learnviz-archive"
        raise ConfigError("no archive folder given", field="archive",
                          hint="pass --archive DIR or --checkpoints DIR, or set LEARNVIZ_ARCHIVE")

    def probes_path(self) -> Path:
        return Path(self.probes) if self.probes else SHIPPED_CONFIG_DIR / "probes.jsonl"

    def hard_examples_path(self) -> Path | None:
        if self.hard_examples == "":
            return None  # explicitly switched off
        return Path(self.hard_examples) if self.hard_examples else SHIPPED_CONFIG_DIR / "hard_examples.yaml"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in public_fields()}


def public_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("internal")]


_HINTS = typing.get_type_hints(Settings)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise TypeError. Ints pass as floats; nothing else converts."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is wanted: `layers: -1`
        if not isinstance(value, list):
            raise TypeError
        (item,) = typing.get_args(tp)
        return [_coerce(v, item) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-8` as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError
    raise TypeError


def _unknown(key: str, where: str, field_name: str | None = None) -> ConfigError:
    names = [f.name for f in public_fields()]
    close = difflib.get_close_matches(key.lower(), names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(names)}"
    return ConfigError(f"unknown setting '{key}'", path=where, field=field_name or key, hint=hint)


# the numeric settings' ranges: (lowest, whether it is allowed, highest or None, whether it is allowed).
# A value outside would fail far from its cause (a batch size of 0 fails every checkpoint's
# extraction, and each failure is recorded), so it is refused where it is read.
_RANGES: dict[str, tuple[float, bool, float | None, bool]] = {
    **{name: (1, True, None, False) for name in (
        "batch_size", "max_length", "max_new_tokens", "entropy_chunk", "calibration_bins", "health_window",
        "health_min_history", "demo_steps", "demo_checkpoints", "cpu_concurrency")},
    **{name: (0, True, None, False) for name in (
        "settle_seconds", "umap_min_dist", "entropy_low", "entropy_high", "health_floor", "weight_dead",
        "task_max_retries", "retry_backoff", "retry_backoff_max", "visualize_delay")},
    **{name: (0, False, None, False) for name in (
        "health_z", "scan_interval", "enqueue_ttl", "gpu_soft_time_limit", "gpu_time_limit",
        "cpu_soft_time_limit", "cpu_time_limit", "weight_exploding")},
    "umap_neighbors": (2, True, None, False),
    "learned_threshold": (0, False, 1, False),
    "weight_vanishing": (0, False, 1, False),
    "dashboard_port": (0, True, 65535, True),
}


def _out_of_range(key: str, value: Any) -> str | None:
    """Why `value` is outside `key`'s range (_RANGES), or None."""
    bounds = _RANGES.get(key)
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, low_in, high, high_in = bounds
    above = value >= low if low_in else value > low
    below = high is None or (value <= high if high_in else value < high)
    if above and below:
        return None
    want = f"at least {low:g}" if low_in else f"above {low:g}"
    if high is not None:
        want = f"{'from' if low_in else 'between'} {low:g} {'to' if high_in else 'and'} {high:g}" + (
            "" if high_in else " (both excluded)" if not low_in else " (excluded)")
    return f"must be {want}, got {value!r}"


def _apply(settings: Settings, key: str, value: Any, where: str, *, env_name: str | None = None) -> None:
    names = {f.name for f in public_fields()}
    if key not in names:
        raise _unknown(key if env_name is None else env_name, where, env_name)
    tp = _HINTS[key]
    try:
        coerced = _coerce(value, tp)
    except TypeError:
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", path=where,
                          field=env_name or key) from None
    problem = _out_of_range(key, coerced)
    if problem:
        raise ConfigError(problem, path=where, field=env_name or key)
    setattr(settings, key, coerced)
    settings.sources[key] = where


def find_config_file(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError("settings file not found", path=path, hint="check the --config path")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError("settings file not found", path=path, field=CONFIG_ENV)
        return path
    for candidate in (Path.cwd() / "config" / "learnviz.yaml", SHIPPED_CONFIG_DIR / "learnviz.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: str | os.PathLike | None = None,
                  overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None, *, flag_names: dict[str, str] | None = None) -> Settings:
    """Build the settings: defaults, then the YAML file, then LEARNVIZ_* variables, then `overrides`.

    `overrides` come from CLI flags; keys whose value is None are left alone (flag not given).
    `flag_names`: the flag of a setting whose flag is not `--<setting-name>` (errors name it).
    """
    settings = Settings()
    path = find_config_file(config_file)
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (byte {exc.start}): save it as UTF-8", path=path) from None
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc.strerror or exc}", path=path) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path,
                              line=mark.line + 1 if mark else None) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping of setting: value", path=path)
        for key, value in data.items():
            _apply(settings, str(key), value, str(path))

    env = os.environ if environ is None else environ
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX):].lower()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if _HINTS.get(key) in (str, str | None) and not isinstance(value, str) and value is not None:
            value = raw  # LEARNVIZ_ARCHIVE=2024 is a folder name, not a number
        _apply(settings, key, value, "environment", env_name=name)

    for key, value in (overrides or {}).items():
        if value is not None:
            _apply(settings, key, value, "command line",
                   env_name=(flag_names or {}).get(key, f"--{key.replace('_', '-')}"))
    return settings


def defaults_yaml() -> str:
    """The text of config/learnviz.yaml: every setting with its default and what it does."""
    lines = ["# learnviz settings. Every key, with its default. Override per run with",
             "# LEARNVIZ_<KEY> environment variables or CLI flags; unknown keys are errors.", ""]
    defaults = Settings()
    for f in public_fields():
        lines.append(f"# {f.metadata['help']}")
        lines.append(f"{f.name}: {json.dumps(getattr(defaults, f.name))}")  # JSON is valid YAML
        lines.append("")
    return "\n".join(lines)
