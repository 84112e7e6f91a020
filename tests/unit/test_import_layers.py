"""Imports run one way (docs/architecture.md): core ← stages ← apps. The package's imports are read
with `ast` (nothing is imported), so the test also sees imports inside functions.

Rules: every module has a layer; a module imports only from its own layer or below; serving and
evals never import the corpus pipeline, the data stage never imports the pack stage, pre-training
and fine-tuning import each other's modules never (both build on `gptnl.trainer`); there is no
cycle between modules (lazy imports included); no `_private` name is imported from another module;
the launcher entry points (`python -m gptnl.train`, `-m gptnl.finetune`) do not load the CLI."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gptnl"

# Bottom to top; a module belongs to the longest prefix listed. Keep docs/architecture.md in step.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("gptnl", "gptnl.errors", "gptnl.fileio", "gptnl.config", "gptnl.artefacts", "gptnl.assets",
              "gptnl.templates", "gptnl.run_record", "gptnl.pii", "gptnl.corpus")),
    ("lower stages", ("gptnl.model", "gptnl.tokenizer", "gptnl.data_pipeline", "gptnl.slurm", "gptnl.public_data")),
    ("upper stages", ("gptnl.hf", "gptnl.pack", "gptnl.tokenizer_extend", "gptnl.serving", "gptnl.evals",
                      "gptnl.modelcard")),
    ("trainer core", ("gptnl.trainer",)),
    ("training", ("gptnl.train", "gptnl.finetune")),
    ("demo", ("gptnl.demo", "gptnl.demo_report")),
    ("apps", ("gptnl.cli", "gptnl.__main__", "gptnl.commands", "gptnl.evals.cli", "gptnl.train.__main__",
              "gptnl.finetune.__main__")),
]
FORBIDDEN = [  # (importer prefix, imported prefix, why): rules the layer order alone does not say
    ("gptnl.serving", "gptnl.data_pipeline", "serving never imports the corpus pipeline"),
    ("gptnl.evals", "gptnl.data_pipeline", "evals never import the corpus pipeline"),
    ("gptnl.data_pipeline", "gptnl.pack", "the data stage does not import the pack stage"),
    ("gptnl.finetune", "gptnl.train", "fine-tuning builds on the trainer core, not on pre-training's modules"),
    ("gptnl.train", "gptnl.finetune", "pre-training builds on the trainer core, not on fine-tuning's modules"),
]
ENTRY_POINTS = ("gptnl.train.__main__", "gptnl.finetune.__main__")
# Code being rewritten as this test lands (the evals registries and public-set readers); each entry
# goes when its modules are done. Cycles wholly inside these packages, and these private imports:
ALLOWED_CYCLES_IN = {"gptnl.evals": "spec <-> scorers/runner registries, tasks <-> public/fewshot readers"}
ALLOWED_PRIVATE = {
    ("gptnl.evals.fewshot", "_read_items"): "tasks' item reader, to become public",
    ("gptnl.evals.public", "_mbbq"): "tasks' MBBQ mapping, to move to the public readers",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    names: tuple[str, ...]  # names taken from it (`from x import a, b`)
    line: int
    lazy: bool  # inside a function or class: runs when called, not when the module loads


def modules(package: Path) -> dict[str, Path]:
    """{dotted name: file} for every module under `package` (links to data folders are not code)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(package: Path) -> list[Import]:
    """Every import of a module of `package` by a module of `package`."""
    mods = modules(package)
    root = package.name
    out = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node, lazy in _walk(tree):
            if isinstance(node, ast.Import):
                out += [Import(name, a.name, (), node.lineno, lazy) for a in node.names
                        if a.name.split(".")[0] == root]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_pkg)
                if base.split(".")[0] != root:
                    continue
                for a in node.names:  # `from pkg import submodule` imports the submodule
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                    out.append(Import(name, target, () if target != base else (a.name,), node.lineno, lazy))
    return out


def _walk(tree: ast.AST, lazy: bool = False):
    for node in ast.iter_child_nodes(tree):
        yield node, lazy
        yield from _walk(node, lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))


def _absolute(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_pkg else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def layer_of(module: str, layers=LAYERS) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    return None if best is None else best[0]


def layer_breaches(found: list[Import], layers=LAYERS, forbidden=FORBIDDEN) -> list[str]:
    out = []
    for i in found:
        src, dst = layer_of(i.source, layers), layer_of(i.target, layers)
        if src is not None and dst is not None and dst > src:
            out.append(f"{i.source}:{i.line} imports {i.target} ({layers[dst][0]}), above its layer "
                       f"({layers[src][0]})")
        for a, b, why in forbidden:
            if _under(i.source, a) and _under(i.target, b):
                out.append(f"{i.source}:{i.line} imports {i.target}: {why}")
    return out


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def cycles(found: list[Import]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan), lazy imports included;
    an import of a package a module sits in is no edge (Python runs that `__init__` first anyway)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        if i.source != i.target and not i.source.startswith(i.target + "."):
            graph.setdefault(i.source, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(found: list[Import]) -> list[tuple[str, str, str]]:
    """(importer, name, message) for every `_name` taken from another module."""
    return [(i.source, n, f"{i.source}:{i.line} imports {n} from {i.target}") for i in found for n in i.names
            if n.startswith("_") and not n.startswith("__") and i.target != i.source]


def eager_closure(start: str, found: list[Import]) -> set[str]:
    """The modules loading `start` loads: its module-level imports, theirs, and each one's packages."""
    eager: dict[str, set[str]] = {}
    for i in found:
        if not i.lazy:
            eager.setdefault(i.source, set()).add(i.target)
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        parts = m.split(".")
        for k in range(1, len(parts) + 1):
            name = ".".join(parts[:k])
            if name not in seen:
                seen.add(name)
                todo.extend(eager.get(name, ()))
    return seen


@pytest.fixture(scope="module")
def found() -> list[Import]:
    return imports(PACKAGE)


def test_every_module_has_a_layer():
    missing = [m for m in modules(PACKAGE) if layer_of(m) is None]
    assert not missing, f"add these to LAYERS here and to docs/architecture.md: {missing}"


def test_imports_run_down_the_layers(found):
    assert layer_breaches(found) == []


def test_no_import_cycles(found):
    def allowed(c: frozenset[str]) -> bool:
        return any(all(_under(m, pkg) for m in c) for pkg in ALLOWED_CYCLES_IN)

    assert [sorted(c) for c in cycles(found) if not allowed(c)] == []


def test_no_private_name_is_imported_from_another_module(found):
    assert [msg for src, name, msg in private_imports(found) if (src, name) not in ALLOWED_PRIVATE] == []


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_launcher_entry_points_do_not_load_the_cli(found, entry):
    loaded = eager_closure(entry, found)
    assert entry in modules(PACKAGE) and "gptnl.cli" not in loaded and "gptnl.evals.cli" not in loaded


def test_the_checks_catch_a_cycle_a_breach_and_a_private_import(tmp_path):
    """The rules above on a small package made to break each of them."""
    pkg = tmp_path / "toy"
    (pkg / "stage").mkdir(parents=True)
    for rel, text in {
        "__init__.py": "",
        "core.py": "from toy.stage import a\n",  # core reaching up into a stage
        "stage/__init__.py": "",
        "stage/a.py": "from toy import core\n\ndef f():\n    from toy.stage.b import _helper\n",
        "stage/b.py": "from .a import f\n\ndef _helper():\n    pass\n",  # a -> b -> a, relatively
        "app.py": "import toy.stage.a\n",
    }.items():
        (pkg / rel).write_text(text)
    layers = [("core", ("toy", "toy.core")), ("stages", ("toy.stage",)), ("apps", ("toy.app",))]
    toy = imports(pkg)
    assert layer_breaches(toy, layers, [("toy.stage.b", "toy.stage.a", "b keeps off a")]) == [
        "toy.core:1 imports toy.stage.a (stages), above its layer (core)",
        "toy.stage.b:1 imports toy.stage.a: b keeps off a"]
    assert cycles(toy) == [frozenset({"toy.core", "toy.stage.a", "toy.stage.b"})]
    assert [msg for _, _, msg in private_imports(toy)] == ["toy.stage.a:4 imports _helper from toy.stage.b"]
    assert "toy.stage.b" not in eager_closure("toy.app", toy)  # a imports b only when f runs
    assert {"toy", "toy.stage", "toy.stage.a", "toy.core"} <= eager_closure("toy.app", toy)
