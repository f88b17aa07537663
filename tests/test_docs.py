"""The user documentation (README.md, docs/*.md) against the code: what a doc states that the code
fixes (a default, a flag, a route, a limit, an archive element) is read from the doc and compared
with the code's value, so a change on either side that leaves the other behind fails here.
(docs/integrations.md has its own: tests/test_docs_integrations.py; docs/architecture.md's import
graph: tests/test_architecture.py.)"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
import yaml

from learnviz import cli
from learnviz.settings import Settings, public_fields

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def section(text: str, start: str, end: str | None = None) -> str:
    """The text from the heading line `start` up to the next line that starts with `end` (or the end)."""
    body = text[text.index(start + "\n"):]
    return body[:body.index("\n" + end, len(start))] if end else body


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in `text` (the header separator left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def number(pattern: str, text: str) -> float:
    """The number that `pattern`'s first group matches in `text` ("8,192" is 8192)."""
    match = re.search(pattern, text, re.S)
    assert match, f"the docs no longer say {pattern!r}"
    return float(match.group(1).replace(",", ""))


# ---------------------------------------------------------------- commands

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_learnviz_command_line_in_the_docs_parses():
    parser = cli.build_parser()
    lines = []
    for path in [ROOT / "README.md", *DOCS]:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            for line in block.splitlines():
                code = line.split(" #")[0].strip().rstrip("&").strip()
                match = re.search(r"(?:^|&& )((?:[A-Z_]+=\S+ )*)(learnviz(?: .*)?)$", code)
                if match:
                    lines.append((path.name, match.group(2)))
    assert len(lines) >= 50
    for name, line in lines:
        try:
            args = parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{line}` does not parse")
        assert args.command, (name, line)


def test_readme_names_every_flag_that_is_not_named_after_its_setting():
    """README's settings list says which flags differ from `--<key>`; each such flag is named there."""
    keys = {f.name for f in public_fields()}
    differ = {o for sub in _subparsers(cli.build_parser()).values() for a in sub._actions if a.dest in keys
              for o in a.option_strings if o != "--" + a.dest.replace("_", "-")}
    assert {"--interval", "--host", "--broker"} <= differ
    item = re.search(r"\n4\. CLI flags, named after their keys(.*?)\n\n", read("README.md"), re.S).group(1)
    assert sorted(f for f in differ if f"`{f}`" not in item) == []


# ---------------------------------------------------------------- settings

def _value(text: str):
    text = text.strip().strip("`")
    text = re.sub(r" s$", "", text)                  # "1800 s"
    if text in ("none", "the broker URL", "CPU cores"):
        return None
    return yaml.safe_load(text)


def _settings_table(text: str, sep: str) -> dict[str, object]:
    got = {}
    for cells in table_rows(text):
        names = ticked(cells[0])
        if not names or names[0] not in {f.name for f in public_fields()}:
            continue
        values = [v for v in cells[1].split(sep)]
        if len(values) == 1:
            values *= len(names)
        assert len(values) == len(names), cells
        got.update({n: _value(v) for n, v in zip(names, values)})
    return got


def test_readme_settings_table_gives_the_defaults():
    table = _settings_table(section(read("README.md"), "### Settings", "## "), " / ")
    assert len(table) >= 14 and "batch_size" in table and "dashboard_allowed_hosts" in table
    defaults = Settings()
    assert {k: v for k, v in table.items() if getattr(defaults, k) != v} == {}


def test_distributed_settings_table_gives_the_defaults():
    table = _settings_table(section(read("docs/distributed.md"), "## Settings of the distributed mode", "## "), ", ")
    assert len(table) >= 15 and "enqueue_ttl" in table
    defaults = Settings()
    assert {k: v for k, v in table.items() if getattr(defaults, k) != v} == {}


def test_the_visibility_timeout_the_docs_give_is_the_code_s():
    celery = pytest.importorskip("workers.celery")
    s = Settings()
    minutes = celery.visibility_timeout(s) / 60
    distributed = read("docs/distributed.md")
    assert number(r"`visibility_timeout` \((\d+) min with the default limits\)", distributed) == minutes
    compose = read("docker-compose.yml")
    assert number(r"the visibility timeout \((\d+) min with the default limits\)", compose) == minutes
    # "set 10 minutes above the longest hard limit"; "the hard limit (5 min later)"
    assert "set 10 minutes above the longest hard limit" in distributed
    assert celery.visibility_timeout(s) - max(s.gpu_time_limit, s.cpu_time_limit) == 600
    assert "the hard limit (5 min later)" in distributed
    assert s.gpu_time_limit - s.gpu_soft_time_limit == s.cpu_time_limit - s.cpu_soft_time_limit == 300


def test_readme_layout_names_every_doc():
    (row,) = [cells for cells in table_rows(section(read("README.md"), "## Layout", "## ")) if cells[0] == "`docs/`"]
    assert sorted(n for n in ticked(row[1]) if n.endswith(".md")) == sorted(p.name for p in DOCS)


# ---------------------------------------------------------------- the dashboard

def test_api_doc_lists_every_json_route_and_only_those():
    """docs/api.md's endpoint tables against the dashboard's url_map, both ways."""
    from dashboard.app import create_app
    app = create_app(Settings(archive=str(ROOT / "tests" / "fixtures" / "archive_v1")))
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", r.rule) for r in app.url_map.iter_rules()}
    text = section(read("docs/api.md"), "## The dashboard's JSON API")
    documented = {re.sub(r"\?.*", "", ticked(cells[0])[0]).replace("<run>", "<run_id>")
                  for cells in table_rows(text) if ticked(cells[0]) and ticked(cells[0])[0].startswith("/api/")}
    assert len(documented) >= 15
    assert documented == {r for r in routes if r.startswith("/api/")}
    for page in ("/dynamics", "/hard-examples", "/vendor/plotly.min.js"):     # README's and api.md's pages
        assert page in routes


# ---------------------------------------------------------------- limits named in the docs

def test_long_run_limits_are_the_code_s():
    from learnviz import archive, common
    from learnviz.plots import common as plots
    from learnviz.plots import gif, hard_board, logprob_heatmap
    text = section(read("docs/visualizations.md"), "## Long runs", "## ")
    assert number(r"show at most (\d+) checkpoints", text) == plots.MAX_CHECKPOINTS
    assert number(r"tiles, up to (\d+) on one page", text) == logprob_heatmap.MAX_PANELS
    assert number(r"bin to (\d+)\s+checkpoints each", text) == logprob_heatmap.TILE_CHECKPOINTS
    assert number(r"The hard-example board\*\* shows (\d+) evenly", text) == plots.MAX_CHECKPOINTS
    assert number(r"show at most (\d+) frames", text) == gif.MAX_FRAMES
    assert number(r"at most (\d+) inches \(", text) == plots.MAX_WIDTH
    assert number(r"at most (\d+) inches tall", text) == plots.MAX_HEIGHT
    assert number(r"At most (\d+) rows, those that regressed first", read("docs/visualizations.md")) \
        == hard_board.MAX_EXAMPLES
    arch = read("docs/archive.md")
    assert number(r"`Archive.memo`, at most ([\d,]+) entries", arch) == archive.MEMO_SIZE
    assert number(r"older than (\d+) minutes\s+\(`learnviz.common.STALE_AFTER`\)", arch) * 60 == common.STALE_AFTER


def test_dashboard_and_api_limits_are_the_code_s():
    from dashboard import runs, serializers
    from learnviz import notebook
    readme, api = read("README.md"), read("docs/api.md")
    assert number(r"A run of more than \d+ checkpoints shows (\d+) columns", readme) == serializers.BOARD_COLUMNS
    assert number(r"least recently used first, (\d+)\s+answers", api) == runs.CACHE_SIZE
    assert number(r"kept in the `Run` \(the (\d+) most\s+recent reads\)", api) == notebook.CACHE_SIZE


# ---------------------------------------------------------------- docs/archive.md against a real archive

@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    """A real run's archive folder: four tiny checkpoints, a small probe set and a data log, every
    CPU stage run (no figures)."""
    import json

    from helpers import make_checkpoint, tiny_tokenizer, write_small_probes

    from learnviz import pipeline
    from learnviz.settings import load_settings
    base = tmp_path_factory.mktemp("docs-archive")
    root = base / "run"
    for i, step in enumerate((10, 20, 30, 40)):
        make_checkpoint(root / f"checkpoint-{step}", tiny_tokenizer(), step=step, seed=i)
    (root / "data_log.jsonl").write_text("".join(
        json.dumps({"step": s, "source": src, "examples": n}) + "\n"
        for s in (10, 20, 30, 40) for src, n in (("a", 5 + s // 10), ("b", 10 - s // 10))))
    settings = load_settings(overrides={"checkpoints": str(root), "archive": str(base / "archive"),
                                        "settle_seconds": 0.0, "device": "cpu",
                                        "probes": str(write_small_probes(base / "probes.jsonl"))}, environ={})
    report = pipeline.update(settings, require_checkpoints=True, stages=pipeline.CPU_STAGES + (pipeline.EXTRACT,),
                             progress=False)
    assert report.ok
    return base / "archive"


def _documented(text: str, layers: list[int]) -> tuple[set[str], set[str]]:
    """The element paths an archive.md section's tables name: (always there, there only sometimes
    or only in old archives). `a/{x,y}` is a/x and a/y; `a/*` is a itself; a name without '/' after
    one with it in the same cell is its sibling (`calibration/ece`, `mce`)."""
    always, sometimes = set(), set()
    for cells in table_rows(text):
        names = ticked(cells[0])
        if not names or cells[0] in ("element", "attribute"):
            continue
        parent = names[0].rsplit("/", 1)[0] if "/" in names[0] else ""
        paths = []
        for name in names:
            name = name if "/" in name or not parent else f"{parent}/{name}"
            brace = re.fullmatch(r"(.*)/\{(.*)\}", name)
            paths += [f"{brace.group(1)}/{leaf}" for leaf in brace.group(2).split(",")] if brace else \
                [name.removesuffix("/*")]
        paths = [p.replace("<k>", str(k)) for p in paths for k in (layers if "<k>" in p else [None])]
        rest = " ".join(cells[1:])
        (sometimes if "only when" in rest or "only in archives written before" in rest else always).update(paths)
    return always, sometimes


def _elements(group) -> set[str]:
    """The element paths of a stage group: a dict group's elements, recursively; others are leaves."""
    import h5py
    found = set()
    for name, node in group.items():
        if isinstance(node, h5py.Group) and node.attrs.get("encoding-type") == "dict":
            found |= {f"{name}/{sub}" for sub in _elements(node)} | {name}
        else:
            found.add(name)
    return found


@pytest.mark.parametrize("heading, end, file, group", [
    ("## `/extract` (schema 1)", "## ", "checkpoint-30.h5", "extract"),
    ("## `/analysis` (schema 1): per checkpoint", "## ", "checkpoint-30.h5", "analysis"),
    ("## `/geometry` (schema 1): per checkpoint, in step order", "## ", "checkpoint-30.h5", "geometry"),
    ("## `series.h5`: the whole run", "## `data_log.jsonl`", "series.h5", "series"),
])
def test_archive_doc_names_every_element_a_stage_writes(archive_dir, heading, end, file, group):
    import h5py
    with h5py.File(archive_dir / file, "r") as f:
        layers = sorted(int(k.split("_")[1]) for k in f["extract/embeddings"]) if "extract" in f else []
        written = _elements(f[group])
    always, sometimes = _documented(section(read("docs/archive.md"), heading, end), layers)
    assert len(always) >= 6
    assert sorted(always - written) == [], "documented but not written"
    covered = always | sometimes
    assert sorted(e for e in written if not any(e == d or e.startswith(d + "/") or d.startswith(e + "/")
                                                for d in covered)) == [], "written but not documented"
