"""data_log.jsonl: written by append, read back, bad rows reported (file, line, field) and skipped,
summed per interval between checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from learnviz import datalog


def test_append_read_and_interval_mix(tmp_path):
    datalog.append(tmp_path, 10, {"easy": 30, "hard": 0})
    datalog.append(tmp_path, 20, {"easy": 20, "hard": 12})
    datalog.append(tmp_path, 20, {"hard": 3})          # same step again: adds up
    datalog.append(tmp_path, 35, {"web": 7})
    log = datalog.read(datalog.log_path(tmp_path))
    assert log.problems == [] and len(log) == 5
    assert log.source_names == ["easy", "hard", "web"]
    names, mix = datalog.interval_mix(log, [5, 20, 40])
    assert names == ["easy", "hard", "web"]
    assert mix.tolist() == [[50, 15, 0], [0, 0, 7]]      # (5, 20] and (20, 40]
    names, mix = datalog.interval_mix(log, [10, 20])       # rows at the first checkpoint fall in no interval
    assert mix.tolist() == [[20, 15, 0]]


def test_bad_rows_are_reported_with_file_line_and_field_and_skipped(tmp_path):
    path = datalog.log_path(tmp_path)
    path.write_text('{"step": 10, "source": "a", "examples": 5}\n'
                    'not json\n'
                    '{"step": "12", "source": "a", "examples": 5}\n'
                    '{"step": 14, "source": "", "examples": 5}\n'
                    '{"step": 16, "source": "a", "examples": -1}\n'
                    '{"step": 18, "source": "a"}\n'
                    '[1, 2]\n'
                    '\n'
                    '{"step": 20, "source": "b", "examples": 2}\n')
    log = datalog.read(path)
    assert log.steps.tolist() == [10, 20] and log.sources == ["a", "b"] and log.examples.tolist() == [5, 2]
    assert [(p.line, p.field) for p in log.problems] == [(2, ""), (3, "step"), (4, "source"), (5, "examples"),
                                                        (6, "examples"), (7, "")]
    text = str(log.problems[1])
    assert str(path) in text and "line 3" in text and "'step'" in text and "skipped" in text


def test_append_refuses_bad_values_and_finds_the_log(tmp_path):
    with pytest.raises(ValueError, match="step"):
        datalog.append(tmp_path, -1, {"a": 1})
    with pytest.raises(ValueError, match="examples"):
        datalog.append(tmp_path, 1, {"a": 1.5})
    datalog.append(tmp_path, 1, {"a": 0})             # nothing to write: no file
    assert datalog.find([None, tmp_path]) is None
    datalog.append(tmp_path / "run", 1, {"a": np.int64(2)})
    assert datalog.find([tmp_path, tmp_path / "run"]) == tmp_path / "run" / datalog.FILE_NAME


def _same(a, b):
    return (a.steps.tolist(), a.sources, a.examples.tolist(), a.source_names,
            [(p.line, p.field) for p in a.problems]) == \
        (b.steps.tolist(), b.sources, b.examples.tolist(), b.source_names, [(p.line, p.field) for p in b.problems])


def test_a_second_read_parses_only_what_was_appended_and_equals_a_fresh_read(tmp_path, monkeypatch):
    """The planning of every checkpoint reads the data log, which grows by a row per logging step:
    a process reads each line once. What it returns equals a whole read, line numbers of the bad
    rows included; a half-written last line is read but not kept; a file rewritten is read anew."""
    path = datalog.log_path(tmp_path)
    datalog.append(tmp_path, 10, {"a": 3, "b": 1})
    first = datalog.read(path)
    with open(path, "a") as fh:
        fh.write('oops\n{"step": 20, "source": "c", "examples": 4}\n{"step": 30, "sou')   # a line being written
    parsed = []
    real = datalog._parse_lines
    monkeypatch.setattr(datalog, "_parse_lines", lambda p, data, *a: parsed.append(data) or real(p, data, *a))
    again = datalog.read(path)
    assert b"a" not in b"".join(parsed).split(b"oops")[0]       # the first rows were not parsed again
    datalog._parsed.clear()
    whole = datalog.read(path)
    assert _same(again, whole) and again.sources == ["a", "b", "c"] and [p.line for p in again.problems] == [3, 5]
    with open(path, "a") as fh:
        fh.write('rce": "a", "examples": 6}\n')
    datalog.read(path)
    assert datalog.read(path).examples.tolist() == [3, 1, 4, 6]
    names, mix = datalog.interval_mix(datalog.read(path), [5, 20, 30])
    assert names == ["a", "b", "c"] and mix.tolist() == [[3, 1, 4], [6, 0, 0]]
    path.write_text('{"step": 10, "source": "z", "examples": 9}\n')     # rewritten, shorter
    assert datalog.read(path).sources == ["z"] and len(first) == 2
