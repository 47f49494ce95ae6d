"""Small shared pieces of the compression stage (no paddle/onnxruntime import at module level).

Model directory formats and the runtime that runs each one::

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
import shutil
from pathlib import Path
from typing import Any

FORMAT_RUNTIME = {"dygraph": "paddle", "paddle-inference": "paddle-inference", "onnx": "onnxruntime",
                  "ort": "onnxruntime"}
RUNTIME_ALIASES = {"paddle": "paddle", "dygraph": "paddle", "paddle-inference": "paddle-inference",
                   "onnxruntime": "onnxruntime", "ort": "onnxruntime", "onnx": "onnxruntime",
                   "onnxruntime-c": "onnxruntime-c"}
SOURCE_DIR = "source"
REPORT = "report.json"
NOT_DEPLOYED = (SOURCE_DIR, REPORT)


class ExportError(RuntimeError):
    """An export or compression result failed its check (outputs differ, INT8 metric out of tolerance)."""


def read_manifest(model_dir: str | os.PathLike) -> dict:
    """Manifest of any model directory (delegates to ``distill.modeldir.read_manifest``, paddle-free)."""
    from distill.modeldir import read_manifest as _read

    return _read(model_dir)


def runtime_of(manifest: dict, backend: str | None = None) -> str:
    fmt = manifest["format"]
    if fmt not in FORMAT_RUNTIME:
        raise ValueError(f"unknown model format {fmt!r} in the manifest (known: {', '.join(FORMAT_RUNTIME)})")
    if backend is None:
        return FORMAT_RUNTIME[fmt]
    if backend not in RUNTIME_ALIASES:
        raise ValueError(f"unknown runtime backend {backend!r} (known: {', '.join(sorted(RUNTIME_ALIASES))})")
    runtime = RUNTIME_ALIASES[backend]
    # the C API runtime runs what the Python onnxruntime runs; every other runtime runs its own format only
    if runtime.removesuffix("-c") != FORMAT_RUNTIME[fmt]:
        fitting = sorted({r for r in RUNTIME_ALIASES.values() if r.removesuffix("-c") == FORMAT_RUNTIME[fmt]})
        raise ValueError(f"runtime {runtime!r} cannot run model directories of format {fmt!r} "
                         f"(use {' or '.join(fitting)}, or export it first)")
    return runtime


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
    spec = manifest.get("tokenizer") or {}
    for key, value in spec.items():
        if key.endswith("_file") and isinstance(value, str) and (Path(src) / value).is_file():
            shutil.copy2(Path(src) / value, Path(dst) / value)


def build_task(manifest: dict, data_dir: str | None = None, task_name: str | None = None):
    """The task adapter a model directory was trained for (``None`` if it records none and none is given)."""
    from tasks import build_task as _build

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
    from distill.fsutil import write_json

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
