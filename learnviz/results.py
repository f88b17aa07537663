"""Stage names and the typed results of the CPU stages, as stored in a checkpoint's archive.

`ExtractResult` (learnviz/extract.py) is the GPU stage's result; `AnalysisResult` and
`GeometryResult` here are the CPU stages'. Each has `to_archive()` -> (elements, attrs) for
`archive.write_stage` and `from_archive(elements, attrs)` for a reader, so that the group layout
(docs/archive.md) is written in one place and read through named fields everywhere else.

A reader may read only part of a group (`readout.read_analysis(a, parts=["skills"])`); the
sections it did not read are None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EXTRACT, ANALYSIS, GEOMETRY, SERIES = "extract", "analysis", "geometry", "series"
CHECKPOINT_STAGES = (EXTRACT, ANALYSIS, GEOMETRY)    # pipeline order, as `learnviz status` lists them
BOARD_FILE = "hard_example_board.json"               # the hard-example board beside the archives


def stage_order(names) -> list[str]:
    """Stage names in pipeline order (unknown ones last, by name)."""
    rank = {name: i for i, name in enumerate(CHECKPOINT_STAGES)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def named(d: dict[str, float]) -> dict[str, np.ndarray]:
    """A str -> float mapping as two arrays (names may hold '/', which HDF5 reads as a path)."""
    return {"names": np.asarray(list(d), dtype=object), "values": np.asarray(list(d.values()), dtype=np.float64)}


def unnamed(group: dict) -> dict[str, float]:
    """The inverse of `named`."""
    return {str(k): float(v) for k, v in zip(group["names"], group["values"])}


def json_attr(value: Any, default: Any) -> Any:
    """An attribute stored as JSON text (containers and None are), decoded; `default` when absent or bad."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default if value is None else value


# ---------------------------------------------------------------- analysis

@dataclass(frozen=True)
class CalibrationBins:
    """Reliability diagram and scores (learnviz.analysis.calibration): bin_* are (n_bins,),
    bin_edges (n_bins + 1,)."""
    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_count: np.ndarray
    ece: float
    mce: float
    brier: float
    gap: float
    direction: str | None = None       # "overconfident" | "underconfident" | ...

    def to_archive(self) -> dict:
        return {"bin_edges": self.bin_edges, "bin_confidence": self.bin_confidence,
                "bin_accuracy": self.bin_accuracy, "bin_count": self.bin_count, "ece": np.float64(self.ece),
                "mce": np.float64(self.mce), "brier": np.float64(self.brier), "gap": np.float64(self.gap)}

    @classmethod
    def from_archive(cls, d: dict, direction: str | None) -> CalibrationBins:
        return cls(d["bin_edges"], d["bin_confidence"], d["bin_accuracy"], d["bin_count"], float(d["ece"]),
                   float(d["mce"]), float(d["brier"]), float(d["gap"]), direction)


@dataclass(frozen=True)
class EntropyProfile:
    """Next-token entropy over the answer (nats): by position (max answer length,), per probe (n,)."""
    mean_by_position: np.ndarray
    count_by_position: np.ndarray
    probe_mean: np.ndarray
    overconfident: np.ndarray          # (n,) bool: low entropy and wrong
    uncertain: np.ndarray              # (n,) bool: high entropy
    by_category: dict[str, float]

    def to_archive(self) -> dict:
        return {"mean_by_position": self.mean_by_position, "count_by_position": self.count_by_position,
                "probe_mean": self.probe_mean, "overconfident": self.overconfident, "uncertain": self.uncertain,
                "by_category": named(self.by_category)}

    @classmethod
    def from_archive(cls, d: dict) -> EntropyProfile:
        return cls(d["mean_by_position"], d["count_by_position"], d["probe_mean"], d["overconfident"],
                   d["uncertain"], unnamed(d["by_category"]))


@dataclass(frozen=True)
class ErrorPositions:
    """Where answers depart from the expected tokens: per probe (n,), -1 = never; histogram over positions."""
    teacher_forced: np.ndarray
    free: np.ndarray
    histogram: np.ndarray

    def to_archive(self) -> dict:
        return {"teacher_forced": self.teacher_forced, "free": self.free, "histogram": self.histogram}

    @classmethod
    def from_archive(cls, d: dict) -> ErrorPositions:
        return cls(d["teacher_forced"], d["free"], d["histogram"])


@dataclass(frozen=True)
class LayerWeights:
    """Per layer (n_layers,): weight norm and relative change against the previous and first checkpoint."""
    layers: list[str]
    norm: np.ndarray
    change_prev: np.ndarray
    change_first: np.ndarray
    norm_ratio_first: np.ndarray
    parameters: np.ndarray

    def to_archive(self) -> dict:
        return {"layers": np.asarray(self.layers, dtype=object), "norm": self.norm, "change_prev": self.change_prev,
                "change_first": self.change_first, "norm_ratio_first": self.norm_ratio_first,
                "parameters": np.asarray(self.parameters, dtype=np.int64)}

    @classmethod
    def from_archive(cls, d: dict) -> LayerWeights:
        return cls([str(x) for x in d["layers"]], d["norm"], d["change_prev"], d["change_first"],
                   d["norm_ratio_first"], d["parameters"])


@dataclass(frozen=True)
class AnalysisResult:
    """The `analysis` group of one checkpoint. Sections a reader did not ask for are None;
    `weights` is also None when the checkpoint's weight files were gone (`weights_note` says so)."""
    skills: dict[str, float] | None = None             # skill -> accuracy
    categories: dict[str, float] | None = None         # "skill/category" -> accuracy
    delta_vs_base: dict[str, float] | None = None      # skill -> accuracy minus the first checkpoint's
    calibration: CalibrationBins | None = None
    entropy: EntropyProfile | None = None
    errors: ErrorPositions | None = None
    weights: LayerWeights | None = None
    weight_flags: dict[str, Any] = field(default_factory=dict)
    weights_note: str = ""

    SECTIONS = ("skills", "calibration", "entropy", "errors", "weights")

    def to_archive(self) -> tuple[dict, dict]:
        data: dict = {"skills": {"skill": named(self.skills or {}), "category": named(self.categories or {}),
                                 "delta_vs_base": named(self.delta_vs_base or {})},
                      "calibration": self.calibration.to_archive(), "entropy": self.entropy.to_archive(),
                      "errors": self.errors.to_archive()}
        attrs: dict = {"calibration_direction": self.calibration.direction}
        if self.weights is not None:
            data["weights"] = self.weights.to_archive()
            attrs["weight_flags"] = self.weight_flags
        else:
            attrs["weights"] = self.weights_note
        return data, attrs

    @classmethod
    def from_archive(cls, data: dict, attrs: dict) -> AnalysisResult:
        skills = data.get("skills")
        return cls(
            skills=unnamed(skills["skill"]) if skills else None,
            categories=unnamed(skills["category"]) if skills else None,
            delta_vs_base=unnamed(skills["delta_vs_base"]) if skills else None,
            calibration=(CalibrationBins.from_archive(data["calibration"], attrs.get("calibration_direction"))
                         if "calibration" in data else None),
            entropy=EntropyProfile.from_archive(data["entropy"]) if "entropy" in data else None,
            errors=ErrorPositions.from_archive(data["errors"]) if "errors" in data else None,
            weights=LayerWeights.from_archive(data["weights"]) if "weights" in data else None,
            weight_flags=json_attr(attrs.get("weight_flags"), {}),
            weights_note=str(attrs.get("weights", "")) if "weights" in attrs else "")


# ---------------------------------------------------------------- geometry

GEOMETRY_METRICS = ("drift_prev", "drift_first", "cka_prev", "cka_first", "trustworthiness", "umap_disparity")


@dataclass(frozen=True)
class LayerGeometry:
    """One layer's geometry: the probes' cosine similarity (n, n), the aligned 2-D layout (n, 2),
    and the drift metrics (None when not computed, e.g. at the first checkpoint)."""
    similarity: np.ndarray | None = None
    coords: np.ndarray | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)

    def to_archive(self) -> dict:
        group: dict = {}
        if self.similarity is not None:
            # float16: a (n, n) matrix per layer and checkpoint; cosines need no more digits
            group["similarity"] = np.asarray(self.similarity).astype(np.float16)
        if self.coords is not None:
            group["coords"] = np.asarray(self.coords, dtype=np.float32)
        for k, v in self.metrics.items():
            group[k] = np.float64(np.nan if v is None else v)
        return group

    @classmethod
    def from_archive(cls, d: dict) -> LayerGeometry:
        metrics = {}
        for k in GEOMETRY_METRICS:
            if k in d:
                v = float(d[k])
                metrics[k] = v if np.isfinite(v) else None
        return cls(d.get("similarity"), d.get("coords"), metrics)


@dataclass(frozen=True)
class GeometryResult:
    """The `geometry` group of one checkpoint: per pooled layer (the decoder block's index)."""
    layers: dict[int, LayerGeometry]
    umap_method: str = ""
    umap_params: dict[str, Any] = field(default_factory=dict)
    previous_step: int | None = None
    first_step: int | None = None

    def to_archive(self) -> tuple[dict, dict]:
        data = {f"layer_{k}": g.to_archive() for k, g in self.layers.items()}
        attrs = {"umap_method": self.umap_method, "umap_params": self.umap_params,
                 "previous_step": self.previous_step, "first_step": self.first_step}
        return data, attrs

    @classmethod
    def from_archive(cls, data: dict, attrs: dict) -> GeometryResult:
        layers = {int(k.split("_", 1)[1]): LayerGeometry.from_archive(g) for k, g in data.items()
                  if k.startswith("layer_")}
        return cls(layers, str(attrs.get("umap_method", "")), json_attr(attrs.get("umap_params"), {}),
                   json_attr(attrs.get("previous_step"), None), json_attr(attrs.get("first_step"), None))

    @property
    def has_layout(self) -> bool:
        return any(g.coords is not None for g in self.layers.values())
