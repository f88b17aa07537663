"""Weight drift: how far each layer's weights moved, per checkpoint, streamed from its weight files
(safetensors, or PyTorch's pickled `pytorch_model.bin` and its shards).

For every layer (parameter names grouped by `layer_of`: "embeddings", "block.0".."block.N",
"head", and a vision or audio tower beside the language model under its own name) and the
checkpoint's weights W, the previous checkpoint's W_prev and the first one's W_first, all sums
taken in float64 over every element of every tensor of the layer:

    norm              ||W||                                 (Frobenius, the whole layer as one vector)
    change_prev       ||W - W_prev|| / ||W_prev||           NaN without `previous`
    change_first      ||W - W_first|| / ||W_first||         NaN without `first`
    norm_ratio_first  ||W|| / ||W_first||                   NaN without `first`

Ratios are over the tensors present (same name, same shape) in both files; a tensor only in one
of them is left out of that ratio and named in `mismatched`. A layer with no tensor in common
with the other checkpoint (a layer added since) has NaN ratios: there is nothing to compare, and
it is never called dead. A ratio whose denominator is 0 is NaN (undefined), except a change of 0
over 0 between tensors present in both, which is 0 (nothing moved).

Flags (layer names, in layer order):
    exploding  norm_ratio_first > `exploding`, or ||W|| not finite (NaN/inf weights)
    vanishing  norm_ratio_first < `vanishing`
    dead       change_prev < `dead`: the layer did not change since the previous checkpoint

Memory: the files are opened with `safetensors.safe_open` (memory-mapped) and read one tensor
name at a time: at most three tensors (current, previous, first) are loaded at once, and the
float64 arithmetic runs over chunks of `_CHUNK` elements, so two whole models are never in memory.
A `.bin` file (torch.save's zip format) is opened with `torch.load(weights_only=True, mmap=True)`:
its tensors stay memory-mapped views of the file, read the same way, a tensor at a time. Only a
`.bin` in torch's legacy (pre-zip) format, which cannot be memory-mapped, is loaded whole.
torch.load runs with `weights_only=True` only: tensors and plain containers, never arbitrary objects.

Tied weights: Hugging Face stores a tied lm_head once (under the embedding's name), so it counts
once by itself. A file that stores the tied copy too (same shape, dtype and bytes as an
embedding tensor) has that copy skipped and named in `tied`. Integer/bool tensors (masks) and
known constant buffers are not weights; they are skipped and named in `skipped`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

_CHUNK = 1 << 20  # float64 elements per arithmetic chunk (8 MiB)

EMBEDDING_PARTS = frozenset({"wte", "wpe", "embed_tokens", "embed_positions", "word_embeddings",
                             "position_embeddings", "token_type_embeddings", "embed_in",
                             "tok_embeddings", "embeddings"})
# The parts of a model beside its language model (vision and audio towers, their projectors into it)
TOWER_PARTS = frozenset({"vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder",
                         "multi_modal_projector", "mm_projector", "audio_tower", "audio_model", "audio_encoder",
                         "embed_vision", "embed_audio"})
# Buffers some checkpoints persist: constants, not weights; they would swamp a block's norm.
BUFFER_SUFFIXES = ("attn.masked_bias", "rotary_emb.inv_freq")
_BLOCK = re.compile(r"\.(\d+)\.")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: "embeddings", "block.<i>", "head", or the tower beside the
    language model that it is part of.

    `transformer.wte.weight`, `model.embed_tokens.weight`, `model.decoder.embed_positions.weight`
    -> "embeddings"; the first `.N.` index, e.g. `transformer.h.3.attn.c_attn.weight`,
    `model.layers.3.mlp.up_proj.weight`, `model.decoder.layers.3.fc1.weight` -> "block.3";
    everything else (final norm, lm_head, projections) -> "head". A vision or audio tower's
    parameter (Gemma 3's `model.vision_tower.encoder.layers.3...`, `model.multi_modal_projector...`)
    -> the tower's name ("vision_tower", "multi_modal_projector"): its blocks are not the language
    model's, and its patch embeddings not the token embeddings.
    """
    parts = name.split(".")
    tower = next((p for p in parts if p in TOWER_PARTS), None)
    if tower is not None:
        return tower
    if any(p in EMBEDDING_PARTS for p in parts):
        return "embeddings"
    m = _BLOCK.search(name)
    if m:
        return f"block.{int(m.group(1))}"
    return "head"


def _layer_key(layer: str) -> tuple[int, int, str]:
    if layer == "embeddings":
        return (0, 0, "")
    if layer.startswith("block."):
        return (1, int(layer.split(".", 1)[1]), "")
    if layer == "head":
        return (2, 0, "")
    return (3, 0, layer)        # a tower beside the language model


def safetensors_files(checkpoint_dir: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint folder: model.safetensors, or its shards, sorted.
    (learnviz.checkpoints.weight_files finds pytorch_model.bin and its shards too.)"""
    folder = Path(checkpoint_dir)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors files")
    return files


def is_torch_file(path: str | Path) -> bool:
    """True for PyTorch's pickled weight files (pytorch_model.bin, its shards, adapter_model.bin)."""
    return Path(path).name.endswith(".bin")


class _TorchFile:
    """A pytorch_model.bin (or a shard of one) with the part of safe_open's interface `_Files` uses.

    `torch.load(weights_only=True, mmap=True)`: the tensors are views of the memory-mapped file, so
    nothing is read until a tensor's values are; a legacy (pre-zip) file, which cannot be mapped,
    is loaded without mmap. ValueError naming the file when it cannot be read, or holds anything
    but a flat name -> tensor dict.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            try:
                sd = self._load(mmap=True)
            except MemoryError:
                raise
            except Exception:   # the legacy format cannot be memory-mapped: read it whole
                sd = self._load(mmap=False)
        except MemoryError:
            raise
        except Exception as exc:
            raise ValueError(f"weight_drift: {path} is not a readable PyTorch weights file "
                             f"(torch.load(weights_only=True)): {type(exc).__name__}: {exc}") from None
        if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in sd.items()):
            raise ValueError(f"weight_drift: {path} is not a state dict of named tensors "
                             f"(torch.load gave a {type(sd).__name__})")
        self.tensors: dict[str, torch.Tensor] | None = sd

    def _load(self, *, mmap: bool):
        return torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.tensors = None   # drops the references to the mapping: unmapped once the tensors handed out go

    def keys(self) -> list[str]:
        return list(self.tensors or {})

    def get_tensor(self, name: str) -> torch.Tensor:
        return self.tensors[name]


@dataclass(frozen=True)
class WeightDrift:
    """Per-layer weight norms and changes; arrays are (L,) in `layers` order."""
    layers: list[str]
    norm: np.ndarray               # (L,) float64 ||W||
    change_prev: np.ndarray        # (L,) float64 ||W - W_prev|| / ||W_prev||, NaN without previous
    change_first: np.ndarray       # (L,) float64 ||W - W_first|| / ||W_first||, NaN without first
    norm_ratio_first: np.ndarray   # (L,) float64 ||W|| / ||W_first||, NaN without first
    parameters: np.ndarray         # (L,) int64 number of weights counted in the layer
    flags: dict[str, list[str]]    # "exploding" | "vanishing" | "dead" -> layer names
    mismatched: list[str] = field(default_factory=list)   # names missing from, or shaped differently in, previous/first
    tied: list[str] = field(default_factory=list)         # stored copies of tied weights, counted once
    skipped: list[str] = field(default_factory=list)      # non-float tensors and constant buffers
    has_previous: bool = False
    has_first: bool = False
    exploding: float = 10.0
    vanishing: float = 0.1
    dead: float = 1e-8
    method: str = "per-layer Frobenius norm, float64 sums, streamed tensor by tensor"


class _Files:
    """One checkpoint's weight files, opened memory-mapped, with a name -> file index."""

    def __init__(self, paths: Sequence[str | Path] | str | Path, role: str):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError(f"weight_drift: no files given for the {role} checkpoint")
        self.role = role
        self.handles = []
        self.where: dict[str, int] = {}
        self.order: list[str] = []
        try:
            for i, p in enumerate(paths):
                if not p.is_file():
                    raise ValueError(f"weight_drift: {role} weight file {p} does not exist")
                if is_torch_file(p):
                    h = _TorchFile(p)
                else:
                    try:
                        h = safe_open(str(p), framework="pt")
                        h.__enter__()
                    except (SafetensorError, OSError) as exc:
                        raise ValueError(f"weight_drift: {p} is not a readable safetensors file: {exc}") from None
                self.handles.append(h)
                for name in h.keys():
                    if name in self.where:
                        raise ValueError(f"weight_drift: tensor {name!r} is in two {role} files "
                                         f"({paths[self.where[name]]} and {p})")
                    self.where[name] = i
                    self.order.append(name)
        except BaseException:
            self.close()
            raise

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> torch.Tensor:
        return self.handles[self.where[name]].get_tensor(name)

    def close(self) -> None:
        for h in self.handles:
            h.__exit__(None, None, None)
        self.handles = []


class _Sums:
    """float64 accumulators of one layer."""
    __slots__ = ("n", "n_prev", "n_first", "w2", "d_prev", "prev2", "d_first", "first2", "w2_first")

    def __init__(self):
        self.n = self.n_prev = self.n_first = 0   # elements counted; of them, compared with previous, first
        self.w2 = self.d_prev = self.prev2 = self.d_first = self.first2 = self.w2_first = 0.0


def _sq(x: torch.Tensor) -> float:
    return float(torch.dot(x, x))


def _accumulate(s: _Sums, cur: torch.Tensor, prev: torch.Tensor | None, first: torch.Tensor | None) -> None:
    flat = cur.reshape(-1)
    pflat = prev.reshape(-1) if prev is not None else None
    fflat = first.reshape(-1) if first is not None else None
    s.n += flat.numel()
    s.n_prev += pflat.numel() if pflat is not None else 0
    s.n_first += fflat.numel() if fflat is not None else 0
    for a in range(0, flat.numel(), _CHUNK):
        c = flat[a: a + _CHUNK].to(torch.float64)
        c2 = _sq(c)
        s.w2 += c2
        if pflat is not None:
            p = pflat[a: a + _CHUNK].to(torch.float64)
            s.prev2 += _sq(p)
            s.d_prev += _sq(c - p)
            del p
        if fflat is not None:
            f = fflat[a: a + _CHUNK].to(torch.float64)
            s.first2 += _sq(f)
            s.d_first += _sq(c - f)
            s.w2_first += c2
            del f
        del c
    del flat, pflat, fflat


def _digest(t: torch.Tensor) -> tuple:
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    return (tuple(t.shape), str(t.dtype), hashlib.blake2b(raw.data, digest_size=16).hexdigest())


def _ratio(num2: float, den2: float, compared: int) -> float:
    if not compared:
        return math.nan       # no tensor in common: nothing to compare (not "nothing moved")
    if den2 == 0.0:
        return 0.0 if num2 == 0.0 else math.nan
    return math.sqrt(num2 / den2)


def weight_drift(current: Sequence[str | Path] | str | Path,
                 previous: Sequence[str | Path] | str | Path | None = None,
                 first: Sequence[str | Path] | str | Path | None = None, *,
                 exploding: float = 10.0, vanishing: float = 0.1, dead: float = 1e-8) -> WeightDrift:
    """Per-layer weight norms and drift of one checkpoint against the previous and the first.

    `current`, `previous`, `first`: weight file paths of one checkpoint each (its
    model.safetensors or pytorch_model.bin, or all its shards; a single path is accepted too;
    a name ending in `.bin` is read with torch.load(weights_only=True), any other as safetensors).
    Reads the files, one tensor name at a time (see the module docstring for the definitions and
    the memory bound).
    Raises ValueError for missing or unreadable files, a tensor in two shards, or bad thresholds.
    """
    if not (exploding > 0 and vanishing >= 0 and dead >= 0):
        raise ValueError(f"weight_drift: thresholds must be positive (exploding={exploding}, "
                         f"vanishing={vanishing}, dead={dead})")
    opened: list[_Files] = []
    try:
        cur = _Files(current, "current")
        opened.append(cur)
        prev = _Files(previous, "previous") if previous is not None else None
        if prev is not None:
            opened.append(prev)
        fst = _Files(first, "first") if first is not None else None
        if fst is not None:
            opened.append(fst)
        return _drift(cur, prev, fst, exploding=exploding, vanishing=vanishing, dead=dead)
    finally:
        for f in opened:
            f.close()


def _drift(cur: _Files, prev: _Files | None, fst: _Files | None, *,
           exploding: float, vanishing: float, dead: float) -> WeightDrift:
    sums: dict[str, _Sums] = {}
    mismatched: list[str] = []
    tied: list[str] = []
    skipped: list[str] = []
    embedding_digests: set[tuple] = set()
    # Embeddings first, so a stored copy of a tied lm_head is recognised whatever the file order.
    names = sorted(cur.order, key=lambda n: layer_of(n) != "embeddings")
    for name in names:
        layer = layer_of(name)
        t = cur.get(name)
        if not t.is_floating_point() or name.endswith(BUFFER_SUFFIXES):
            skipped.append(name)
            del t
            continue
        if t.dim() == 2 and layer in ("embeddings", "head"):
            d = _digest(t)
            if layer == "embeddings":
                embedding_digests.add(d)
            elif d in embedding_digests:
                tied.append(name)
                del t
                continue
        p = _matching(prev, name, t, mismatched)
        f = _matching(fst, name, t, mismatched)
        _accumulate(sums.setdefault(layer, _Sums()), t, p, f)
        del t, p, f  # before the next get_tensor: keeps at most three tensors alive
    for other in (prev, fst):
        if other is not None:
            mismatched += [n for n in other.order if n not in cur and n not in mismatched]

    layers = sorted(sums, key=_layer_key)
    s = [sums[k] for k in layers]
    norm = np.array([math.sqrt(x.w2) for x in s], dtype=np.float64)
    nan = np.full(len(layers), np.nan)
    change_prev = np.array([_ratio(x.d_prev, x.prev2, x.n_prev) for x in s]) if prev is not None else nan.copy()
    if fst is not None:
        change_first = np.array([_ratio(x.d_first, x.first2, x.n_first) for x in s])
        norm_ratio_first = np.array([math.nan if x.first2 == 0.0 else math.sqrt(x.w2_first / x.first2)
                                     for x in s])
    else:
        change_first, norm_ratio_first = nan.copy(), nan.copy()
    with np.errstate(invalid="ignore"):
        explode = ~np.isfinite(norm) | (norm_ratio_first > exploding)
        flags = {
            "exploding": [k for k, e in zip(layers, explode) if e],
            "vanishing": [k for k, r in zip(layers, norm_ratio_first) if r < vanishing],
            "dead": [k for k, c in zip(layers, change_prev) if c < dead],
        }
    return WeightDrift(layers=layers, norm=norm, change_prev=change_prev, change_first=change_first,
                       norm_ratio_first=norm_ratio_first,
                       parameters=np.array([x.n for x in s], dtype=np.int64), flags=flags,
                       mismatched=mismatched, tied=tied, skipped=skipped,
                       has_previous=prev is not None, has_first=fst is not None,
                       exploding=exploding, vanishing=vanishing, dead=dead)


def _matching(other: _Files | None, name: str, t: torch.Tensor, mismatched: list[str]) -> torch.Tensor | None:
    """The same tensor in the other checkpoint, or None (and noted) when it is missing or reshaped."""
    if other is None:
        return None
    if name not in other:
        if name not in mismatched:
            mismatched.append(name)
        return None
    o = other.get(name)
    if tuple(o.shape) != tuple(t.shape):
        if name not in mismatched:
            mismatched.append(name)
        return None
    return o


def drift_series(checkpoints: Iterable[Sequence[str | Path]], **thresholds) -> list[WeightDrift]:
    """weight_drift for each checkpoint of a run (in order) against its predecessor and the first."""
    out: list[WeightDrift] = []
    ckpts = list(checkpoints)
    for i, files in enumerate(ckpts):
        out.append(weight_drift(files, ckpts[i - 1] if i else None, ckpts[0] if i else None, **thresholds))
    return out
