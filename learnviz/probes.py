"""The probe set: fixed prompts with expected answers, run through every checkpoint.

A probe is {id, prompt, expected, skill, category} (plus an optional free-form `meta` mapping).
Files may be JSONL (one probe per line), JSON (a list, or {"probes": [...]}) or YAML (the same,
or {"examples": [...]} as in config/hard_examples.yaml). Every error names the file, the line (or
entry) and the field. The probe set's content hash is stored with every archive; archives of
different hashes are never compared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import syllo
from .common import write_atomic
from .errors import ProbeError

REQUIRED = ("id", "prompt", "expected")
OPTIONAL = ("skill", "category", "meta")
HARD_EXAMPLES_SKILL = "hard_examples"


@dataclass(frozen=True)
class Probe:
    id: str
    prompt: str
    expected: str
    skill: str = "default"
    category: str = "default"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            del d["meta"]
        return d


@dataclass(frozen=True)
class ProbeSet:
    probes: tuple[Probe, ...]
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.probes)

    def __iter__(self):
        return iter(self.probes)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.probes]

    @property
    def skills(self) -> list[str]:
        """Skills in first-seen order."""
        return list(dict.fromkeys(p.skill for p in self.probes))

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of the canonical JSON of every probe, in order (order matters: arrays follow it).
        Computed once per probe set: planning asks it of every checkpoint of a run."""
        h = hashlib.sha256()
        for p in self.probes:
            h.update(json.dumps([p.id, p.prompt, p.expected, p.skill, p.category],
                                ensure_ascii=False).encode())
            h.update(b"\n")
        return h.hexdigest()[:16]

    def subset(self, n: int) -> "ProbeSet":
        return ProbeSet(self.probes[:n], self.sources)


# ---------------------------------------------------------------- reading and validating

def _validate(entry: Any, path: Path, line: int | None, index: int, *, skill_default: str) -> Probe:
    where = dict(path=path, line=line)
    label = f"entry {index + 1}" if line is None else None
    if not isinstance(entry, dict):
        raise ProbeError(f"{label + ': ' if label else ''}expected a mapping with {', '.join(REQUIRED)}, "
                         f"got {type(entry).__name__}", **where)
    for key in entry:
        if key not in REQUIRED + OPTIONAL:
            raise ProbeError(f"{label + ': ' if label else ''}unknown field", field=str(key),
                             hint=f"a probe has {', '.join(REQUIRED + OPTIONAL)}", **where)
    for key in REQUIRED:
        if key not in entry:
            raise ProbeError(f"{label + ': ' if label else ''}missing", field=key,
                             hint=f"every probe needs {', '.join(REQUIRED)}", **where)
    values: dict[str, Any] = {}
    for key in REQUIRED + ("skill", "category"):
        if key not in entry:
            continue
        value = entry[key]
        if (key in ("id", "expected") and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value)):
            value = str(value)  # YAML reads `expected: 4` as a number (not NaN or 1e400: "nan", "inf")
        if not isinstance(value, str) or not value.strip():
            raise ProbeError(f"{label + ': ' if label else ''}must be a non-empty string, got {value!r}",
                             field=key, **where)
        values[key] = value
    meta = entry.get("meta", {})
    if not isinstance(meta, dict):
        raise ProbeError("must be a mapping", field="meta", **where)
    return Probe(id=values["id"], prompt=values["prompt"], expected=values["expected"],
                 skill=values.get("skill", skill_default),
                 category=values.get("category", values.get("skill", skill_default)), meta=meta)


def read_probe_file(path: str | Path, *, skill_default: str = "default") -> list[Probe]:
    """Read and validate one probe file. Raises ProbeError naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError("probe file not found", path=path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    probes: list[Probe] = []
    lines: list[int | None] = []     # each probe's line, for the duplicate-id error
    if suffix == ".jsonl":
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            if raw.lstrip().startswith("["):    # a JSON array: every JSONL line is one probe object
                raise ProbeError("a JSON array where JSON Lines needs one probe object per line", path=path,
                                 line=lineno, hint="name the file .json, or write one probe per line")
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ProbeError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path, line=lineno) from None
            probes.append(_validate(entry, path, lineno, len(probes), skill_default=skill_default))
            lines.append(lineno)
    elif suffix in (".json", ".yaml", ".yml"):
        try:
            data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as exc:
            raise ProbeError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ProbeError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=path,
                             line=mark.line + 1 if mark else None) from None
        if isinstance(data, dict):
            keys = [k for k in ("probes", "examples") if k in data]
            if not keys:
                raise ProbeError("expected a list of probes, or a mapping with 'probes' or 'examples'", path=path)
            data = data[keys[0]]
        if not isinstance(data, list):
            raise ProbeError("expected a list of probes", path=path)
        starts = _yaml_entry_lines(text) if suffix != ".json" else []
        for i, entry in enumerate(data):
            line = starts[i] if i < len(starts) else None
            probes.append(_validate(entry, path, line, i, skill_default=skill_default))
            lines.append(line)
    else:
        raise ProbeError(f"unknown probe file type '{suffix}'", path=path,
                         hint="use .jsonl, .json, .yaml or .yml")
    if not probes:
        raise ProbeError("holds no probes", path=path)
    seen: dict[str, int] = {}
    for i, p in enumerate(probes):
        if p.id in seen:
            first = seen[p.id]
            at = f"line {lines[first]}" if lines[first] is not None else f"entry {first + 1}"
            raise ProbeError(f"{'' if lines[i] is not None else f'entry {i + 1}: '}duplicate id '{p.id}' "
                             f"(first at {at})", path=path, field="id", line=lines[i])
        seen[p.id] = i
    return probes


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; ProbeError naming the line and byte offset of the first byte that is not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot be read: {exc.strerror or exc}", path=path) from None
    try:
        # a UTF-8 byte-order mark (Notepad writes one) is not part of the text: json refuses it
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        hint = "save it as UTF-8"
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint += "; it starts with a UTF-16 byte-order mark"
        raise ProbeError(f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} is not valid "
                         f"UTF-8 ({exc.reason})", path=path, line=line, hint=hint) from None


def _yaml_entry_lines(text: str) -> list[int]:
    """Line numbers (1-based) where each top-level list entry starts, for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value in ("probes", "examples"):
                node = value
                break
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in node.value]


def load_probe_set(probes_path: str | Path, hard_examples_path: str | Path | None = None) -> ProbeSet:
    """The probe file plus the hard examples (skill 'hard_examples') not already in it by id."""
    probes = read_probe_file(probes_path)
    sources = [str(probes_path)]
    if hard_examples_path is not None and Path(hard_examples_path).exists():
        ids = {p.id for p in probes}
        for p in read_probe_file(hard_examples_path, skill_default=HARD_EXAMPLES_SKILL):
            if p.id not in ids:
                probes.append(Probe(p.id, p.prompt, p.expected, HARD_EXAMPLES_SKILL, p.category, p.meta))
        sources.append(str(hard_examples_path))
    return ProbeSet(tuple(probes), tuple(sources))


def write_jsonl(probes: Iterable[Probe], path: str | Path) -> None:
    """Write a probe file whole (atomically: a reader, or a write stopped midway, never leaves half a set)."""
    write_atomic(path, "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in probes))


# ---------------------------------------------------------------- the default SYLLO set

SYLLO_SEED = 20251125
SYLLO_PER_SKILL = 100


def generate_syllo_probes(per_skill: int = SYLLO_PER_SKILL, seed: int = SYLLO_SEED) -> list[Probe]:
    """The default probe set: 100 each of easy, medium, hard, edge cases and the training mix.

    Deterministic: the same seed gives the same 500 probes on every machine and Python version
    (only `random.Random` with integer seeds is used). Prompts are unique.
    """
    rng = random.Random(seed)
    out: list[Probe] = []
    seen: set[str] = set()
    plan = [(skill, syllo.GENERATORS[skill]) for skill in ("syllo_easy", "syllo_medium", "syllo_hard", "edge_cases")]
    plan.append(("training_mix", syllo.training_example))
    for skill, gen in plan:
        n = 0
        while n < per_skill:
            ex = gen(rng)
            if ex.prompt in seen:
                continue
            seen.add(ex.prompt)
            n += 1
            category = ex.category if skill != "training_mix" else f"{ex.skill}/{ex.category}"
            out.append(Probe(id=f"{skill}_{n:03d}", prompt=ex.prompt, expected=ex.expected,
                             skill=skill, category=category))
    return out
