import json

from learnviz import history


def test_rows_merge_per_step_in_order(tmp_path):
    history.append(tmp_path, {"step": 20, "accuracy": 0.5, "probe_hash": "a"})
    history.append(tmp_path, {"step": 10, "accuracy": 0.1, "probe_hash": "a"})
    history.append(tmp_path, {"step": 20, "geometry_drift": 0.3, "probe_hash": "a"})
    history.append(tmp_path, {"step": 20, "accuracy": 0.6, "probe_hash": "a"})    # a recomputation
    history.append(tmp_path, {"step": 30, "accuracy": 0.9, "probe_hash": "other"})
    rows = history.read(tmp_path, probe_hash="a")
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[1]["accuracy"] == 0.6 and rows[1]["geometry_drift"] == 0.3
    assert len(history.read(tmp_path)) == 3


def test_torn_last_line_is_skipped_then_healed(tmp_path):
    history.append(tmp_path, {"step": 1, "accuracy": 0.1})
    with open(history.history_path(tmp_path), "a") as fh:
        fh.write('{"step": 2, "accur')                   # a writer killed mid-line
    assert [r["step"] for r in history.read(tmp_path)] == [1]
    history.append(tmp_path, {"step": 3, "accuracy": float("nan")})
    rows = history.read(tmp_path)
    assert [r["step"] for r in rows] == [1, 3] and rows[1]["accuracy"] is None
    assert history.history_path(tmp_path).read_text().count("\n") == 3


def test_rereads_parse_appended_rows_and_notice_a_rewritten_file(tmp_path):
    path = history.history_path(tmp_path)
    history.append(tmp_path, {"step": 10, "accuracy": 0.1})
    assert [r["step"] for r in history.read_rows(tmp_path)] == [10]
    history.append(tmp_path, {"step": 20, "accuracy": 0.2})
    with open(path, "ab") as fh:                      # a writer mid-line: not a row yet
        fh.write(b'{"step": 30, "accu')
    assert [r["step"] for r in history.read_rows(tmp_path)] == [10, 20]
    with open(path, "ab") as fh:                      # ... and the line completed
        fh.write(b'racy": 0.3}\n')
    assert [r.get("accuracy") for r in history.read_rows(tmp_path)] == [0.1, 0.2, 0.3]
    # rewritten in place (same file, longer, other rows): parsed whole again, never mixed
    path.write_text("".join(json.dumps({"step": s, "accuracy": 1.0}) + "\n" for s in (5, 6, 7, 8)))
    assert [(r["step"], r["accuracy"]) for r in history.read_rows(tmp_path)] == [(5, 1.0), (6, 1.0), (7, 1.0),
                                                                                   (8, 1.0)]
    path.write_text(json.dumps({"step": 1}) + "\n")   # shorter
    assert [r["step"] for r in history.read_rows(tmp_path)] == [1]


def test_merged_rows_follow_appends_and_rewrites_and_are_the_callers_own(tmp_path):
    """`read` merges only what was appended since its last call: the result must equal a merge
    of the whole file at every point, a caller changing its rows changes nothing kept, and a
    file replaced by another is merged anew."""
    from learnviz import archive as arc

    def fresh(probe_hash=None):
        arc.clear_memo()          # forgets what history kept: a new process's read
        return history.read(tmp_path, probe_hash)

    history.append(tmp_path, {"step": 20, "accuracy": 0.5, "probe_hash": "a"})
    history.append(tmp_path, {"step": 10, "accuracy": 0.1, "probe_hash": "a"})
    first = history.read(tmp_path, "a")
    assert [(r["step"], r["accuracy"]) for r in first] == [(10, 0.1), (20, 0.5)]
    first[1]["accuracy"] = 99.0                                   # the caller's copy
    history.append(tmp_path, {"step": 20, "geometry_drift": 0.3, "probe_hash": "a"})
    history.append(tmp_path, {"step": 30, "accuracy": 0.9, "probe_hash": "other"})
    history.append(tmp_path, {"step": 10, "accuracy": 0.2})       # no probe hash: every probe set's
    kept_a, kept_all = history.read(tmp_path, "a"), history.read(tmp_path)
    assert kept_a == [{"step": 10, "accuracy": 0.2, "probe_hash": "a"},
                      {"step": 20, "accuracy": 0.5, "probe_hash": "a", "geometry_drift": 0.3}]
    assert kept_a == fresh("a") and kept_all == fresh() and [r["step"] for r in kept_all] == [10, 20, 30]
    history.read(tmp_path, "a")
    path = history.history_path(tmp_path)
    tmp = tmp_path / "other.jsonl"
    tmp.write_text(json.dumps({"step": 40, "accuracy": 0.4, "probe_hash": "a"}) + "\n")
    tmp.replace(path)                                             # another file in its place
    assert history.read(tmp_path, "a") == [{"step": 40, "accuracy": 0.4, "probe_hash": "a"}]


def test_rows_having_keys_are_the_rows_that_hold_them(tmp_path):
    """read_rows_having parses only the lines that spell a key: it must return exactly the rows of
    read_rows that hold one, once each, in file order (a key as a value is not a key)."""
    rows = [{"step": 1, "accuracy": 0.1},
            {"step": 2, "health_flags": {"accuracy_drop": "z -6"}, "deployed": "checkpoint-1"},   # both keys
            {"step": 3, "note": "health_flags"},                                               # a value only
            {"step": 4, "ränking": "ü", "health_flags": {}},
            {"step": 5, "deployed": "checkpoint-4"}]
    for r in rows:
        history.append(tmp_path, r)
    with open(history.history_path(tmp_path), "a") as fh:
        fh.write('{"step": 6, "health_flags": {"x"')                # torn: not a row
    keys = ("health_flags", "deployed")
    want = [r for r in history.read_rows(tmp_path) if any(k in r for k in keys)]
    assert [r["step"] for r in want] == [2, 4, 5]
    assert history.read_rows_having(tmp_path, keys) == want
    assert history.read_rows_having(tmp_path, ("deployed",)) == [rows[1], rows[4]]
    assert history.read_rows_having(tmp_path, ()) == [] and history.read_rows_having(tmp_path / "none", keys) == []
    # a process searches only what was appended since: the torn line completed, rows added, and a
    # file rewritten in place (the same inode, other bytes) is searched whole again
    path = history.history_path(tmp_path)
    with open(path, "a") as fh:
        fh.write(': "y"}}\n')
    history.append(tmp_path, {"step": 7, "deployed": "checkpoint-6"})
    history.append(tmp_path, {"step": 8, "accuracy": 0.8})

    def fresh():
        return [r for r in history.read_rows(tmp_path) if any(k in r for k in keys)]
    assert [r["step"] for r in history.read_rows_having(tmp_path, keys)] == [2, 4, 5, 6, 7]
    assert history.read_rows_having(tmp_path, keys) == fresh()
    text = path.read_text().replace('"accuracy": 0.8', '"deployed": "checkpoint-X"')
    path.write_text(text + json.dumps({"step": 9, "health_flags": {}}) + "\n")
    assert [r["step"] for r in history.read_rows_having(tmp_path, keys)] == [2, 4, 5, 6, 7, 8, 9]
    assert history.read_rows_having(tmp_path, keys) == fresh()
