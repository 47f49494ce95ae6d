"""Dependency direction, read from the source (``ast``; nothing is imported).

Every import statement counts, at module level or inside a function: a function-level import is a
dependency all the same, only a later one.  ``from a.b import c`` is an edge to ``a.b.c`` when that is a
module, else to ``a.b``; the ``__init__`` of a package that an import passes through is not counted (the
package ``__init__`` files only declare registries, whose entries are module names in strings).

Layers, bottom to top (data flows one way: config -> runner -> task + models -> engine -> compress ->
export -> report; see ../shared/STYLE.md):

0. the shared core: ``distill.registry``, ``distill.schema``, ``distill.fsutil``, ``distill.logs``,
   ``distill.records`` and the ``distill`` package itself; it imports nothing of the project but
   ``distill.records`` (the dataclass subset), which imports nothing at all;
1. task adapters (``tasks``);
2. models: the model contract and model directories (``distill.modeldir``), ``teachers``, ``students``;
3. the distillation engine (the rest of ``distill``);
4. compression, export and serving (``compress``);
5. experiments, benchmarks and the command line (``experiments``).

A module may import its own layer and the ones below; no import cycles between modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "tasks", "teachers", "students", "compress", "experiments")
CORE = {"distill", "distill.registry", "distill.schema", "distill.fsutil", "distill.logs", "distill.records"}

# Cycles left to other parts of issue #14.  A cycle found must lie within one of these (a module name, or a
# package prefix ending in "."); a new one, or one that reaches past its entry, fails.  Remove an entry when its
# cycle is gone.
KNOWN_CYCLES = [
    # tasks.base -> datasets (resolve_data_dir) -> base (DataError), datasets -> overlap -> base (Example)
    {"tasks.base", "tasks.datasets", "tasks.overlap"},
    # engine -> callbacks (ProgressBar, TensorBoardLogger), callbacks -> engine (the Callback base class)
    {"distill.callbacks", "distill.engine"},
    # the experiment runner, its config, sweeps, searches and reports call each other (being split up)
    {"experiments."},
]


def _known(cycle: set[str]) -> bool:
    return any(all(m in known or any(k.endswith(".") and m.startswith(k) for k in known) for m in cycle)
               for known in KNOWN_CYCLES)


def layer(module: str) -> int:
    if module in CORE:
        return 0
    top = module.split(".")[0]
    if top == "distill":
        return 2 if module == "distill.modeldir" else 3
    return {"tasks": 1, "teachers": 2, "students": 2, "compress": 4, "experiments": 5}[top]


def project_modules() -> dict[str, Path]:
    modules = {}
    for pkg in PACKAGES:
        for file in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = file
    return modules


def _local(module: str) -> str:
    """The repository's name of a module (the installed ``tinydistill.`` namespace prefix removed)."""
    return module.removeprefix("tinydistill.")


def imports_of(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` (at ``file``) imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            found.update(_local(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _local(node.module or "")
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, file, modules) for name, file in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "compress.predictor" in graph["compress.evaluation"]  # imported inside dir_metrics only
    assert "distill.modeldir" in graph["compress.quant"]
    assert graph["distill.cache"] >= {"distill.fsutil"}


def test_core_imports_nothing_of_the_project():
    graph = import_graph()
    assert {m: sorted(graph[m] - {"distill.records"}) for m in CORE if graph.get(m, set()) - {"distill.records"}} == {}
    assert not graph.get("distill.records")


def test_no_module_imports_upward():
    graph = import_graph()
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a in sorted(graph) for b in sorted(graph[a]) if layer(b) > layer(a)]
    assert upward == []


def test_no_import_cycles_but_the_known_ones():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if not _known(c)]
    assert new == []
    named = {"compress.common", "compress.predictor", "compress.ort_capi", "teachers.ernie", "teachers.ernie_model"}
    assert not any(c & named for c in found)  # the two file cycles of issue #14


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _known({"experiments.runner", "experiments.sweep"}) and not _known({"experiments.cli", "compress.bench"})
