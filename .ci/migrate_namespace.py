#!/usr/bin/env python3
"""Issue #14: install TinyDistill's six top-level packages under one namespace, ``tinydistill.*``.

    python3 migrate.py REPO_ROOT [--check] [--quiet]

The repository keeps its folders (``distill/ teachers/ students/ tasks/ compress/ experiments/``); setup.cfg
maps them with ``package_dir`` into an implicit namespace package ``tinydistill`` (no ``tinydistill/__init__.py``
anywhere), and every reference to a module by name is rewritten to the namespaced name:

* Python files (every ``*.py`` under REPO_ROOT except .git, virtual environments, runs/, build/, dist/,
  egg-info, caches): ``import X...`` / ``from X... import`` statements of the six packages (found with ``ast``;
  ``import distill`` -> ``from tinydistill import distill`` so the bound name stays ``distill``;
  ``import distill.fsutil as fs`` -> ``import tinydistill.distill.fsutil as fs``); relative imports are left as
  they are (they stay valid inside the namespace; one that would climb out of its package is reported);
* string literals that name a module, only where they are used as one:
  - ``"pkg.mod:attr"`` specs anywhere (registry KINDS, CLI handlers, ``model_class``, export builders, ...), when
    ``pkg.mod`` is a module of the tree;
  - a whole-string module name (or an f-string starting with ``pkg.``) passed to ``importlib.import_module``,
    ``__import__``, ``pytest.importorskip``, ``sys.modules.get``/``[...]``, ``runpy.run_module``, ``find_spec``,
    ``mock.patch``/``monkeypatch.setattr`` targets, ``Registry(..., modules=(...))``, or following ``"-m"`` in a
    command list (subprocess command lines);
  - Python code inside strings (``python -c`` programs, generated scripts, docstring examples): ``from X import``
    and ``import X`` at the start of a statement (line start, after ``;``, after a ``\\n`` escape or the opening
    quote), and ``-m X`` command lines;
  Config keys (``distill.losses``, ``task.max_seq_length``), stage names (``compress.qat``), metric names
  (``teacher.tasks.chnsenticorp.dev.accuracy``) and attribute accesses (``cfg.distill.lr``) are NOT touched: a
  bare dotted string is only rewritten in one of the module contexts above.  Comments and docstring prose
  (``distill.trainer.train`` in backticks) are left as they are; ``-m X`` in comments is rewritten.
* two targeted fixes of code that located the packages through the repository root (each anchored on the exact
  code; when the anchor is missing the script says so and a human must look):
  - ``compress/bench.py``: the bench worker's ``PYTHONPATH`` no longer prepends the package's parent directory
    (``site-packages/tinydistill`` in a wheel install: it would make ``distill`` etc. global names again in the
    worker); the installed package is found without it;
  - ``experiments/benchmarks/bench_train_speed.py``: the ``previous`` side imports ``tinydistill.*`` from the
    previous commit's checkout (a commit from before this migration has top-level packages: they are aliased),
    not from the installed current tree;
* ``setup.cfg``: ``packages`` (explicit list of ``tinydistill.<pkg>[.<sub>]``), ``package_dir``
  (``tinydistill.<pkg> = <pkg>``), ``[options.packages.find]`` removed, ``[options.package_data]`` keys,
  ``console_scripts`` (``tinydistill = tinydistill.experiments.cli:main``);
* ``pyproject.toml``: ``setuptools>=64`` (PEP 660 editable installs; the older ``develop`` mode would put the
  repository root on ``sys.path`` and bring the global names back);
* ``.ci/run``: a check, from outside the repository, that none of the six is importable as a global name and
  ``tinydistill.experiments.cli`` is;
* ``README.md`` and ``*.sh``: ``python -m X`` command lines, ``import`` lines inside fenced ``python`` blocks;
* ``tests/test_namespace.py`` (created when missing): no global module name is installed, and no source file of
  the tree imports an old name (a branch merged later with ``from distill...`` fails it instead of silently
  loading a second copy of the module from the repository root).

Idempotent: a second run changes nothing (every rewrite produces names under ``tinydistill.``, which no rule
matches).  ``--check``: change nothing, exit 1 if a run would change something.
"""
from __future__ import annotations

import argparse
import ast
import io
import os
import re
import sys
import tokenize
from pathlib import Path

NS = "tinydistill"
PACKAGES = ("distill", "teachers", "students", "tasks", "compress", "experiments")
PK = "|".join(PACKAGES)
SKIP_DIRS = {".git", ".venv", "venv", "env", ".tox", ".nox", "runs", "build", "dist", "__pycache__",
             ".pytest_cache", ".benchmarks", "node_modules", ".mypy_cache", ".ruff_cache", "quickstart"}

# call targets whose first argument is a module name (or a dotted object path starting with one)
MODULE_CALLS = {"importlib.import_module", "import_module", "__import__", "pytest.importorskip", "importorskip",
                "sys.modules.get", "sys.modules.pop", "runpy.run_module", "run_module", "importlib.util.find_spec",
                "find_spec", "importlib.reload", "mock.patch", "unittest.mock.patch", "patch",
                "mock.patch.object", "monkeypatch.setattr", "monkeypatch.delattr", "pkgutil.resolve_name",
                "resolve_name", "logging.getLogger"}
# NB logging.getLogger: only rewritten when the string is a module path of the tree (a logger named after a
# module, e.g. getLogger("distill.augment")); getLogger(__name__) follows the module by itself.

BOUNDARY = r"(?:^|(?<=;)|(?<=\\n)|(?<=>>> ))"  # applied to a string's body (quotes stripped), re.M


class Report:
    def __init__(self) -> None:
        self.changes: dict[str, list[str]] = {}
        self.warnings: list[str] = []

    def add(self, path: str, what: str) -> None:
        self.changes.setdefault(path, []).append(what)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


# ----------------------------------------------------------------------------------------------------------
# which dotted names are modules of the tree
# ----------------------------------------------------------------------------------------------------------
class Tree:
    def __init__(self, root: Path):
        self.root = root

    def is_module(self, dotted: str) -> bool:
        parts = dotted.split(".")
        if parts[0] not in PACKAGES:
            return False
        base = self.root.joinpath(*parts)
        return (base / "__init__.py").is_file() or base.with_suffix(".py").is_file() or \
            (base.is_dir() and len(parts) > 1 and any(base.glob("*.py")))

    def module_prefix(self, dotted: str) -> str | None:
        """Longest prefix of ``dotted`` that is a module (``compress.export.build_onnx`` -> ``compress.export``)."""
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if self.is_module(".".join(parts[:i])):
                return ".".join(parts[:i])
        return None

    def subpackages(self) -> list[str]:
        out = []
        for pkg in PACKAGES:
            base = self.root / pkg
            if not (base / "__init__.py").is_file():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
                if "__init__.py" in filenames:
                    rel = Path(dirpath).relative_to(self.root)
                    out.append(".".join(rel.parts))
                else:
                    dirnames[:] = []  # a non-package directory: nothing below it is a package either
        return out


# ----------------------------------------------------------------------------------------------------------
# Python sources
# ----------------------------------------------------------------------------------------------------------
def _line_offsets(text: str) -> list[int]:
    offs, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        offs.append(pos)
    return offs


class Source:
    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.offs = _line_offsets(text)

    def char_offset(self, lineno: int, col_bytes: int) -> int:
        """ast positions are (1-based line, UTF-8 byte column)."""
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.offs[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.char_offset(node.lineno, node.col_offset),
                self.char_offset(node.end_lineno, node.end_col_offset))


def _import_stmt(alias: ast.alias) -> str:
    name = alias.name
    if name.split(".")[0] not in PACKAGES:
        return f"import {name}" + (f" as {alias.asname}" if alias.asname else "")
    if alias.asname:
        return f"import {NS}.{name} as {alias.asname}"
    top = name.split(".")[0]
    if name == top:
        return f"from {NS} import {top}"
    # ``import distill.engine`` binds ``distill`` with ``distill.engine`` loaded
    return f"import {NS}.{name}; from {NS} import {top}"


def rewrite_import_text(stmt: str) -> str | None:
    """``import a, distill.x as y`` (one statement, text) -> rewritten text, or None if nothing to do."""
    try:
        node = ast.parse(stmt.strip()).body[0]
    except (SyntaxError, IndexError):
        return None
    if not isinstance(node, ast.Import) or not any(a.name.split(".")[0] in PACKAGES for a in node.names):
        return None
    return "; ".join(_import_stmt(a) for a in node.names)


def _call_name(func: ast.AST) -> str:
    try:
        return ast.unparse(func)
    except Exception:  # noqa: BLE001
        return ""


def _string_prefix_end(seg: str) -> int | None:
    m = re.match(r"[rRuUfFbB]{0,2}(\"\"\"|'''|\"|')", seg)
    return m.end() if m else None


STR_FROM = re.compile(BOUNDARY + rf"(?P<lead>[ \t]*from[ \t]+)(?P<mod>(?:{PK})(?:\.\w+)*)(?=[ \t]+import\b)", re.M)
STR_IMPORT = re.compile(BOUNDARY + r"(?P<lead>[ \t]*)(?P<stmt>import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?"
                        r"(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*)", re.M)
DASH_M = re.compile(rf"(?P<lead>(?:^|(?<=[\s'\"\[(,]))-m[ \t]+)(?P<mod>(?:{PK})(?:\.\w+)*)\b", re.M)
SPEC_FULL = re.compile(rf"(?:{PK})(?:\.\w+)*:[A-Za-z_]\w*")
NAME_FULL = re.compile(rf"(?:{PK})(?:\.\w+)*")


def rewrite_code_in_string(tok: str) -> tuple[str, int]:
    """Imports and ``-m`` command lines inside one string token's source text."""
    n = 0

    def sub_from(m):
        nonlocal n
        n += 1
        return f"{m.group('lead')}{NS}.{m.group('mod')}"

    def sub_import(m):
        nonlocal n
        # the statement ends at ';', a '\n' escape or the end of the line
        new = rewrite_import_text(m.group("stmt"))
        if new is None:
            return m.group(0)
        n += 1
        return m.group("lead") + new

    def sub_m(m):
        nonlocal n
        n += 1
        return f"{m.group('lead')}{NS}.{m.group('mod')}"

    p = _string_prefix_end(tok)
    quote = "" if p is None else tok[p - 3:p] if tok[max(p - 3, 0):p] in ('"""', "'''") else tok[p - 1:p]
    if p is not None and tok.endswith(quote) and len(tok) >= p + len(quote):
        head, body, tail = tok[:p], tok[p:len(tok) - len(quote)], tok[len(tok) - len(quote):]
    else:
        head, body, tail = "", tok, ""
    body = STR_FROM.sub(sub_from, body)
    body = STR_IMPORT.sub(sub_import, body)
    body = DASH_M.sub(sub_m, body)
    return head + body + tail, n


def migrate_python(path: Path, tree: Tree, rep: Report, rel: str) -> str | None:
    text = path.read_text(encoding="utf-8")
    try:
        mod = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        rep.warn(f"{rel}: not parsed ({exc}); left unchanged, check it by hand")
        return None
    src = Source(text)
    edits: list[tuple[int, int, str, str]] = []  # (start, end, new text, what)
    string_spans: set[tuple[int, int]] = set()
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(mod):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    depth = len(Path(rel).parts) - 1 if Path(rel).parts[0] in PACKAGES else None
    for node in ast.walk(mod):
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[0] in PACKAGES for a in node.names):
                new = "; ".join(_import_stmt(a) for a in node.names)
                s, e = src.span(node)
                edits.append((s, e, new, f"line {node.lineno}: {ast.unparse(node)} -> {new}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in PACKAGES:
                s, e = src.span(node)
                seg = text[s:e]
                m = re.match(r"from(?:\s|\\\n)+", seg)
                if not m or not seg[m.end():].startswith(node.module.split(".")[0]):
                    rep.warn(f"{rel}:{node.lineno}: unusual import statement, not rewritten: {seg!r}")
                    continue
                edits.append((s + m.end(), s + m.end(), f"{NS}.",
                              f"line {node.lineno}: from {node.module} -> from {NS}.{node.module}"))
            elif node.level and depth is not None and node.level > depth:
                rep.warn(f"{rel}:{node.lineno}: relative import climbs above its top-level package "
                         f"(now into '{NS}'): {ast.unparse(node)}")
            elif node.level and depth is None:
                rep.warn(f"{rel}:{node.lineno}: relative import outside the six packages: {ast.unparse(node)}")

    def string_edit(node: ast.AST, why: str) -> None:
        s, e = src.span(node)
        seg = text[s:e]
        p = _string_prefix_end(seg)
        if p is None:  # implicit concatenation starting with something else: skip
            rep.warn(f"{rel}:{node.lineno}: module string not rewritten (unusual literal): {seg[:60]!r}")
            return
        if (s, e) in string_spans:
            return
        string_spans.add((s, e))
        edits.append((s + p, s + p, f"{NS}.", f"line {node.lineno}: {why}: {seg[:70]}"))

    def maybe_module_string(node: ast.AST, why: str) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value
            if NAME_FULL.fullmatch(v) and tree.module_prefix(v):
                string_edit(node, why)
            elif SPEC_FULL.fullmatch(v):
                pass  # handled below (any context)
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            first = node.values[0].value
            if isinstance(first, str) and re.match(rf"(?:{PK})\.", first) and \
                    first.split(".")[0] in PACKAGES:
                string_edit(node, why + " (f-string)")

    for node in ast.walk(mod):
        # "pkg.mod:attr" anywhere
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SPEC_FULL.fullmatch(node.value):
            module = node.value.split(":")[0]
            if tree.is_module(module):
                string_edit(node, "module:attr spec")
            else:
                rep.warn(f"{rel}:{node.lineno}: {node.value!r} looks like a module:attr spec but "
                         f"{module} is not a module of the tree; left unchanged")
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            if node.args and (name in MODULE_CALLS or name.endswith(".import_module")):
                if name == "logging.getLogger":
                    a = node.args[0]
                    if isinstance(a, ast.Constant) and isinstance(a.value, str) and tree.is_module(a.value):
                        string_edit(a, "logger named after a module")
                else:
                    maybe_module_string(node.args[0], f"module name passed to {name}()")
            for kw in node.keywords:
                if kw.arg == "modules" and isinstance(kw.value, (ast.Tuple, ast.List, ast.Set)):
                    for elt in kw.value.elts:
                        maybe_module_string(elt, "Registry(modules=...)")
        if isinstance(node, ast.Subscript) and _call_name(node.value) == "sys.modules":
            maybe_module_string(node.slice, "sys.modules[...]")
        if isinstance(node, (ast.List, ast.Tuple)):
            elts = node.elts
            for i in range(1, len(elts)):
                prev = elts[i - 1]
                if isinstance(prev, ast.Constant) and prev.value == "-m":
                    maybe_module_string(elts[i], "command line '-m' module")

    # code and command lines inside string tokens (python -c programs, generated scripts, docstrings)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        rep.warn(f"{rel}: tokenize failed ({exc}); strings not scanned")
        tokens = []
    taken = [(s, e) for s, e, _, _ in edits]
    fstring_start = getattr(tokenize, "FSTRING_START", None)
    for tok in tokens:
        if tok.type not in (tokenize.STRING, tokenize.COMMENT) and tok.type != fstring_start:
            continue
        if tok.type == fstring_start:
            rep.warn(f"{rel}:{tok.start[0]}: Python >= 3.12 f-string tokens: strings not scanned for code")
            continue
        s = src.offs[tok.start[0] - 1] + tok.start[1]
        e = src.offs[tok.end[0] - 1] + tok.end[1]
        body = text[s:e]
        if tok.type == tokenize.COMMENT:
            new = DASH_M.sub(lambda m: f"{m.group('lead')}{NS}.{m.group('mod')}", body)
            n = int(new != body)
        else:
            new, n = rewrite_code_in_string(body)
        if n and new != body:
            # a whole-token edit must not overlap an insertion made above inside the same token
            inner = [(a, b) for a, b in taken if s <= a <= e]
            if inner:
                # apply the insertions first to this token's text, then rescan it
                continue
            edits.append((s, e, new, f"line {tok.start[0]}: code/command inside a "
                                      f"{'comment' if tok.type == tokenize.COMMENT else 'string'} ({n})"))

    targeted(rel, text, edits, rep)
    if not edits:
        return None
    edits.sort(key=lambda x: (x[0], x[1]))
    out, pos = [], 0
    for s, e, new, what in edits:
        if s < pos:
            rep.warn(f"{rel}: overlapping edit skipped: {what}")
            continue
        out.append(text[pos:s])
        out.append(new)
        pos = e
        rep.add(rel, what)
    out.append(text[pos:])
    new_text = "".join(out)
    try:
        ast.parse(new_text)
    except SyntaxError as exc:
        rep.warn(f"{rel}: the rewritten file does not parse ({exc}); left unchanged")
        return None
    return new_text if new_text != text else None


# ----------------------------------------------------------------------------------------------------------
# targeted fixes (anchored on exact code)
# ----------------------------------------------------------------------------------------------------------
BENCH_PYTHONPATH = ('        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), '
                    'env.get("PYTHONPATH", "")])\n')

PREV_ANCHOR = ("    if args.side == \"previous\":\n"
               "        sys.path.insert(0, args.previous_tree)\n")
PREV_NEW = ("    if args.side == \"previous\":\n"
            "        _import_from_tree(args.previous_tree)\n")
PREV_HELPER = '''def _import_from_tree(tree: str) -> None:
    """``tinydistill.*`` from the checkout ``tree`` (the previous commit), not from the installed package.  A commit
    from before the ``tinydistill`` namespace (issue #14) has top-level packages (``distill``, ``tasks``, ...): each
    ``tinydistill.<name>`` is then that very module, so the old code and this script share one copy of each."""
    import importlib
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    sys.path.insert(0, tree)
    namespaced = "tinydistill.distill" in (Path(tree) / "setup.cfg").read_text(encoding="utf-8")
    root = types.ModuleType("tinydistill")
    root.__path__ = [tree]
    sys.modules["tinydistill"] = root

    class FromTree(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if not name.startswith("tinydistill."):
                return None
            if namespaced:  # ahead of the installed package's finder
                return importlib.machinery.PathFinder.find_spec(name, path)
            return importlib.util.spec_from_loader(name, self)

        def create_module(self, spec):
            return importlib.import_module(spec.name[len("tinydistill."):])

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, FromTree())


'''
PREV_HELPER_BEFORE = "def worker(args) -> dict:\n"


def targeted(rel: str, text: str, edits: list, rep: Report) -> None:
    if rel == "compress/bench.py":
        i = text.find(BENCH_PYTHONPATH)
        if i >= 0:
            edits.append((i, i + len(BENCH_PYTHONPATH), "",
                          "bench worker: PYTHONPATH no longer prepends the package's parent directory"))
        elif "PYTHONPATH" in text and "parents[1]" in text:
            rep.warn(f"{rel}: the bench worker's PYTHONPATH line changed; check it does not put the directory "
                     "holding distill/, tasks/, ... on PYTHONPATH")
    if rel == "experiments/benchmarks/bench_train_speed.py":
        if "def _import_from_tree(" in text:
            return
        i, j = text.find(PREV_ANCHOR), text.find(PREV_HELPER_BEFORE)
        if i >= 0 and j >= 0:
            edits.append((j, j, PREV_HELPER, "previous side: helper _import_from_tree"))
            edits.append((i, i + len(PREV_ANCHOR), PREV_NEW, "previous side imports tinydistill.* from its tree"))
        else:
            rep.warn(f"{rel}: the 'previous' side's import code changed; make sure it still imports the previous "
                     "commit's tree (not the installed tinydistill) -- see NOTES.md")


# ----------------------------------------------------------------------------------------------------------
# setup.cfg / pyproject.toml / .ci/run / README / shell
# ----------------------------------------------------------------------------------------------------------
def _sections(lines: list[str]) -> list[tuple[str | None, int, int]]:
    """(name, first line, end line) of each section; the preamble has name None."""
    out, name, start = [], None, 0
    for i, line in enumerate(lines):
        m = re.match(r"^\[([^\]]+)\]\s*$", line)
        if m:
            out.append((name, start, i))
            name, start = m.group(1).strip(), i
    out.append((name, start, len(lines)))
    return out


def _option_span(lines: list[str], start: int, end: int, key: str) -> tuple[int, int] | None:
    """Lines [i, j) of ``key = ...`` with its indented continuation lines inside a section."""
    for i in range(start + 1, end):
        if re.match(rf"^{re.escape(key)}\s*=", lines[i]):
            j = i + 1
            while j < end and (lines[j].startswith((" ", "\t")) and lines[j].strip()):
                j += 1
            return i, j
    return None


def migrate_setup_cfg(path: Path, tree: Tree, rep: Report) -> str | None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    rel = "setup.cfg"
    packages = [f"{NS}.{p}" for p in tree.subpackages()]
    block_pk = ["packages =\n"] + [f"    {p}\n" for p in packages]
    block_dir = ["package_dir =\n"] + [f"    {NS}.{p} = {p}\n" for p in PACKAGES if (tree.root / p).is_dir()]

    secs = {name: (s, e) for name, s, e in _sections(lines)}
    if "options" not in secs:
        rep.warn(f"{rel}: no [options] section; not changed")
        return None
    # drop [options.packages.find] (the namespace needs the explicit list)
    if "options.packages.find" in secs:
        s, e = secs["options.packages.find"]
        del lines[s:e]
        rep.add(rel, "removed [options.packages.find]")
        secs = {name: (s, e) for name, s, e in _sections(lines)}

    s, e = secs["options"]
    for key, block in (("packages", block_pk), ("package_dir", block_dir)):
        s, e = {name: (a, b) for name, a, b in _sections(lines)}["options"]
        span = _option_span(lines, s, e, key)
        if span:
            if lines[span[0]:span[1]] != block:
                lines[span[0]:span[1]] = block
                rep.add(rel, f"[options] {key} -> {' '.join(x.strip() for x in block[1:])}")
        else:
            # after 'packages', else at the end of [options]
            at = _option_span(lines, s, e, "packages")
            pos = at[1] if at else e
            lines[pos:pos] = block
            rep.add(rel, f"[options] added {key}")

    out_lines = []
    for name, s, e in _sections(lines):
        chunk = lines[s:e]
        if name == "options.package_data" or name == "options.exclude_package_data":
            for k, line in enumerate(chunk):
                m = re.match(rf"^({PK})((?:\.\w+)*)(\s*=)", line)
                if m:
                    chunk[k] = f"{NS}.{line}"
                    rep.add(rel, f"[{name}] {m.group(1)}{m.group(2)} -> {NS}.{m.group(1)}{m.group(2)}")
        if name == "options.entry_points":
            for k, line in enumerate(chunk):
                new = re.sub(rf"(=\s*)((?:{PK})(?:\.\w+)*:)", rf"\g<1>{NS}.\g<2>", line)
                if new != line:
                    chunk[k] = new
                    rep.add(rel, f"[{name}] {line.strip()} -> {new.strip()}")
        out_lines += chunk
    new_text = "".join(out_lines)
    for line in new_text.splitlines():
        if re.search(rf"(^|[\s=])({PK})\.[\w.]*:\w+", line) and NS + "." not in line:
            rep.warn(f"{rel}: still names a top-level module: {line.strip()}")
    return new_text if new_text != text else None


def migrate_pyproject(path: Path, rep: Report) -> str | None:
    text = path.read_text(encoding="utf-8")
    m = re.search(r"[\"']setuptools\s*>=\s*(\d+)(?:\.\d+)*[\"']", text)
    if m and int(m.group(1)) < 64:
        new = text[:m.start()] + '"setuptools>=64"' + text[m.end():]
        rep.add("pyproject.toml", f"build-system: {m.group(0)} -> \"setuptools>=64\" (PEP 660 editable installs)")
        return new
    if re.search(r"\[tool\.setuptools", text):
        rep.warn("pyproject.toml: has [tool.setuptools...] settings; check they agree with setup.cfg's package_dir")
    return None


CI_MARK = "# issue #14: none of the packages is a global name"
CI_CHECK = f'''
{CI_MARK}; the installed package is tinydistill.*
# (checked outside the repository, where the working directory on sys.path cannot hide a leak).
(cd / && python - <<'EOF'
import importlib.util, sys
leaked = [n for n in ("distill", "teachers", "students", "tasks", "compress", "experiments") if importlib.util.find_spec(n)]
assert not leaked, f"global module names installed: {{leaked}}"
import tinydistill.experiments.cli, tinydistill.distill.engine  # noqa: E401,F401
EOF
) && tinydistill --version
'''


def migrate_ci(path: Path, rep: Report) -> str | None:
    text = path.read_text(encoding="utf-8")
    new = DASH_M.sub(lambda m: f"{m.group('lead')}{NS}.{m.group('mod')}", text)
    if new != text:
        rep.add(".ci/run", "python -m <pkg> -> python -m tinydistill.<pkg>")
    if CI_MARK not in new:
        if "pytest" not in new:
            rep.warn(".ci/run: runs no pytest; the namespace check was not added")
        else:  # at the end: after the install and the tests (set -e stops at a failure)
            new = new.rstrip("\n") + "\n" + CI_CHECK
            rep.add(".ci/run", "added the check that no global module name is installed")
    return new if new != text else None


def migrate_markdown(path: Path, rel: str, rep: Report) -> str | None:
    text = path.read_text(encoding="utf-8")
    out, in_py, n = [], False, 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_py = (not in_py) and stripped[3:].strip().lower() in ("python", "py", "pycon")
            out.append(line)
            continue
        new = line
        if in_py:
            m = re.match(rf"^(\s*(?:>>> )?)from\s+((?:{PK})(?:\.\w+)*)(\s+import\b.*)$", line, re.S)
            if m:
                new = f"{m.group(1)}from {NS}.{m.group(2)}{m.group(3)}"
            else:
                m = re.match(r"^(\s*(?:>>> )?)(import\s+[^#\n]+?)(\s*(?:#.*)?)(\n?)$", line)
                if m:
                    r = rewrite_import_text(m.group(2))
                    if r:
                        new = m.group(1) + r + m.group(3) + m.group(4)
        new = DASH_M.sub(lambda m: f"{m.group('lead')}{NS}.{m.group('mod')}", new)
        if new != line:
            n += 1
            rep.add(rel, f"{line.strip()[:60]} -> {new.strip()[:70]}")
        out.append(new)
    new_text = "".join(out)
    return new_text if new_text != text else None


def migrate_shell(path: Path, rel: str, rep: Report) -> str | None:
    text = path.read_text(encoding="utf-8")
    new = DASH_M.sub(lambda m: f"{m.group('lead')}{NS}.{m.group('mod')}", text)
    new = re.sub(rf"(python3?\s+-c\s+['\"][^'\"]*)", lambda m: rewrite_code_in_string(m.group(1))[0], new)
    if new != text:
        rep.add(rel, "python -m / -c module names")
    return new if new != text else None


NAMESPACE_TEST = '''"""Issue #14: the packages install under ``tinydistill.*``; none of them is a global module name."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "teachers", "students", "tasks", "compress", "experiments")
SKIP = {".git", ".venv", "venv", "runs", "build", "dist", "__pycache__", ".pytest_cache"}


def test_no_global_module_names_installed(tmp_path):
    """Outside the repository (whose root would be on sys.path) only ``tinydistill.*`` imports."""
    code = ("import importlib.util, json; "
            f"print(json.dumps([n for n in {PACKAGES!r} if importlib.util.find_spec(n)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"global module names importable: {out.stdout.strip()}"
    ok = subprocess.run([sys.executable, "-c", "import tinydistill.distill.registry"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_sources_import_the_namespace():
    """No ``import distill`` / ``from tasks import ...`` left in the tree: in the repository root it would still
    work (the working directory is on sys.path) and load a second copy of every module it touches."""
    bad = []
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP and not d.endswith(".egg-info")]
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    for path in sorted(files):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \\
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert not bad, "imports of the old global names (run the namespace migration):\\n" + "\\n".join(bad)
'''


# ----------------------------------------------------------------------------------------------------------
def walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
                             and not (d.startswith(".") and d not in (".ci", ".github")))
        for f in sorted(filenames):
            yield Path(dirpath) / f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="repository root (holds setup.cfg and distill/, tasks/, ...)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a run would change files")
    ap.add_argument("--quiet", action="store_true", help="one line per file instead of every change")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not (root / "setup.cfg").is_file() or not all((root / p).is_dir() for p in ("distill", "experiments")):
        print(f"{root}: not a TinyDistill repository root", file=sys.stderr)
        return 2
    if (root / NS / "__init__.py").exists():
        print(f"{root}/{NS}/__init__.py exists: this script makes '{NS}' an implicit namespace; stop",
              file=sys.stderr)
        return 2
    tree, rep = Tree(root), Report()
    new_files: dict[Path, str] = {}
    for path in walk(root):
        rel = path.relative_to(root).as_posix()
        new = None
        try:
            if path.suffix == ".py":
                new = migrate_python(path, tree, rep, rel)
            elif rel == "setup.cfg":
                new = migrate_setup_cfg(path, tree, rep)
            elif rel == "pyproject.toml":
                new = migrate_pyproject(path, rep)
            elif rel == ".ci/run":
                new = migrate_ci(path, rep)
            elif path.suffix == ".md" and rel == "README.md":
                new = migrate_markdown(path, rel, rep)
            elif path.suffix in (".sh", ".bash"):
                new = migrate_shell(path, rel, rep)
        except UnicodeDecodeError:
            rep.warn(f"{rel}: not UTF-8; skipped")
        if new is not None:
            new_files[path] = new
    if (root / "setup.py").exists():
        rep.warn("setup.py exists: check it does not declare packages/package_dir that disagree with setup.cfg")
    if (root / "MANIFEST.in").exists():
        rep.warn("MANIFEST.in exists: check its paths (they stay repository paths)")

    test_file = root / "tests" / "test_namespace.py"
    if (root / "tests").is_dir() and not test_file.exists():
        new_files[test_file] = NAMESPACE_TEST
        rep.add("tests/test_namespace.py", "new: no global module name installed; no old-name import in the tree")
    for path, new in new_files.items():
        if not args.check:
            path.write_text(new, encoding="utf-8")
    verb = "would change" if args.check else "changed"
    total = sum(len(v) for k, v in rep.changes.items())
    print(f"{verb} {len(new_files)} file(s), {total} edit(s)")
    for rel in sorted(rep.changes):
        items = rep.changes[rel]
        print(f"  {rel}: {len(items)} edit(s)")
        if not args.quiet:
            for what in items:
                print(f"      {what}")
    for w in rep.warnings:
        print(f"WARNING: {w}")
    if not new_files:
        print("nothing to do: the tree is already migrated")
    return 1 if (args.check and new_files) else 0


if __name__ == "__main__":
    sys.exit(main())
