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
