"""The hard-example board: each hard example's answer at every checkpoint, what kind of error it
was, when the model first got it right, and whether it got it wrong again later.

Error types (`error_type(answer, expected)`), decided on words: the text is compared as
`learnviz.extract.normalize_answer` does (case, surrounding and repeated whitespace, a final
period do not count), then split into words with punctuation stripped from their edges.
Polarity words are `POLARITY_WORDS` (yes/no, the quantifiers all/some/no/none/every, not,
nothing, never, and any word ending in "n't"); the rules, in order:

    None            the answer equals the expected one
    "empty"         no words at all
    "malformed"     degenerate: a word repeated back to back ("All All") or a word pair that
                    occurs twice ("are not rats are not rats"), unless the expected answer
                    repeats the same way
    "wrong_polarity" the words other than polarity words are the same and the polarity words
                    differ ("All owls are fish." for "No owls are fish."; "Yes" for "No"); or
                    neither is a no-conclusion phrase (below), both have the same number of
                    words, at every differing position both words
                    are polarity words or both are not, and at least one differing pair is
                    polarity ("All owls are birds." for "No owls are fish."); or one is a
                    no-conclusion phrase (`NO_CONCLUSION`, "Nothing follows.") and the other a
                    conclusion (3+ words led by a quantifier: "No cats are pets."); or both are
                    conclusions whose polarity words differ ("All rats are not rats." for
                    "No ants are cats.")
    "wrong_token"   same number of words, only non-polarity words differ ("No owls are birds.")
    "malformed"     anything else: truncated ("Nothing" for "Some foxes are frogs."),
                    off-format ("Nothing follows." for "No"), a polarity word where the expected
                    answer has a content word, a difference in punctuation only
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

POLARITY_WORDS = frozenset({"yes", "no", "not", "all", "some", "none", "nothing", "never", "every"})
QUANTIFIERS = frozenset({"all", "some", "no", "none", "every"})
NO_CONCLUSION = ("nothing follows", "no conclusion")
ERROR_TYPES = ("empty", "wrong_polarity", "wrong_token", "malformed")
_PUNCT = ".,;:!?\"'()[]"
_METHOD = ("error types on words after normalize_answer; polarity words: "
           + ", ".join(sorted(POLARITY_WORDS)) + ", *n't; no-conclusion phrases: " + "; ".join(NO_CONCLUSION))


def _normalize(text: str) -> str:
    # Same rule as learnviz.extract.normalize_answer (which decides `correct`), kept here so this
    # module does not import the extraction stack (torch, transformers).
    return " ".join(text.split()).rstrip(".").strip().casefold()


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(_PUNCT) for t in _normalize(text).split()) if w]


def _is_polarity(word: str) -> bool:
    return word in POLARITY_WORDS or word.endswith("n't")


def _repeats(words: list[str]) -> set[tuple[str, ...]]:
    """Back-to-back repeated words and word pairs seen twice (the signs of a looping decoder)."""
    out = {(a,) for a, b in zip(words, words[1:]) if a == b}
    pairs = list(zip(words, words[1:]))
    seen: set[tuple[str, str]] = set()
    for p in pairs:
        if p in seen:
            out.add(p)
        seen.add(p)
    return out


def _no_conclusion(words: list[str]) -> bool:
    return " ".join(words) in NO_CONCLUSION


def _conclusion(words: list[str]) -> bool:
    return len(words) >= 3 and words[0] in QUANTIFIERS and not _no_conclusion(words)


def error_type(answer: str | None, expected: str) -> str | None:
    """The kind of error a greedy answer makes: None (right), "empty", "wrong_polarity",
    "wrong_token" or "malformed" (rules in the module docstring)."""
    answer = "" if answer is None else str(answer)
    if _normalize(answer) == _normalize(expected):
        return None
    a, e = _words(answer), _words(expected)
    if not a:
        return "empty"
    if _repeats(a) - _repeats(e):
        return "malformed"
    pol_a = [w for w in a if _is_polarity(w)]
    pol_e = [w for w in e if _is_polarity(w)]
    if [w for w in a if not _is_polarity(w)] == [w for w in e if not _is_polarity(w)]:
        # the content words match: the difference is in the polarity words, or only in punctuation
        return "wrong_polarity" if pol_a != pol_e else "malformed"
    if len(a) == len(e) and not (_no_conclusion(a) or _no_conclusion(e)):
        # word by word; a fixed no-conclusion phrase has no slots to compare ("Some reptiles.")
        diffs = [(x, y) for x, y in zip(a, e) if x != y]
        if any(_is_polarity(x) != _is_polarity(y) for x, y in diffs):
            return "malformed"  # a polarity word standing in for a content word, or vice versa
        if any(_is_polarity(x) for x, _ in diffs):
            return "wrong_polarity"
        return "wrong_token"
    if (_no_conclusion(e) and _conclusion(a)) or (_conclusion(e) and _no_conclusion(a)):
        return "wrong_polarity"
    if _conclusion(e) and _conclusion(a) and pol_a != pol_e:
        return "wrong_polarity"
    return "malformed"


@dataclass(frozen=True)
class HardExampleBoard:
    """Examples x checkpoints. m examples, k checkpoints, steps ascending.

    `correct`: (m, k) bool; `answers`, `error_types`: m lists of k (error type None where right);
    `first_right`: (m,) step of the first checkpoint that got it right, or None;
    `regressed`: (m,) bool, right at some checkpoint and wrong at a later one.
    """
    steps: list[int]
    ids: list[str]
    prompts: list[str]
    expected: list[str]
    categories: list[str]
    correct: np.ndarray
    answers: list[list[str]]
    error_types: list[list[str | None]]
    first_right: list[int | None]
    regressed: np.ndarray
    error_type_counts: list[dict[str, int]] = field(default_factory=list)  # per checkpoint: type -> examples
    method: str = _METHOD

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict: steps, per-checkpoint error counts, one entry per example
        with a row per checkpoint (the content of hard_example_board.json)."""
        examples = []
        for j, pid in enumerate(self.ids):
            rows = [{"step": s, "answer": a, "correct": c, "error_type": e}
                    for s, a, c, e in zip(self.steps, self.answers[j], self.correct[j].tolist(), self.error_types[j])]
            fr = self.first_right[j]
            examples.append({"id": pid, "prompt": self.prompts[j], "expected": self.expected[j],
                             "category": self.categories[j], "first_right": None if fr is None else int(fr),
                             "regressed": bool(self.regressed[j]), "rows": rows})
        return {"method": self.method, "steps": [int(s) for s in self.steps],
                "error_type_counts": [dict(c) for c in self.error_type_counts], "examples": examples}

    def to_json_text(self) -> str:
        """`to_json` as compact JSON text, the same document (a test holds them equal). A board of
        500 checkpoints has tens of thousands of cells, and the series stage writes it after every
        checkpoint: each example's row text is kept (`_ROW_TEXT`) with the cells it was made of,
        and the next board whose cells start with those same cells (the run one checkpoint
        longer) formats only the new ones."""
        dumps = json.dumps
        if len(_ROW_TEXT) > _ROW_TEXT_MAX:
            _ROW_TEXT.clear()
        quoted: dict[str, str] = {}
        examples = []
        for j, pid in enumerate(self.ids):
            cols = (self.steps, self.answers[j], self.correct[j].tolist(), self.error_types[j])
            prev = _ROW_TEXT.get(pid)
            n, text = 0, ""
            if prev is not None and len(prev[0][0]) <= len(self.steps) and all(
                    now[:len(before)] == before for now, before in zip(cols, prev[0])):
                n, text = len(prev[0][0]), prev[1]
            cells = []
            for s, a, c, e in zip(*(col[n:] for col in cols)):
                q = quoted.get(a)
                if q is None:
                    q = quoted[a] = dumps(a)
                cells.append('{"step":%d,"answer":%s,"correct":%s,"error_type":%s}'
                             % (s, q, "true" if c else "false", "null" if e is None else dumps(e)))
            if cells:
                text = (text + "," if text else "") + ",".join(cells)
            _ROW_TEXT[pid] = (cols, text)
            fr = self.first_right[j]
            head = dumps({"id": pid, "prompt": self.prompts[j], "expected": self.expected[j],
                          "category": self.categories[j], "first_right": None if fr is None else int(fr),
                          "regressed": bool(self.regressed[j])}, separators=(",", ":"))
            examples.append(head[:-1] + ',"rows":[' + text + "]}")
        head = dumps({"method": self.method, "steps": [int(s) for s in self.steps],
                      "error_type_counts": [dict(c) for c in self.error_type_counts]}, separators=(",", ":"))
        return head[:-1] + ',"examples":[' + ",".join(examples) + "]}"


# example id -> (its columns: steps, answers, correct, error types; their cells' JSON text), the
# last board's (HardExampleBoard.to_json_text)
_ROW_TEXT: dict[str, tuple[tuple[list, ...], str]] = {}
_ROW_TEXT_MAX = 10_000


def forget_row_text() -> None:
    """Drop the kept row texts (what a new process starts from)."""
    _ROW_TEXT.clear()


def _str_list(values, name: str, m: int) -> list[str]:
    out = ["" if v is None else str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else list(values))]
    if len(out) != m:
        raise ValueError(f"hard_example_board: {name} has {len(out)} entries for {m} examples")
    return out


def _cells(values, k: int, m: int, name: str) -> np.ndarray:
    """`values` (k checkpoints x m examples, lists or an array) as a (k, m) object array."""
    rows = values.tolist() if isinstance(values, np.ndarray) else [list(r) for r in values]
    if len(rows) != k or any(len(r) != m for r in rows):
        raise ValueError(f"hard_example_board: {name} must be {k} checkpoints x {m} examples")
    out = np.empty((k, m), dtype=object)
    if k and m:
        out[...] = rows
    return out


def cell_error(correct: bool, answer: str | None, expected: str) -> str | None:
    """One board cell's error type: None when the run marked the answer right (whatever its text,
    e.g. prefix matching), else `error_type`, and "malformed" where the texts agree after
    normalising (the run marked it wrong)."""
    if correct:
        return None
    return error_type("" if answer is None else str(answer), expected) or "malformed"


def hard_example_board(steps: Sequence[int] | np.ndarray, ids: Sequence[str] | np.ndarray,
                       prompts: Sequence[str], expected: Sequence[str], categories: Sequence[str],
                       correct: np.ndarray, answers: Sequence[Sequence[str]] | np.ndarray,
                       error_types: Sequence[Sequence[str | None]] | None = None) -> HardExampleBoard:
    """Build the board from per-checkpoint results.

    `steps`: (k,) int, one per checkpoint (any order; the board sorts them ascending);
    `ids`, `prompts`, `expected`, `categories`: (m,) per example; `correct`: (k, m) bool (as
    extracted); `answers`: (k, m) greedy answers. Error types come from `error_type`, except that
    an answer the run marked right is right (None) whatever its text (e.g. prefix matching), and
    one it marked wrong is never None ("malformed" if the texts agree after normalising): see
    `cell_error`. `error_types`: (k, m) the cells' `cell_error`, when the caller kept them (the
    series stage does, per checkpoint). Raises ValueError on shape mismatches or repeated steps.
    """
    step_list = [int(s) for s in np.asarray(steps).reshape(-1)]
    k = len(step_list)
    if len(set(step_list)) != k:
        raise ValueError(f"hard_example_board: repeated steps in {step_list}")
    id_list = _str_list(ids, "ids", len(ids))
    m = len(id_list)
    prompts_l = _str_list(prompts, "prompts", m)
    expected_l = _str_list(expected, "expected", m)
    categories_l = _str_list(categories, "categories", m)
    ok = np.asarray(correct)
    if ok.size == 0:
        ok = ok.reshape(k, m)
    if ok.shape != (k, m):
        raise ValueError(f"hard_example_board: correct has shape {ok.shape}, "
                         f"expected (checkpoints, examples) = {(k, m)}")
    if ok.dtype != bool:
        if ok.dtype.kind not in "iu" or not np.isin(ok, (0, 1)).all():
            raise ValueError("hard_example_board: correct must hold booleans")
        ok = ok.astype(bool)
    ans_rows = _cells(answers, k, m, "answers")
    order = sorted(range(k), key=lambda i: step_list[i])
    step_list = [step_list[i] for i in order]
    ok = ok[order].T.copy()                                   # (m, k)
    if not set(map(type, ans_rows.ravel().tolist())) <= {str}:
        ans_rows = np.asarray(["" if x is None else str(x) for x in ans_rows.ravel().tolist()],
                              dtype=object).reshape(k, m)
    ans = ans_rows[order].T.tolist()                          # m lists of k
    if error_types is not None:
        cells = _cells(error_types, k, m, "error_types")[order].T       # (m, k)
    else:
        cells = np.empty((m, k), dtype=object)
        if m and k:
            cells[...] = [[cell_error(ok[j, i], ans[j][i], expected_l[j]) for i in range(k)] for j in range(m)]
    errors = cells.tolist()

    first_right: list[int | None] = []
    regressed = np.zeros(m, dtype=bool)
    for j in range(m):
        hits = np.flatnonzero(ok[j])
        first_right.append(step_list[hits[0]] if len(hits) else None)
        regressed[j] = bool(len(hits)) and not ok[j, hits[0]:].all()
    per_type = np.stack([(cells == t).sum(axis=0) for t in ERROR_TYPES])     # (types, k)
    counts = [dict(zip(ERROR_TYPES, col)) for col in per_type.T.tolist()]     # per checkpoint
    return HardExampleBoard(steps=step_list, ids=id_list, prompts=prompts_l, expected=expected_l,
                            categories=categories_l, correct=ok, answers=ans, error_types=errors,
                            first_right=first_right, regressed=regressed, error_type_counts=counts)
