"""Small shared pieces of the compression stage (no paddle/onnxruntime import at module level).

Model directory formats and the runtime that runs each one by default (``compress.FORMATS`` records it;
``compress.RUNTIMES`` which others can: ``onnxruntime-c`` runs ONNX directories too)::

    dygraph           manifest + model_state.pdparams           -> runtime "paddle"
    paddle-inference  manifest + model.pdmodel/model.pdiparams  -> runtime "paddle-inference"
    onnx | ort        manifest + model.onnx | model.ort         -> runtime "onnxruntime"

A quantised directory (``precision: int8``) may carry ``source/``: the dygraph model directory (float
weights after QAT fine-tuning) it was built from, plus ``quant`` (the recipe) in its manifest, so that later
steps and exports to other runtimes can rebuild the same model.  ``source/`` and ``report.json`` do not count
towards the deployable size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SOURCE_DIR = "source"
REPORT = "report.json"
NOT_DEPLOYED = (SOURCE_DIR, REPORT)


class ExportError(RuntimeError):
    """An export or compression result failed its check (outputs differ, INT8 metric out of tolerance)."""


def read_manifest(model_dir: str | os.PathLike) -> dict:
    """Manifest of any model directory (delegates to ``distill.modeldir.read_manifest``, paddle-free)."""
    from tinydistill.distill.modeldir import read_manifest as _read

    return _read(model_dir)


def default_runtimes() -> dict[str, str]:
    """Manifest format -> the runtime that runs it by default, from the export formats' metadata."""
    from tinydistill.compress import FORMATS

    out: dict[str, str] = {}
    for entry in FORMATS.entries():
        out.setdefault(entry.meta["format"], entry.meta["runtime"])
    return out


def runtime_of(manifest: dict, runtime: str | None = None) -> str:
    """The runtime (a ``RUNTIMES`` name) that runs a directory with this manifest: ``runtime`` (or an alias of
    one) if it can, else a ``ValueError`` naming the ones that can; the format's default if ``None``."""
    from tinydistill.compress import RUNTIMES
    from tinydistill.distill.registry import RegistryError

    fmt, defaults = manifest["format"], default_runtimes()
    if fmt not in defaults:
        raise ValueError(f"unknown model format {fmt!r} in the manifest (known: {', '.join(defaults)})")
    if runtime is None:
        return defaults[fmt]
    try:
        name = RUNTIMES.canonical(runtime)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if fmt not in RUNTIMES.entry(name).meta["formats"]:
        fitting = [e.name for e in RUNTIMES.entries() if fmt in e.meta["formats"]]
        raise ValueError(f"runtime {name!r} cannot run model directories of format {fmt!r} "
                         f"(use {' or '.join(fitting)}, or export it first)")
    return name


def runtime_or_backend(runtime: str | None, backend: str | None) -> str | None:
    """``runtime``, or the deprecated ``backend`` keyword it replaced (one release)."""
    if backend is None:
        return runtime
    import warnings

    warnings.warn("the 'backend' keyword is deprecated; pass runtime=", DeprecationWarning, stacklevel=3)
    if runtime is not None and runtime != backend:
        raise ValueError(f"runtime={runtime!r} and backend={backend!r} disagree; pass runtime only")
    return backend


def rss_kib() -> float:
    """Current resident set size of this process in KiB (``VmRSS``; NaN where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def deploy_size_bytes(model_dir: str | os.PathLike) -> int:
    """Bytes on disk of what a deployment needs: everything but ``source/`` and ``report.json``."""
    model_dir = Path(model_dir)
    total = 0
    for p in model_dir.rglob("*"):
        rel = p.relative_to(model_dir).parts
        if p.is_file() and rel[0] not in NOT_DEPLOYED:
            total += p.stat().st_size
    return total


def copy_tokenizer_files(src: Path, dst: Path, manifest: dict) -> None:
    """Copy the tokenizer's files named in the manifest's tokenizer spec (``*_file`` keys)."""
    import shutil  # here: the lean predictor process imports this module and copies nothing

    spec = manifest.get("tokenizer") or {}
    for key, value in spec.items():
        if key.endswith("_file") and isinstance(value, str) and (Path(src) / value).is_file():
            shutil.copy2(Path(src) / value, Path(dst) / value)


def build_task(manifest: dict, data_dir: str | None = None, task_name: str | None = None):
    """The task adapter a model directory was trained for (``None`` if it records none and none is given)."""
    from tinydistill.tasks import build_task as _build

    info = manifest.get("task") or {}
    name = task_name or info.get("name")
    if not name:
        return None
    options = dict(info.get("options") or {}) if info.get("name") == name else {}
    if data_dir is not None:
        options["data_dir"] = str(data_dir)
    task = _build(name, **options)
    if manifest.get("heads") and info.get("name") == name:
        task.use_heads(manifest["heads"])   # the labels the model was trained with; no data files needed
    return task


def max_seq_length(manifest: dict, task=None) -> int | None:
    if task is not None and getattr(task, "options", None) is not None:
        return getattr(task.options, "max_seq_length", None)
    return manifest.get("max_seq_length")


def write_manifest(out_dir: Path, manifest: dict) -> None:
    from tinydistill.distill.fsutil import write_json

    write_json(Path(out_dir) / "manifest.json", manifest)


def json_default(obj: Any) -> Any:
    """``json.dumps`` default for numpy scalars and arrays and plain objects (predictor and server output)."""
    if hasattr(obj, "item") and getattr(obj, "size", 1) == 1:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
