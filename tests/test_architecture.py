"""The shape of the package: where things are read, run and parsed (docs/architecture.md).

The import graph is built with `ast` from every module of learnviz/, workers/, beat/ and
dashboard/, counting imports inside functions too (a lazy import hides a cycle, it does not
remove it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("learnviz", "workers", "beat", "dashboard")
ORCHESTRATORS = {"learnviz.pipeline", "learnviz.analyze", "learnviz.collect"}
# The read side: none of these may reach an orchestrator, directly or through another module.
READERS = ("learnviz.readout", "learnviz.results", "learnviz.visualize", "learnviz.plots", "dashboard",
           "learnviz.notebook", "learnviz.export")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = f
    return out


def imports(mods: dict[str, Path]) -> list[tuple[str, str, str | None]]:
    """(importer, imported module, imported name or None) for every import statement."""
    out = []
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(mod, _known(a.name, mods), None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    full = f"{target}.{a.name}"
                    out.append((mod, _known(full if full in mods else target, mods), a.name))
    return [(m, t, n) for m, t, n in out if t and t != m]


def _known(name: str, mods) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for m, t, _ in imports(modules()):
        edges.setdefault(m, set()).add(t)
    return edges


def reachable(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (a package importing its own
    submodule and back is not a cycle of code: it is how a package re-exports)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 and not (len(comp) == 2 and (comp[0].startswith(comp[1] + ".")
                                                          or comp[1].startswith(comp[0] + "."))):
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_imported_from_another_package():
    bad = [f"{m} imports {t}.{n}" for m, t, n in imports(modules())
           if n and n.startswith("_") and not n.startswith("__") and t.split(".")[0] != m.split(".")[0]]
    assert bad == []


def test_the_core_never_imports_the_demo_nor_the_adapters():
    bad = [f"{m} imports {t}" for m, t, _ in imports(modules())
           if m.startswith("learnviz") and not m.startswith("learnviz.demo")
           and (t.startswith("learnviz.demo")
                or t.split(".")[0] in ("workers", "beat", "dashboard", "celery", "flask"))]
    # `learnviz demo` comes in through the learnviz.commands entry point, as the adapters' commands do
    assert bad == []


@pytest.mark.parametrize("reader", READERS)
def test_no_reader_reaches_an_orchestrator(reader):
    edges = graph()
    starts = [m for m in modules() if m == reader or m.startswith(reader + ".")]
    assert starts
    for start in starts:
        assert not (reachable(edges, start) & ORCHESTRATORS), f"{start} reaches an orchestrator"


def test_readers_read_through_readout():
    """The dashboard, the figures' sources and the workers take status, accuracy and the series
    from learnviz.readout: none of them computes them again from archive paths."""
    edges = graph()
    for mod in ("dashboard.data", "dashboard.serializers", "learnviz.plots.sources"):
        assert "learnviz.readout" in edges[mod], mod
    text = "\n".join(p.read_text() for m, p in modules().items() if m.startswith(("dashboard", "learnviz.plots")))
    assert '"analysis/' not in text and "'analysis/" not in text     # stage elements by string path


STAGE_CALLS = {"stage", "read", "read_keys", "is_current", "write_stage", "send_stage", "stage_ok", "stage_done",
               "queued"}


def test_stage_names_are_constants():
    """A stage's name is written once (learnviz.results); code that names a stage to the archive
    or the queue uses the constant, never the bare string."""
    offenders = []
    for mod, path in modules().items():
        if mod == "learnviz.results":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in STAGE_CALLS and any(isinstance(a, ast.Constant) and a.value in STAGE_NAMES for a in node.args):
                offenders.append(f"{mod}:{node.lineno}")
    assert offenders == []


STAGE_NAMES = ("extract", "analysis", "geometry", "series")


def documented_graph() -> dict[str, set[str]]:
    """docs/architecture.md's import graph: `module -> a, b, c   comment` (a line that starts with
    spaces goes on the line before, as more names after a comma, else as a comment; `(...)` is a
    comment; names without a package are learnviz's)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## The import graph", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    last = None
    for line in block.splitlines()[1:]:
        head, arrow, rest = line.partition(" -> ")
        if arrow and not line.startswith(" "):
            last = head.strip()
            entries[last] = rest
        elif last and line.strip():
            entries[last] += (" " if entries[last].rstrip().endswith(",") else "   ") + line.strip()
    out = {}
    for mod, rest in entries.items():
        rest = re.split(r"\s{2,}", re.sub(r"\([^)]*\)", "", rest).rstrip())[0]
        names = [n.strip() for n in rest.split(",") if n.strip()]
        out[mod] = {n if n.split(".")[0] in PACKAGES else f"learnviz.{n}" for n in names}
    return out


def _allowed(target: str, listed: set[str]) -> bool:
    return target in listed or any(n.endswith(".*") and target.startswith(n[:-1]) for n in listed)


def test_the_documented_import_graph_is_the_code_s():
    """Every module of learnviz (the one-module-per analysis and figure packages as `analysis.*`,
    `plots.*`) has its line in docs/architecture.md, imports of learnviz only what its line lists,
    and imports each module its line names (workers.*, dashboard.*: the package's modules together)."""
    doc, edges, mods = documented_graph(), graph(), modules()
    problems = []
    for mod in mods:
        if mod.startswith(("learnviz.analysis.", "learnviz.plots.")) and mod != "learnviz.plots.sources":
            continue
        if mod in ("learnviz.analysis", "learnviz.plots", "learnviz.demo", "learnviz.integrations"):
            continue
        if mod.split(".")[0] != "learnviz" and f"{mod.split('.')[0]}.*" in doc:
            continue
        if mod not in doc:
            problems.append(f"{mod}: no line")
    for entry, listed in doc.items():
        members = [m for m in mods if m == entry or (entry.endswith(".*") and m.startswith(entry[:-1]))]
        assert members, f"docs/architecture.md names {entry}, which is no module"
        used = {t for m in members for t in edges.get(m, ()) if t.split(".")[0] == "learnviz"
                and not m.startswith(t + ".")}
        problems += [f"{entry} imports {t}, not on its line" for t in sorted(used) if not _allowed(t, listed)]
        problems += [f"{entry}: its line names {n}, which it does not import" for n in sorted(listed)
                     if not n.endswith(".*") and not any(t == n for t in used)]
        problems += [f"{entry}: its line names {n}, which it does not import" for n in sorted(listed)
                     if n.endswith(".*") and not any(t.startswith(n[:-1]) for t in used)]
    assert problems == [], "\n".join(problems)
