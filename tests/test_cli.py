import json
import shlex
import subprocess
import sys

import pytest

from learnviz.cli import build_parser

CLI = [sys.executable, "-m", "learnviz.cli"]


COMMANDS = ["demo", "run", "analyze", "status", "probes", "config", "radar", "embed", "hard-examples", "visualize",
            "export", "serve", "worker", "beat", "submit"]


def _subparser(parser, command):
    return next(a for a in parser._actions if a.dest == "command").choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    """Each command says what it does, explains every flag, and shows examples that parse."""
    parser = build_parser()
    sub = _subparser(parser, command)
    assert len(sub.description or "") > 80, "a description of what the command does"
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, f"{command} {action.option_strings} has no help"
        assert all(o in text for o in action.option_strings)
    assert "Examples:" in text, f"`learnviz {command} --help` shows no example"
    examples = [line.strip() for line in text.split("Examples:", 1)[1].splitlines()
                if line.strip().startswith("learnviz ")]
    assert examples, text
    for line in examples:
        argv = shlex.split(line)[1:]
        args = parser.parse_args(argv)          # an example that no longer parses fails here
        assert args.command == command, line
    out = subprocess.run(CLI + [command, "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"usage: learnviz {command}") and "Examples:" in out


def test_malformed_probe_file_error_names_file_line_field(tmp_path, ckpt_root):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"id": "q1", "prompt": "2+2=", "expected": "4"}\n{"id": "q2", "expected": "5"}\n')
    out = subprocess.run(CLI + ["run", "--checkpoints", str(ckpt_root), "--probes", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "line 2" in out.stderr and "'prompt'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (ckpt_root / "learnviz-archive").exists()   # nothing written, nothing lost


def test_user_probe_file_runs(tmp_path, ckpt_root):
    mine = tmp_path / "mine.yaml"
    mine.write_text("- {id: q1, prompt: 'All cats are dogs. What follows about cats and dogs?', "
                    "expected: 'All cats are dogs.'}\n")
    out = subprocess.run(CLI + ["-q", "run", "--checkpoints", str(ckpt_root), "--probes", str(mine),
                                "--hard-examples", "", "--settle-seconds", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "3 archived" in out.stdout
    status = subprocess.run(CLI + ["status", "--checkpoints", str(ckpt_root)], capture_output=True, text=True).stdout
    assert "default" in status and status.count("extract:ok") == 3


def test_bad_setting_flag_and_env(tmp_path):
    out = subprocess.run(CLI + ["config"], capture_output=True, text=True, env={"LEARNVIZ_LAYRES": "1", "PATH": ""})
    assert out.returncode == 2 and "LEARNVIZ_LAYRES" in out.stderr and "layers" in out.stderr


def test_config_shows_where_each_value_comes_from(tmp_path):
    """`learnviz config`: a value that is the default says so, even where a file restates it (the
    shipped file lists every default, so every row read as that file); the others name their source;
    the columns line up past the longest key (they broke at 18 characters)."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("batch_size: 8\nmax_length: 512\n")
    out = subprocess.run(CLI + ["--config", str(mine), "config"], capture_output=True, text=True, cwd=tmp_path,
                         env={"LEARNVIZ_HEALTH_Z": "4.5", "PATH": ""})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"settings file: {mine}"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["batch_size"].split()[1:] == ["8", f"({mine})"]
    assert rows["max_length"].split()[1:] == ["512", "(default)"]
    assert rows["health_z"].split()[1:] == ["4.5", "(environment)"]
    assert rows["dashboard_allowed_hosts"].split()[1:] == ["[]", "(default)"]
    assert len({line.rindex("(") for line in lines[1:]}) == 1, "the source column lines up"


def test_status_of_a_missing_checkpoint_folder_is_an_error(tmp_path):
    """A mistyped --checkpoints used to print "no archives in .../learnviz-archive" and exit 0."""
    missing = tmp_path / "no-such-run"
    out = subprocess.run(CLI + ["status", "--checkpoints", str(missing)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{missing} field 'checkpoints': no such folder" in out.stderr


def test_the_demo_refuses_more_checkpoints_than_steps(tmp_path):
    """It wrote 3 checkpoints, said nothing of the 7 others and named a planted fault in one it
    never wrote."""
    out = subprocess.run(CLI + ["demo", "--steps", "3", "--checkpoints-count", "10", "--out", str(tmp_path / "d"),
                                "--no-serve"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "field '--checkpoints-count': 10 checkpoints of a run of 3 training steps" in out.stderr
    assert not (tmp_path / "d").exists()
    out = subprocess.run(CLI + ["demo", "--steps", "0", "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert out.returncode == 2 and "field '--steps': must be at least 1, got 0" in out.stderr   # the flag typed


def test_a_closed_pipe_ends_quietly(tmp_path, ckpt_root):
    """`learnviz status | head -c 1`: no BrokenPipeError traceback."""
    script = (f"{shlex.join(CLI)} status --all --checkpoints {shlex.quote(str(ckpt_root))} "
              f"--archive {shlex.quote(str(tmp_path / 'a'))} | head -c 1")
    subprocess.run(CLI + ["-q", "run", "--checkpoints", str(ckpt_root), "--archive", str(tmp_path / "a"),
                          "--hard-examples", "", "--settle-seconds", "0", "--probes", str(_tiny_probes(tmp_path))],
                   capture_output=True, text=True, check=True)
    for _ in range(3):
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr


def _tiny_probes(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "q1", "prompt": "All cats are dogs. What follows?", "expected": "Nothing follows."}\n')
    return path


def test_status_says_which_archives_are_of_another_probe_set(tmp_path, ckpt_root):
    """Probes changed mid-run, and one checkpoint's folder gone meanwhile (save_total_limit): its
    archive stays of the old probe set, and the series, figures and dashboard leave it out. The
    status table listed it with the others, its accuracy in another probe set's skill column, and
    no word of it; and `learnviz run` replaced the other two archives' results without a word."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text('{"id": "q1", "prompt": "All cats are", "expected": "dogs", "skill": "old"}\n')
    second.write_text('{"id": "q2", "prompt": "Some dogs are", "expected": "birds", "skill": "new"}\n')
    for probes in (first, second):
        out = subprocess.run(CLI + ["-q", "run", "--checkpoints", str(ckpt_root), "--probes", str(probes),
                                    "--hard-examples", "", "--settle-seconds", "0"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        if probes == first:
            assert "probe set changed" not in out.stdout
            (ckpt_root / "checkpoint-10").rename(tmp_path / "checkpoint-10-gone")
    # the run said that it replaced two archives of the first probe set (it said nothing of it)
    assert "probe set changed: 2 archives (checkpoint-20.h5, checkpoint-30.h5) held probe set " in out.stdout
    status = subprocess.run(CLI + ["status", "--checkpoints", str(ckpt_root)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    lines = [line for line in status.stdout.splitlines() if "another probe set" in line]
    assert len(lines) == 1 and lines[0].startswith("step 10 (checkpoint-10) extracted with another probe set")
    rows = json.loads(subprocess.run(CLI + ["status", "--checkpoints", str(ckpt_root), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert [bool(r["other_probes"]) for r in rows] == [True, False, False]
    assert [list(r["skills"]) for r in rows] == [["old"], ["new"], ["new"]]
    from dashboard import create_app
    from learnviz.settings import load_settings
    client = create_app(load_settings(overrides={"archive": str(ckpt_root / "learnviz-archive")}, environ={}),
                        test_config={"TESTING": True}).test_client()
    api = client.get("/api/status.json").get_json()["rows"]
    assert ["other_probes" in r for r in api] == [True, False, False]
    assert "extracted with another probe set" in client.get("/checkpoints").get_data(as_text=True)


def test_status_table_stays_one_line_per_checkpoint_and_aligned_with_odd_skill_names():
    """Skill names with a tab or a newline split the status table's header, and CJK or emoji
    names shifted every column after them (widths were counted in characters, not columns)."""
    wcwidth = pytest.importorskip("wcwidth")
    from learnviz.readout import StatusRow, format_status

    skills = ["tab\tnew\nline", "数学", "🙂 mood", "cafe\u0301", "plain"]
    rows = [StatusRow(step, f"checkpoint-{step}", {"extract": "ok"}, "", 0.5,
                      {s: (i + step) % 7 / 7 for i, s in enumerate(skills)}) for step in (10, 20000)]
    lines = format_status(rows).splitlines()
    assert len(lines) == 3 and "tab\\tnew\\nline" in lines[0]         # the header and two rows, escapes spelled
    widths = [wcwidth.wcswidth(line) for line in lines]
    assert len(set(widths)) == 1, (widths, lines)
    # each skill's value starts where its name does
    for s in skills:
        name = s.replace("\t", "\\t").replace("\n", "\\n")
        col = wcwidth.wcswidth(lines[0][:lines[0].index(name)])
        for r, line in zip(rows, lines[1:]):
            value = f"{r.skills[s]:.2f}"
            starts = [wcwidth.wcswidth(line[:k]) for k in range(len(line)) if line.startswith(value, k)]
            assert col in starts, (s, col, line)
