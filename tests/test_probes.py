import json

import pytest

from learnviz.errors import ProbeError
from learnviz.probes import HARD_EXAMPLES_SKILL, ProbeSet, generate_syllo_probes, load_probe_set, read_probe_file
from learnviz.settings import SHIPPED_CONFIG_DIR
from learnviz.syllo import solve

SKILLS = ["syllo_easy", "syllo_medium", "syllo_hard", "edge_cases", "training_mix"]


def test_syllo_set_is_500_fixed_probes():
    probes = generate_syllo_probes()
    assert len(probes) == 500
    assert [sum(p.skill == s for p in probes) for s in SKILLS] == [100] * 5
    assert len({p.id for p in probes}) == 500 and len({p.prompt for p in probes}) == 500
    assert generate_syllo_probes() == probes  # deterministic
    edge = {p.category for p in probes if p.skill == "edge_cases"}
    assert edge == {"negation", "double_negation", "quantifier"}


def test_shipped_probe_file_is_the_generated_set():
    shipped = read_probe_file(SHIPPED_CONFIG_DIR / "probes.jsonl")
    assert shipped == generate_syllo_probes(), "regenerate: learnviz probes --write-syllo config/probes.jsonl"


def test_every_expected_answer_is_logically_right():
    ps = load_probe_set(SHIPPED_CONFIG_DIR / "probes.jsonl", SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    checked = 0
    for p in ps:
        answer = solve(p.prompt)
        if answer is None:
            assert p.skill == HARD_EXAMPLES_SKILL, p.id  # only the plan's plain-English examples
            continue
        assert answer == p.expected, p.id
        checked += 1
    assert checked >= 520


def test_hard_examples_file_has_the_plan_examples_and_20_more():
    examples = read_probe_file(SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    ids = {e.id for e in examples}
    assert {"negation_trap_1", "double_neg_1"} <= ids and len(examples) >= 22
    plan = next(e for e in examples if e.id == "negation_trap_1")
    assert plan.prompt == "No cats are dogs. All dogs bark. Do cats bark?" and plan.expected == "No"
    assert all(e.category for e in examples)


def test_probe_set_joins_hard_examples_and_hashes(tmp_path):
    ps = load_probe_set(SHIPPED_CONFIG_DIR / "probes.jsonl", SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    assert len(ps) == 500 + len(read_probe_file(SHIPPED_CONFIG_DIR / "hard_examples.yaml"))
    assert ps.skills[-1] == HARD_EXAMPLES_SKILL
    same = load_probe_set(SHIPPED_CONFIG_DIR / "probes.jsonl", SHIPPED_CONFIG_DIR / "hard_examples.yaml")
    assert same.hash == ps.hash
    reordered = ProbeSet(tuple(reversed(ps.probes)))
    assert reordered.hash != ps.hash  # arrays follow probe order, so order is part of the identity
    assert ps.subset(10).hash != ps.hash


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".yaml"])
def test_user_probe_files_in_each_format(tmp_path, suffix):
    rows = [{"id": "a", "prompt": "2+2=", "expected": 4, "skill": "math"},
            {"id": "b", "prompt": "Capital of France?", "expected": "Paris"}]
    path = tmp_path / f"p{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    elif suffix == ".json":
        path.write_text(json.dumps({"probes": rows}))
    else:
        import yaml
        path.write_text(yaml.safe_dump(rows))
    probes = read_probe_file(path)
    assert [p.id for p in probes] == ["a", "b"]
    assert probes[0].expected == "4" and probes[0].skill == "math" and probes[1].skill == "default"


def _error(path) -> str:
    with pytest.raises(ProbeError) as err:
        read_probe_file(path)
    return str(err.value)


def test_malformed_jsonl_names_file_line_and_field(tmp_path):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "expected": "x"}\n'
                    '{"id": "b", "prompt": "p"}\n')
    msg = _error(path)
    assert str(path) in msg and "line 2" in msg and "'expected'" in msg
    path.write_text('{"id": "a", "prompt": "p", "expected": "x"}\n{"id": "b", "prompt": "", "expected": "y"}\n')
    msg = _error(path)
    assert "line 2" in msg and "'prompt'" in msg
    path.write_text('{"id": "a", "prompt": "p", "expected": "x"}\n{"id": "b", "prompt": "p", "expected": "x",}\n')
    msg = _error(path)
    assert "line 2" in msg and "JSON" in msg
    path.write_text('{"id": "a", "prompt": "p", "expcted": "x"}\n')
    msg = _error(path)
    assert "line 1" in msg and "'expcted'" in msg


def test_malformed_yaml_names_line_and_field(tmp_path):
    path = tmp_path / "hard.yaml"
    path.write_text("examples:\n  - id: a\n    prompt: p\n    expected: x\n"
                    "  - id: b\n    prompt: [1, 2]\n    expected: y\n")
    msg = _error(path)
    assert str(path) in msg and "line 5" in msg and "'prompt'" in msg


def test_duplicate_ids_and_empty_files(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "expected": "x"}\n{"id": "a", "prompt": "q", "expected": "y"}\n')
    assert "duplicate id 'a'" in _error(path)
    path.write_text("\n")
    assert "no probes" in _error(path)
    (tmp_path / "p.csv").write_text("id,prompt\n")
    assert "unknown probe file type" in _error(tmp_path / "p.csv")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".yaml"])
def test_a_utf8_byte_order_mark_is_read_past(tmp_path, suffix):
    """Notepad saves UTF-8 with a BOM: the JSONL and JSON readers refused it ("Unexpected UTF-8 BOM
    (decode using utf-8-sig)"), the YAML reader did not."""
    entry = {"id": "a", "prompt": "All cats are", "expected": "dogs"}
    text = {".jsonl": json.dumps(entry) + "\r\n", ".json": json.dumps([entry]),
            ".yaml": "- id: a\n  prompt: All cats are\n  expected: dogs\n"}[suffix]
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (probe,) = read_probe_file(path)
    assert (probe.id, probe.prompt, probe.expected) == ("a", "All cats are", "dogs")


@pytest.mark.parametrize("suffix, where", [(".jsonl", "line 4 field 'id': duplicate id 'a' (first at line 1)"),
                                           (".yaml", "line 7 field 'id': duplicate id 'a' (first at line 1)"),
                                           (".json", "field 'id': entry 3: duplicate id 'a' (first at entry 1)")])
def test_a_duplicate_id_names_its_line(tmp_path, suffix, where):
    """The duplicate-id error named no line (only 'first at entry 1'), unlike every other error."""
    entries = [{"id": i, "prompt": "p", "expected": "x"} for i in ("a", "b", "a")]
    text = {".jsonl": json.dumps(entries[0]) + "\n" + json.dumps(entries[1]) + "\n\n" + json.dumps(entries[2]) + "\n",
            ".json": json.dumps(entries),
            ".yaml": "".join(f"- id: {e['id']}\n  prompt: p\n  expected: x\n" for e in entries)}[suffix]
    path = tmp_path / f"dup{suffix}"
    path.write_text(text)
    with pytest.raises(ProbeError) as err:
        read_probe_file(path)
    assert f"{path} {where}" in str(err.value)


@pytest.mark.parametrize("layout", ["one line", "pretty"])
def test_a_json_array_in_a_jsonl_file_is_named_as_such(tmp_path, layout):
    """A .jsonl file holding one JSON array said 'expected a mapping ..., got list' (one line) or
    'not valid JSON: Expecting value (column 2)' (pretty-printed), neither saying what was wrong."""
    entries = [{"id": i, "prompt": "p", "expected": "x"} for i in ("a", "b")]
    path = tmp_path / "array.jsonl"
    path.write_text("\n" + (json.dumps(entries) if layout == "one line" else json.dumps(entries, indent=2)) + "\n")
    with pytest.raises(ProbeError) as err:
        read_probe_file(path)
    assert f"{path} line 2: a JSON array where JSON Lines needs one probe object per line" in str(err.value)
    assert "name the file .json" in str(err.value)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
def test_a_non_finite_number_is_no_answer(tmp_path, value):
    """JSON's NaN and a number past float range were read as the answers "nan" and "inf"."""
    path = tmp_path / "nan.jsonl"
    path.write_text('{"id": "a", "prompt": "2+2=", "expected": 4}\n'
                    '{"id": "b", "prompt": "p", "expected": %s}\n' % value)
    with pytest.raises(ProbeError) as err:
        read_probe_file(path)
    assert f"{path} line 2 field 'expected': must be a non-empty string" in str(err.value)


def test_write_syllo_keeps_a_users_own_probe_file_unless_forced(tmp_path, capsys):
    """`learnviz probes --write-syllo FILE` overwrote FILE whatever it held: a user's own probe set
    (whose hash keys every archive's results) was gone without a word. Now another set is kept,
    with an error naming the file and flag, --force replaces it, and the SYLLO set already there is
    left as it is."""
    from learnviz import cli
    own = tmp_path / "probes.jsonl"
    mine = '{"id": "p1", "prompt": "2+2=", "expected": "4", "skill": "math"}\n'
    own.write_text(mine)
    assert cli.main(["probes", "--write-syllo", str(own)]) == 2
    err = capsys.readouterr().err
    assert str(own) in err and "--write-syllo" in err and "--force" in err
    assert own.read_text() == mine
    assert cli.main(["probes", "--write-syllo", str(own), "--force"]) == 0
    assert read_probe_file(own) == generate_syllo_probes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes.jsonl"]      # no temporary file left
    capsys.readouterr()
    assert cli.main(["probes", "--write-syllo", str(own)]) == 0
    assert "already holds the 500 SYLLO probes" in capsys.readouterr().out
    assert cli.main(["probes", "--write-syllo", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
