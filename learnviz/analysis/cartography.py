"""Dataset Cartography (Swayamdipta et al., 2020, "Dataset Cartography: Mapping and Diagnosing
Datasets with Training Dynamics") over checkpoints instead of epochs.

Per probe, over the k checkpoints given:

- confidence: mean over checkpoints of the probability the model gives the expected answer.
  The paper uses p(gold label); for a multi-token answer that would be exp(answer_logprob), the
  product of the token probabilities, which vanishes with the answer's length (0.9 per token is
  0.35 over 10 tokens, 0.005 over 50) and would put every long answer among the hard ones.
  So we take the per-token geometric mean exp(answer_logprob / answer_len), a probability in
  [0, 1] that does not depend on length. It is lenient: an answer wrong in one token (`All` for
  `Some`) whose other tokens are template the model has learnt still scores high, so read it
  together with correctness;
- variability: standard deviation of that probability over checkpoints (population std,
  ddof=0, as the paper's code: `np.std` in allenai/cartography's train_dy_filtering.py);
- correctness: fraction of checkpoints whose greedy answer is right.

Regions (the paper's three). The paper only labels areas of its data-map plot, and its code
selects by ranking (e.g. the 33% most variable examples); here fixed thresholds decide, so that a
probe's region does not depend on the rest of the probe set:

- "ambiguous": variability >= `variability_threshold` (the model keeps changing its mind);
- "easy-to-learn": otherwise, confidence >= `confidence_threshold` (high confidence, low
  variability);
- "hard-to-learn": otherwise (low confidence, low variability).

Defaults (ours, not the paper's): variability_threshold = 0.2, 40% of the largest possible std of
a probability (0.5); confidence_threshold = 0.5, the per-token probability at which the expected
token is more likely than all others together.

Over a run that starts at random initialisation every probe the model learns climbs from ~0 to
~1 and so looks "ambiguous"; the paper's picture (which starts after the first epoch) comes from
a window of later checkpoints, e.g. the second half of the run. Choosing the window is the
caller's: pass only those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")
METHOD = ("dataset cartography (Swayamdipta et al. 2020) over checkpoints; "
          "confidence = mean per-token geometric-mean probability of the expected answer")


@dataclass(frozen=True)
class Cartography:
    """The data map.

    `confidence`, `variability`, `correctness`: (n,) float64 (module docstring). `region`: (n,)
    str, one of REGIONS. `counts`: region -> number of probes (every region present, maybe 0).
    `n_checkpoints`: k.
    """
    confidence_threshold: float
    variability_threshold: float
    n_checkpoints: int
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray
    region: np.ndarray
    counts: dict[str, int]
    method: str = METHOD


def cartography(answer_logprob, answer_len, correct, confidence_threshold: float = 0.5,
                variability_threshold: float = 0.2) -> Cartography:
    """Confidence, variability and correctness per probe over checkpoints, and its region.

    `answer_logprob`: (k, n) float, sum of the expected answer's token logprobs (natural log) at
    each checkpoint (-inf allowed: probability 0). `answer_len`: (n,) int, answer length in
    tokens, >= 1. `correct`: (k, n) bool. Rows in any checkpoint order (the statistics do not
    depend on it). Thresholds: see the module docstring.

    ValueError on k < 2 (variability needs two checkpoints), shape mismatches, NaN logprobs,
    positive logprobs, zero-length answers, thresholds outside [0, 1].
    """
    lp = np.asarray(answer_logprob, dtype=np.float64)
    length = np.asarray(answer_len)
    correct = np.asarray(correct)
    if lp.ndim != 2:
        raise ValueError(f"answer_logprob must be (checkpoints, probes), got shape {lp.shape}")
    k, n = lp.shape
    if k < 2:
        raise ValueError(f"cartography needs at least 2 checkpoints (variability is a spread over them), got {k}")
    if length.shape != (n,) or correct.shape != (k, n):
        raise ValueError(f"answer_logprob is {(k, n)}; answer_len must be {(n,)} (got {length.shape}) "
                         f"and correct {(k, n)} (got {correct.shape})")
    if correct.dtype.kind not in "biu":
        raise ValueError(f"correct must be bool, got dtype {correct.dtype}")
    if length.dtype.kind not in "iu" or (length < 1).any():
        bad = np.nonzero(length < 1)[0] if length.dtype.kind in "iuf" else []
        raise ValueError("answer_len must be integers >= 1 (a probe with an empty expected answer has no "
                         f"per-token probability); bad probes: {list(map(int, bad[:10]))}")
    if np.isnan(lp).any():
        ck, probe = np.argwhere(np.isnan(lp))[0]
        raise ValueError(f"answer_logprob has NaN (first at checkpoint row {ck}, probe {probe}): "
                         "a broken checkpoint; leave its row out")
    if (lp > 1e-6).any():   # a little slack for float32 sums of logprobs that round to 0
        raise ValueError("answer_logprob must be log-probabilities (<= 0)")
    for name, t in (("confidence_threshold", confidence_threshold), ("variability_threshold", variability_threshold)):
        if not 0 <= t <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {t!r}")

    p = np.exp(np.minimum(lp, 0.0) / length)            # (k, n) per-token geometric mean probability
    confidence = p.mean(0)
    variability = p.std(0)
    correctness = correct.astype(np.float64).mean(0)
    ambiguous = variability >= variability_threshold
    easy = ~ambiguous & (confidence >= confidence_threshold)
    region = np.where(ambiguous, "ambiguous", np.where(easy, "easy-to-learn", "hard-to-learn")).astype(object)
    counts = {r: int((region == r).sum()) for r in REGIONS}
    return Cartography(confidence_threshold=float(confidence_threshold),
                       variability_threshold=float(variability_threshold), n_checkpoints=k,
                       confidence=confidence, variability=variability, correctness=correctness,
                       region=region, counts=counts)
