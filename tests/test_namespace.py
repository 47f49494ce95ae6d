"""Issue #14: the packages install under ``tinydistill.*``; none of them is a global module name."""
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
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert not bad, "imports of the old global names (run the namespace migration):\n" + "\n".join(bad)
