"""Finding checkpoints under a root, telling complete from incomplete, and fingerprinting them.

A checkpoint is a folder whose name says its step (STEP_PATTERNS: `checkpoint-N`, `step_N`, `stepN`,
`iter_N`, `epoch=E-step=N`, ...), or any folder with a config.json and weights. Its step comes from
the name, else from trainer_state.json's `global_step`; a folder with neither is reported, not
guessed. Its state is one of:
  complete    every file is there, settled, and each safetensors file is as long as its header says
              (or each pytorch_model.bin is a whole torch zip file)
  incomplete  files missing or still changing (younger than `settle_seconds`): skipped for now,
              picked up by a later scan
  broken      settled but unreadable (a truncated or corrupt safetensors file, a bad config.json):
              recorded as failed with the reason, so the others go on
  gone        deleted while it was looked at (a Trainer's `save_total_limit` rotation): neither
              archived nor failed

Nothing here trusts a file's own claims about its size: a safetensors header length is checked
against the file before anything is read or allocated, and `fingerprint` never raises (a broken
checkpoint still needs a key, so that its failure is recorded once and retried when it changes).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import re
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# Folder names that say their step, each with one number that can be nothing else (zero-padded or
# not). Any other name takes its step from trainer_state.json, or is reported with none: a name
# such as `final`, `best`, `latest`, `run3_1000` or `epoch3` is never read for a step.
STEP_PATTERNS = (
    re.compile(r"^checkpoint-(\d+)$"),            # the HF Trainer
    re.compile(r"^step[_-]?(\d+)$"),              # step_N, step-N; stepN: Pythia's revisions, OLMo
    re.compile(r"^step(\d+)-unsharded$"),         # OLMo's unsharded checkpoint beside its sharded stepN
    re.compile(r"^global_step(\d+)$"),            # DeepSpeed
    re.compile(r"^iter_(\d+)$"),                  # Megatron-LM (iter_0001000)
    re.compile(r"^(?:epoch=\d+-)?step=(\d+)$"),   # PyTorch Lightning's default name (epoch=3-step=1200)
)
# STEP_PATTERNS as the messages name them.
STEP_NAMES = ("checkpoint-N, step_N, step-N, stepN, stepN-unsharded, global_stepN, iter_N, epoch=E-step=N "
              "or step=N")
# The largest step learnviz archives: 2**53 - 1, the largest whole number that JSON readers
# (JavaScript: the dashboard's charts and its API's callers) hold exactly; an archive keeps it as
# int64. A larger "step" is no training step (a timestamp, a hash's digits).
MAX_STEP = 2**53 - 1
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")   # read with torch.load(weights_only=True)
SAMPLE_BLOCKS = 16       # data blocks hashed into the fingerprint per weight file
SAMPLE_BLOCK_SIZE = 4096
MAX_HEADER_BYTES = 100_000_000   # the safetensors format's own limit on a header
# The files a tokenizer loads from (AutoTokenizer); any of them changing changes the token ids.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt")


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: str = "complete"          # complete | incomplete | broken | gone
    reason: str = ""                 # why incomplete or broken
    weight_files: list[Path] = field(default_factory=list)
    # where the files are read from when not at `path`: a kept copy (hard links) of a checkpoint
    # that the Trainer may rotate away before it is archived (learnviz.integrations.hf)
    source: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def files(self) -> Path:
        """The folder its files are read from: `source`, else `path`."""
        return self.source or self.path

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def step_from_name(name: str) -> int | None:
    digits = name[11:] if name.startswith("checkpoint-") else ""
    if digits.isascii() and digits.isdigit():   # the HF Trainer's name, without the patterns: a scan
        return int(digits)                       # of a long run asks it of every checkpoint
    for pattern in STEP_PATTERNS:
        m = pattern.match(name)
        if m:
            return int(m.group(1))
    return None


def read_trainer_state(path: Path) -> dict | None:
    """trainer_state.json as a dict, or None when absent or unreadable (it is optional)."""
    f = path / "trainer_state.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


ADAPTER_CONFIG = "adapter_config.json"     # a PEFT (LoRA, ...) adapter checkpoint: weights to put on a base model
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _looks_like_checkpoint(path: Path) -> bool:
    return _looks_like(str(path))


def _looks_like(path: str) -> bool:
    return (step_from_name(os.path.basename(path)) is not None or os.path.exists(os.path.join(path, "config.json"))
            or os.path.exists(os.path.join(path, ADAPTER_CONFIG)))


def is_adapter(path: Path) -> bool:
    """True when the folder is a PEFT adapter checkpoint (adapter_config.json, adapter weights)."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def adapter_base(path: Path, base_model: str | Path | None = None) -> Path | None:
    """The base model folder of an adapter checkpoint: `base_model` (--base-model) when given, else
    the adapter config's base_model_name_or_path when it is a local folder; None otherwise."""
    if base_model:
        return Path(base_model)
    try:
        name = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(name) if isinstance(name, str) and name and Path(name).is_dir() else None


def _visible_dirs(folder: Path, excluded: set[Path] = frozenset()) -> list[Path]:
    """The sub-folders of `folder` that are not in-flight writes ('.' or 'tmp' names) nor excluded,
    sorted; a folder that vanishes while it is listed has none (`_visible_dir_paths`)."""
    return [folder / os.path.basename(p) for p in _visible_dir_paths(str(folder), {str(p) for p in excluded})]


def _visible_dir_paths(folder: str, excluded_names: set[str] = frozenset()) -> list[str]:
    """`_visible_dirs` as path strings. The listing's own file types say which entries are folders
    (no stat each), and only a symbolic link is resolved to be compared with `excluded_names` (a
    run of 500 checkpoints is listed at every scan, in a worker every few seconds)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith((".", "tmp"))), key=lambda e: e.name)
    except OSError:
        return []
    real = os.path.realpath(folder) if excluded_names else ""
    out = []
    for e in entries:
        try:
            if not e.is_dir():
                continue
            if excluded_names:
                where = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
                if where in excluded_names:
                    continue
        except OSError:
            continue
        out.append(e.path)
    return out


@dataclass
class Run:
    """One training run: a folder that holds checkpoints directly. `name` is "" for a root that is
    itself the run (its archives go straight into the archive folder), else the folder's name (its
    archives go into `<archive>/<name>/`)."""
    name: str
    path: Path


def find_runs(root: str | Path, *, exclude: list[Path] | None = None) -> list[Run]:
    """The runs under `root`: the root itself when it holds a checkpoint directly (or is one), and
    each sub-folder that holds checkpoints directly (root/<run>/checkpoint-N). Runs are never merged:
    each gets its own archive folder, history and series. A root with no checkpoint yet (a training
    that has not saved) is one run, the root itself. Sorted by name, the root first."""
    root = Path(root)
    excluded = {p.resolve() for p in (exclude or [])}
    runs = []
    children = _visible_dirs(root, excluded)
    if (root / "config.json").exists() or any(_looks_like_checkpoint(c) for c in children):
        runs.append(Run("", root))
    for child in children:
        if not _looks_like_checkpoint(child) and any(_looks_like_checkpoint(g) for g in _visible_dirs(child)):
            runs.append(Run(child.name, child))
    return runs or [Run("", root)]


def deeper_roots(root: str | Path, *, most: int = 5) -> list[Path]:
    """Folders below `root` that hold runs, for a root in which `find_runs` finds no checkpoint: the
    sub-folders whose own sub-folders hold checkpoints (root/<group>/<run>/checkpoint-N, a sweep
    grouped once more), at most `most`, sorted. Each is a root to pass instead."""
    found = []
    for child in _visible_dirs(Path(root)):
        if len(found) >= most:
            break
        if any(not _looks_like_checkpoint(g) and any(_looks_like_checkpoint(c) for c in _visible_dirs(g))
               for g in _visible_dirs(child)):
            found.append(child)
    return found


def discover(root: str | Path, *, settle_seconds: float = 10.0, exclude: list[Path] | None = None,
             now: float | None = None, nested: bool = True) -> list[Checkpoint]:
    """Every checkpoint under `root` (searched two levels deep; `nested=False`: one level, the
    checkpoints of one run), sorted by step.

    Folders whose name starts with '.' or 'tmp' are in-flight writes (the HF Trainer and the demo
    write into a temporary folder, then rename) and are ignored.
    """
    found: list[Checkpoint] = []
    for path in candidates(root, exclude=exclude, nested=nested):
        ck = inspect(path, settle_seconds=settle_seconds, now=now)
        if ck.state == "gone":
            continue   # deleted while it was looked at (a Trainer's save_total_limit rotation)
        found.append(ck)
    found.sort(key=lambda c: (c.step, str(c.path)))
    return found


def candidates(root: str | Path, *, exclude: list[Path] | None = None, nested: bool = True) -> list[Path]:
    """The folders under `root` that `discover` looks at (the root itself when it holds a
    config.json), in listing order. Raises CheckpointError when `root` is not a folder."""
    return [Path(p) for p in candidate_paths(root, exclude=exclude, nested=nested)]


def candidate_paths(root: str | Path, *, exclude: list[Path] | None = None, nested: bool = True) -> list[str]:
    """`candidates` as path strings (a scan of a long run makes no Path of a checkpoint it knows)."""
    root = Path(root)
    if not root.is_dir():
        from .errors import CheckpointError
        raise CheckpointError("checkpoint folder not found", path=root, field="checkpoints")
    excluded = {str(p.resolve()) for p in (exclude or [])}
    top = str(root)
    found = [top] if os.path.exists(os.path.join(top, "config.json")) else []
    for child in _visible_dir_paths(top, excluded):
        if _looks_like(child):
            found.append(child)
        elif nested:  # one level down: runs/<name>/checkpoint-N
            found.extend(g for g in _visible_dir_paths(child) if _looks_like(g))
    return found


def inspect(path: str | Path, *, settle_seconds: float = 10.0, now: float | None = None) -> Checkpoint:
    """Classify one folder as complete, incomplete or broken (see the module docstring)."""
    path = Path(path)
    now = time.time() if now is None else now
    step = step_from_name(path.name)
    if step is None:     # trainer_state.json grows with the run (its log history): read only when needed
        state = read_trainer_state(path)
        if state and isinstance(state.get("global_step"), int):
            step = state["global_step"]
    ck = Checkpoint(path=path, step=step if step is not None else -1)
    try:
        return _classify(ck, settle_seconds, now)
    except FileNotFoundError:   # deleted while it was looked at
        if path.exists():
            raise
        return _mark(ck, "gone", "the checkpoint folder was deleted (rotated away by save_total_limit?)")


def _classify(ck: Checkpoint, settle_seconds: float, now: float) -> Checkpoint:
    path = ck.path
    if not path.is_dir():
        raise FileNotFoundError(path)
    config = ADAPTER_CONFIG if is_adapter(path) else "config.json"
    if not (path / config).exists():
        return _mark(ck, "incomplete", "config.json is missing" + _other_format(path))
    weights = weight_files(path)
    if weights is None:
        return _mark(ck, "incomplete", "model.safetensors is missing (and there is no pytorch_model.bin)"
                     + (_zero_shards_only(path) or _other_weights_only(path)))
    missing = [w.name for w in weights if not w.exists()]
    if missing:
        return _mark(ck, "incomplete", f"weight shard {missing[0]} is missing")
    ck.weight_files = weights
    files = [p for p in path.iterdir() if p.is_file()]
    newest = max(p.stat().st_mtime for p in files)
    settled = now - newest >= settle_seconds
    if not settled:
        return _mark(ck, "incomplete", f"files changed {now - newest:.1f}s ago (settle time {settle_seconds}s)")
    try:
        parsed = json.loads((path / config).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # UnicodeDecodeError is a ValueError
        return _mark(ck, "broken", f"{config} is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        return _mark(ck, "broken", f"{config} is not a JSON object (it holds a {type(parsed).__name__})")
    for w in weights:
        problem = torch_file_problem(w) if w.name.endswith(".bin") else safetensors_problem(w)
        if problem:
            return _mark(ck, "broken", problem)
    if ck.step < 0:
        return _mark(ck, "broken", f"{NO_STEP}: the folder name has none and {_no_step(path)}")
    return ck


# What a folder named after its step holds instead of a Hugging Face save, when another trainer
# wrote it: (test on an entry's name, what it is). learnviz reads none of them.
_OTHER_FORMATS = (
    (lambda n: n.startswith("mp_rank_"), "Megatron-LM's own model-parallel checkpoint"),
    (lambda n: n.endswith(".distcp") or n == "model_and_optim", "OLMo's sharded torch.distributed checkpoint"),
    (lambda n: n == "model.pt", "a PyTorch state dict (OLMo's unsharded format)"),
)


def _other_format(path: Path) -> str:
    """Why a folder named after its step has no config.json, when it says, or "": its Hugging Face
    files lie in a sub-folder, or it holds another trainer's own format (_OTHER_FORMATS)."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return ""
    for e in entries:
        if e.is_dir() and os.path.isfile(os.path.join(e.path, "config.json")):
            return (f": the Hugging Face files are in {e.name}/; move them into the folder itself (a checkpoint is a "
                    f"folder named after its step holding config.json and the weights)")
    for e in entries:
        for test, what in _OTHER_FORMATS:
            if test(e.name):
                return (f": the folder holds {what} ({e.name}{'/' if e.is_dir() else ''}), which learnviz does not "
                        f"read; convert it to a Hugging Face save (config.json, model.safetensors) into the folder "
                        f"itself")
    return ""


def _zero_shards_only(path: Path) -> str:
    """Why a DeepSpeed checkpoint has no weights, or "": under ZeRO-3 the Trainer saves only the
    engine's shards (global_stepN/) unless told to gather the weights, so they never come."""
    shards = sorted(p.name for p in path.glob("global_step*") if p.is_dir())
    if not shards:
        return ""
    return (f": the folder holds only DeepSpeed's ZeRO shards ({shards[-1]}/), which learnviz does not read; run "
            f"the zero_to_fp32.py saved beside them to write the weights into the folder, or train with "
            f"stage3_gather_16bit_weights_on_model_save: true")


# Weights in a form learnviz does not read, that a checkpoint may hold instead of PyTorch's: (glob, what
# it is, how to get model.safetensors from it).
_OTHER_WEIGHTS = (
    ("pytorch_model_fsdp_*", "PyTorch FSDP's sharded state dict",
     "run `accelerate merge-weights {name} OUT` and copy OUT's model.safetensors into the folder, or train with "
     "fsdp_state_dict_type: FULL_STATE_DICT"),
    ("tf_model*.h5", "TensorFlow weights",
     "convert them where transformers 4 is installed (transformers 5 reads them no more): "
     "AutoModelForCausalLM.from_pretrained(DIR, from_tf=True).save_pretrained(DIR)"),
    ("flax_model*.msgpack", "Flax weights",
     "convert them where transformers 4 is installed (transformers 5 reads them no more): "
     "AutoModelForCausalLM.from_pretrained(DIR, from_flax=True).save_pretrained(DIR)"),
)


def _other_weights_only(path: Path) -> str:
    """Why a checkpoint without PyTorch weights has other weights that learnviz does not read, or ""."""
    for pattern, what, fix in _OTHER_WEIGHTS:
        found = sorted(p.name for p in path.glob(pattern))
        if found:
            return (f": the folder holds only {what} ({found[0]}{'/' if (path / found[0]).is_dir() else ''}), which "
                    f"learnviz does not read; {fix.format(name=found[0])}")
    return ""


NO_STEP = "no step"      # the reason's start for a folder without a step (learnviz.collect: not archived)


def _no_step(path: Path) -> str:
    """Why trainer_state.json gave no step."""
    f = path / "trainer_state.json"
    if not f.exists():
        return "there is no trainer_state.json"
    try:
        state = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:      # UnicodeDecodeError is a ValueError
        return f"trainer_state.json cannot be read as JSON ({exc})"
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json has no global_step"
    return f"trainer_state.json's global_step is {state['global_step']!r}, not a whole number"


def _mark(ck: Checkpoint, state: str, reason: str) -> Checkpoint:
    ck.state, ck.reason = state, reason
    return ck


def weight_files(path: Path) -> list[Path] | None:
    """The weight files of a checkpoint folder: safetensors when there are any, else torch's
    pytorch_model.bin (loaded with torch.load(weights_only=True) only); an adapter checkpoint's
    adapter weights; None when none of them."""
    if is_adapter(path):
        found = [path / n for n in ADAPTER_WEIGHTS if (path / n).exists()]
        return found[:1] or None
    for single, index_name in zip(WEIGHT_NAMES[::2] + PICKLE_WEIGHTS[::2], WEIGHT_NAMES[1::2] + PICKLE_WEIGHTS[1::2]):
        if (path / single).exists():
            return [path / single]
        index = path / index_name
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
                return [path / s for s in shards]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [index]  # unreadable index: safetensors_problem reports it
    return None


def is_pickle_weights(path: Path) -> bool:
    """True when the checkpoint's weights are torch files (pytorch_model.bin), not safetensors."""
    files = weight_files(path) or []
    return bool(files) and all(f.name.endswith(".bin") for f in files)


def torch_file_problem(path: Path) -> str | None:
    """Why a pytorch_model.bin cannot be loaded with torch.load(weights_only=True), or None. Reads
    the zip directory only: the legacy (pre-zip) pickle format and truncated files are refused."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return f"{path.name} is a zip file but not a torch save (no data.pkl)"
    except (OSError, zipfile.BadZipFile) as exc:
        return (f"{path.name} is not a torch zip file ({exc}): truncated, or torch's legacy pickle format, which "
                f"learnviz does not load (it loads torch files with torch.load(weights_only=True) only)")
    return None


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header dict, header length). Raises ValueError when the header cannot be read."""
    with open(path, "rb") as fh:
        n = _header_length(fh)
        blob = fh.read(n)
    try:
        header = json.loads(blob)
    except ValueError as exc:   # UnicodeDecodeError included
        raise ValueError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"header is a JSON {type(header).__name__}, not an object")
    return header, n


def _header_length(fh) -> int:
    """The header length of a safetensors file open at its start, checked against the file's size.

    A crashed save or an overwritten file can hold any 8 bytes there: reading as many bytes as
    they say would allocate gigabytes (MemoryError) instead of reporting the file. ValueError.
    """
    size = os.fstat(fh.fileno()).st_size
    raw = fh.read(8)
    if len(raw) < 8:
        raise ValueError(f"the file has {size} bytes, fewer than the 8-byte header length (a crashed save?)")
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"header length {n} is implausible (the file's first 8 bytes are not a length)")
    if 8 + n > size:
        raise ValueError(f"header length {n} runs past the end of the file ({size} bytes)")
    return n


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be loaded, or None. Reads the header only."""
    if path.name.endswith(".json"):
        return f"{path.name} cannot be read as a shard index"
    try:
        header, n = read_safetensors_header(path)
    except (OSError, ValueError) as exc:
        return f"{path.name}: unreadable safetensors header: {exc}"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return f"{path.name}: tensor {name} has no valid data_offsets"
    expected = 8 + n + end
    actual = path.stat().st_size
    if actual < expected:
        return f"{path.name} is truncated: its header says {expected} bytes, the file has {actual}"
    if actual > expected:      # safetensors refuses it too ("file not fully covered"), naming no file
        return (f"{path.name} is longer than its header says: {expected} bytes, the file has {actual} (space "
                f"allocated before it was written, or bytes written past its end)")
    return None


def has_tokenizer(folder: Path) -> bool:
    """True when `folder` holds any of the tokenizer's files (TOKENIZER_FILES). Within one scan
    (`scan_memo`) each folder is looked at once: the run folder of 500 checkpoints without their
    own tokenizer is asked about for each of them."""
    seen = _scan_memo.get()
    if seen is not None and ("tok", str(folder)) in seen:
        return seen["tok", str(folder)]
    found = any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)
    if seen is not None:
        seen["tok", str(folder)] = found
    return found


_scan_memo: contextvars.ContextVar[dict | None] = contextvars.ContextVar("learnviz_scan_memo", default=None)


def scan_memo_dict() -> dict:
    """The memo of the scan under way (`scan_memo`); a new empty one outside a scan."""
    seen = _scan_memo.get()
    return seen if seen is not None else {}


@contextmanager
def scan_memo() -> Iterator[None]:
    """Within it, what a scan of many checkpoints asks again of the same folder is answered once
    (`has_tokenizer`). A scan is short: files that change meanwhile are seen by the next one."""
    token = _scan_memo.set({})
    try:
        yield
    finally:
        _scan_memo.reset(token)


def tokenizer_dir(ck_path: str | Path, tokenizer: str | Path | None = None) -> Path | None:
    """Where a checkpoint's tokenizer is read from: the checkpoint folder when it holds the
    tokenizer's files (the Trainer saves them only when it was given a tokenizer), else the folder
    named by --tokenizer / the `tokenizer` setting (returned even without files, so that the error
    names it), else the run folder, else the run folder's parent. None when there is none."""
    ck_path = Path(ck_path)
    if has_tokenizer(ck_path):
        return ck_path
    return shared_tokenizer_dir(ck_path, tokenizer)


def shared_tokenizer_dir(ck_path: Path, tokenizer: str | Path | None = None) -> Path | None:
    """`tokenizer_dir` of a checkpoint folder without tokenizer files of its own."""
    if tokenizer:
        return Path(tokenizer)
    for folder in (ck_path.parent, ck_path.parent.parent):
        if has_tokenizer(folder):
            return folder
    return None


def fingerprint(ck: Checkpoint, tokenizer: str | Path | None = None,
                base_model: str | Path | None = None) -> str:
    """A hash of config.json, the tokenizer files, and each weight file's size, header and 16
    sampled data blocks.

    Headers alone would not change when training rewrites the same shapes with new values; the
    sampled blocks do, at the cost of 64 KiB read per file rather than the whole file. The
    tokenizer files (the checkpoint's own, else those `tokenizer_dir` finds with `tokenizer`, the
    --tokenizer folder) are part of it so that a checkpoint whose tokenizer was missing (or changed)
    is extracted again once it is back. Never raises: a file that cannot be parsed is hashed by
    what can be read of it, so a broken checkpoint gets a key like any other.
    """
    tok = checkpoint_tokenizer(ck, tokenizer, base_model) or ck.files
    adapter = is_adapter(ck.files)
    base = adapter_base(ck.files, base_model) if adapter else None   # an adapter's model is its base's too
    base_weights = (weight_files(base) or []) if base is not None else []
    files = [ck.files / "config.json", *ck.weight_files]
    if adapter:
        files.append(ck.files / ADAPTER_CONFIG)
    if base is not None:
        files += [base / "config.json", *base_weights]
    files += [tok / name for name in TOKENIZER_FILES]
    key = (str(ck.files), str(ck.path), str(tok), str(base_model))
    before = _signature(files)
    kept = _fingerprints.get(key)
    if before is not None and kept is not None and kept[0] == before:
        return kept[1]        # the same files, unchanged (inode, size, modification and change times)
    h = hashlib.sha256()
    h.update(_read_or_mark(ck.files / "config.json"))
    for w in ck.weight_files:
        _hash_weight_file(h, w)
    if adapter:
        h.update(_read_or_mark(ck.files / ADAPTER_CONFIG))
        if base is not None:
            h.update(_read_or_mark(base / "config.json"))
            for w in base_weights:
                _hash_weight_file(h, w)
    h.update(tokenizer_hash(tok).encode())
    fp = h.hexdigest()[:16]
    if before is not None and _signature(files) == before:    # not changed while it was read
        if len(_fingerprints) >= 100_000:
            _fingerprints.clear()
        _fingerprints[key] = (before, fp)
    return fp


# A long-lived process (`learnviz run --watch`, the beat, a worker) scans the same checkpoints
# again and again: their fingerprints are kept with what identifies the files they read, and a
# file written since (new inode, size or times; the change time cannot be set back) reads again.
_fingerprints: dict[tuple, tuple[tuple, str]] = {}


def forget_fingerprints() -> None:
    _fingerprints.clear()


def file_identity(path: str | Path) -> tuple | None:
    """What identifies one version of a file or folder: device, inode, size, modification and change
    time (a write in place changes the change time, which cannot be set back); None when it does
    not exist. Other OSErrors pass through."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _signature(files: list[Path]) -> tuple | None:
    try:
        return tuple(file_identity(f) for f in files)
    except OSError:
        return None


def checkpoint_tokenizer(ck: Checkpoint, tokenizer: str | Path | None = None,
                         base_model: str | Path | None = None) -> Path | None:
    """`tokenizer_dir` of a checkpoint whose files may be read from a kept copy (`ck.source`):
    the copy's own tokenizer files, else the folders around the checkpoint's own path; for an
    adapter checkpoint, last its base model's."""
    found = ck.files if has_tokenizer(ck.files) else tokenizer_dir(ck.path, tokenizer)
    if found is None and is_adapter(ck.files):   # an adapter without one: its base model's
        base = adapter_base(ck.files, base_model)
        found = base if base is not None and has_tokenizer(base) else None
    return found


def _read_or_mark(f: Path) -> bytes:
    try:
        return f.read_bytes()
    except OSError as exc:
        return f"unreadable {f.name}: {type(exc).__name__}".encode()


def _hash_weight_file(h, w: Path) -> None:
    """Size, header and sampled data blocks of one weight file into `h`. Without a valid header
    (corrupt, truncated, or a shard index that is no index) the blocks are sampled over the whole
    file: the first one holds its first bytes."""
    try:
        size = w.stat().st_size
    except OSError as exc:
        h.update(f"{w.name}:unreadable {type(exc).__name__}".encode())
        return
    h.update(f"{w.name}:{size}".encode())
    try:
        with open(w, "rb") as fh:
            try:
                data_start = 8 + _header_length(fh)
            except ValueError:
                data_start = 0
            fh.seek(0)
            h.update(fh.read(data_start))   # length and header: at most the file, checked above
            data_len = size - data_start
            for i in range(SAMPLE_BLOCKS):
                fh.seek(data_start + (data_len * i) // SAMPLE_BLOCKS)
                h.update(fh.read(SAMPLE_BLOCK_SIZE))
    except OSError as exc:
        h.update(f"unreadable {type(exc).__name__}".encode())


def tokenizer_hash(path: Path) -> str:
    """A hash of a checkpoint's tokenizer files (TOKENIZER_FILES, those present): equal hashes
    tokenize alike, and the hash changes when a file appears, disappears or changes."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + _read_or_mark(f))
    return h.hexdigest()[:16]


def training_metrics(ck_path: Path, step: int) -> dict:
    """Loss, learning rate and eval metrics at `step` from trainer_state.json's log_history.

    For each key, the last value logged at or before `step`; `train_loss` is the loss logged at
    the latest training row. Missing file or keys give an empty dict: the history goes on.
    """
    state = read_trainer_state(ck_path)
    if not state:
        return {}
    out: dict[str, float] = {}
    for row in state.get("log_history") or []:
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)) or row["step"] > step:
            continue
        for key, value in row.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            out["train_loss" if key == "loss" else key] = float(value)
        if "epoch" in row:
            out["epoch"] = float(row["epoch"])
    return out
