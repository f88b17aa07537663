"""error_type and the hard-example board, by hand and on the real demo archive."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learnviz.analysis.hard_examples import HardExampleBoard, error_type, hard_example_board


@pytest.mark.parametrize("answer, expected, want", [
    # right: case, surrounding whitespace and a final period do not count
    ("No owls are fish.", "No owls are fish.", None),
    ("  no owls are FISH ", "No owls are fish.", None),
    ("nothing follows", "Nothing follows.", None),
    # the demo-task examples of the brief
    ("All owls are fish.", "No owls are fish.", "wrong_polarity"),
    ("No owls are birds.", "No owls are fish.", "wrong_token"),
    ("All All All", "No owls are fish.", "malformed"),
    ("No cats are pets.", "Nothing follows.", "wrong_polarity"),
    # more polarity: yes/no, an inserted or dropped "not", conclusion for nothing-follows and back
    ("Yes", "No", "wrong_polarity"),
    ("Some bees are mammals.", "Some bees are not mammals.", "wrong_polarity"),
    ("Some bees are not mammals.", "Some bees are mammals.", "wrong_polarity"),
    ("Nothing follows.", "All cats are animals.", "wrong_polarity"),
    ("All owls are birds.", "No owls are fish.", "wrong_polarity"),        # polarity and a token
    ("All rats are not rats.", "No ants are cats.", "wrong_polarity"),     # both conclusions
    # tokens only
    ("Some sharks are not wolves.", "Some sharks are not spiders.", "wrong_token"),
    ("No lions are lions.", "No lions are fish.", "wrong_token"),
    # empty
    ("", "No owls are fish.", "empty"),
    ("   ", "Nothing follows.", "empty"),
    (None, "Yes", "empty"),
    (" . ", "Yes", "empty"),
    # malformed: repetition, truncation, off-format, polarity word in a content slot, punctuation
    ("Nothing Nothing follows.", "Nothing follows.", "malformed"),
    ("No lions are lions are bats", "No lions are bats.", "malformed"),
    ("are not rats are not rats are not bears are", "Yes", "malformed"),
    ("All cats are", "All cats are animals.", "malformed"),
    ("Nothing", "Some foxes are frogs.", "malformed"),
    ("Nothing follows.", "No", "malformed"),
    ("are not.", "No", "malformed"),
    ("Some reptiles.", "Nothing follows.", "malformed"),
    ("No owls are not", "No owls are fish.", "malformed"),
    ("No owls are fish!", "No owls are fish.", "malformed"),
])
def test_error_type_by_hand(answer, expected, want):
    assert error_type(answer, expected) == want


def test_normalisation_agrees_with_extract():
    from learnviz.extract import answers_match
    pairs = [("  no owls are FISH ", "No owls are fish."), ("No  owls are fish..", "No owls are fish"),
             ("No owls are fish!", "No owls are fish."), ("Nothing", "Nothing follows.")]
    for a, e in pairs:
        assert (error_type(a, e) is None) == answers_match(a, e)


def _board():
    # 3 checkpoints given out of order (30, 10, 20), 4 examples; rows are checkpoints
    steps = [30, 10, 20]
    expected = ["No owls are fish.", "Nothing follows.", "Yes", "All cats are animals."]
    answers = [["No owls are fish.", "No cats are pets.", "Yes", "All cats are"],           # step 30
               ["All owls are fish.", "Nothing follows.", "No", "All All All"],            # step 10
               ["No owls are birds.", "nothing follows", "Yes", ""]]                       # step 20
    correct = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0]], dtype=bool)
    return hard_example_board(steps, ["a", "b", "c", "d"], ["pa", "pb", "pc", "pd"], expected,
                              ["neg", "trap", "yn", "chain"], correct, answers)


def test_board_by_hand():
    b = _board()
    assert b.steps == [10, 20, 30]
    assert b.correct.shape == (4, 3)
    assert b.correct.tolist() == [[False, False, True], [True, True, False], [False, True, True], [False, False, False]]
    assert b.answers[0] == ["All owls are fish.", "No owls are birds.", "No owls are fish."]
    assert b.error_types == [["wrong_polarity", "wrong_token", None],
                             [None, None, "wrong_polarity"],
                             ["wrong_polarity", None, None],
                             ["malformed", "empty", "malformed"]]
    assert b.first_right == [30, 10, 20, None]
    assert b.regressed.tolist() == [False, True, False, False]
    assert b.error_type_counts[0] == {"empty": 0, "wrong_polarity": 2, "wrong_token": 0, "malformed": 1}
    assert b.error_type_counts[2] == {"empty": 0, "wrong_polarity": 1, "wrong_token": 0, "malformed": 1}


def test_board_json_round_trip():
    b = _board()
    doc = json.loads(json.dumps(b.to_json()))
    assert doc["steps"] == [10, 20, 30]
    assert [e["id"] for e in doc["examples"]] == ["a", "b", "c", "d"]
    b_ex = doc["examples"][1]
    assert b_ex["first_right"] == 10 and b_ex["regressed"] is True and b_ex["category"] == "trap"
    assert b_ex["rows"][2] == {"step": 30, "answer": "No cats are pets.", "correct": False,
                               "error_type": "wrong_polarity"}
    assert doc["examples"][3]["first_right"] is None
    assert "polarity" in doc["method"]


def test_board_text_equals_its_json_as_the_run_grows_and_changes():
    """to_json_text keeps each example's row text and formats only new cells: a board one
    checkpoint longer, one with a cell changed in the middle, one with a checkpoint inserted
    before the others and one given with codes as an array must still read as to_json says."""
    from learnviz.analysis import hard_examples as he
    he.forget_row_text()
    ids, prompts, expected, cats = ["a", "b"], ["p \"q\"", "r"], ["Yes", "No"], ["c", "d"]

    def board(steps, correct, answers, **kw):
        return hard_example_board(steps, ids, prompts, expected, cats, np.asarray(correct, dtype=bool), answers, **kw)

    boards = [board([10, 20], [[0, 1], [1, 1]], [["No", "No"], ["Yes", "No"]]),
              board([10, 20, 30], [[0, 1], [1, 1], [1, 0]], [["No", "No"], ["Yes", "No"], ["Yes", "Ünï \u2028"]]),
              board([10, 20, 30], [[0, 1], [0, 1], [1, 0]], [["No", "No"], ["Maybe", "No"], ["Yes", "Ünï \u2028"]]),
              board([5, 10, 20, 30], [[1, 1], [0, 1], [0, 1], [1, 0]],
                    [["Yes", "No"], ["No", "No"], ["Maybe", "No"], ["Yes", "Ünï \u2028"]]),
              board([5, 10], [[1, 1], [0, 0]], [["Yes", "No"], ["No", "Yes"]],
                    error_types=np.array([[None, None], ["wrong_polarity", "malformed"]], dtype=object))]
    for b in boards:
        assert json.loads(b.to_json_text()) == json.loads(json.dumps(b.to_json()))
    last = json.loads(boards[2].to_json_text())
    assert [r["answer"] for r in last["examples"][0]["rows"]] == ["No", "Maybe", "Yes"]
    assert last["examples"][0]["rows"][1]["error_type"] == "malformed"
    assert boards[4].error_type_counts == [dict.fromkeys(he.ERROR_TYPES, 0),
                                           {"empty": 0, "wrong_polarity": 1, "wrong_token": 0, "malformed": 1}]


def test_run_verdict_wins_over_text():
    # prefix matching marked a longer answer right; an answer marked wrong is never "right"
    b = hard_example_board([5], ["x", "y"], ["p", "q"], ["No", "Yes"], ["c", "c"],
                           np.array([[True, False]]), [["No owls", "Yes"]])
    assert b.error_types == [[None], ["malformed"]]


def test_edge_cases():
    one = hard_example_board([7], ["x"], ["p"], ["Yes"], ["c"], np.array([[False]]), [["No"]])
    assert one.first_right == [None] and one.regressed.tolist() == [False] and one.steps == [7]
    none = hard_example_board([], ["x"], ["p"], ["Yes"], ["c"], np.zeros((0, 1), bool), [])
    assert none.correct.shape == (1, 0) and none.first_right == [None] and none.error_types == [[]]
    empty = hard_example_board([1, 2], [], [], [], [], np.zeros((2, 0), bool), [[], []])
    assert isinstance(empty, HardExampleBoard) and empty.to_json()["examples"] == []


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        hard_example_board([1, 2], ["x"], ["p"], ["Yes"], ["c"], np.zeros((1, 2), bool), [["a"], ["b"]])
    with pytest.raises(ValueError, match="repeated steps"):
        hard_example_board([1, 1], ["x"], ["p"], ["Yes"], ["c"], np.zeros((2, 1), bool), [["a"], ["b"]])
    with pytest.raises(ValueError, match="expected has 2 entries"):
        hard_example_board([1], ["x"], ["p"], ["Yes", "No"], ["c"], np.zeros((1, 1), bool), [["a"]])
    with pytest.raises(ValueError, match="answers"):
        hard_example_board([1], ["x"], ["p"], ["Yes"], ["c"], np.zeros((1, 1), bool), [["a", "b"]])
    with pytest.raises(ValueError, match="booleans"):
        hard_example_board([1], ["x"], ["p"], ["Yes"], ["c"], np.array([[0.5]]), [["a"]])


def test_demo_archive_board(demo):
    from learnviz.archive import list_archives
    archives = list_archives(demo.archive_dir())
    meta = archives[0].read("extract", ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
    hard = np.flatnonzero(meta["probe_skill"] == "hard_examples")
    assert len(hard) > 0
    runs = [a.read("extract", ["correct", "greedy_answer"]) for a in archives]
    b = hard_example_board([a.step for a in archives], meta["probe_ids"][hard], meta["prompt"][hard],
                           meta["expected"][hard], meta["probe_category"][hard],
                           np.stack([r["correct"][hard] for r in runs]),
                           [[r["greedy_answer"][j] for j in hard] for r in runs])
    first = b.steps[0]
    learned = [j for j, s in enumerate(b.first_right) if s is not None and s != first]
    assert learned, "no hard example went from wrong to right"
    for j in learned:
        i = b.steps.index(b.first_right[j])
        assert not b.correct[j, :i].any() and b.correct[j, i]
        assert b.error_types[j][i] is None and all(t is not None for t in b.error_types[j][:i])
    # right/wrong on the board is the run's verdict; every wrong answer has a type
    assert all((t is None) == bool(c) for row, crow in zip(b.error_types, b.correct) for t, c in zip(row, crow))
    json.dumps(b.to_json())
