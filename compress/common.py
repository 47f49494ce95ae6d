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

import json
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


def open_predictor(model_dir, backend: str | None = None, threads: int = 1, **kwargs):
    """``Predictor.from_dir``, or the numpy-free ``CPredictor`` for the ``onnxruntime-c`` backend (chosen before
    anything imports numpy, so that process stays small)."""
    from distill.modeldir import ModelLoadError

    try:
        if backend is not None and runtime_of(read_manifest(model_dir), backend) == "onnxruntime-c":
            from compress.ort_capi import CPredictor

            return CPredictor.from_dir(model_dir, threads=threads, **kwargs)
        from compress.predictor import Predictor

        return Predictor.from_dir(model_dir, backend=backend, threads=threads, **kwargs)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        if type(exc) is not ValueError:  # ConfigError, DataError, ModelLoadError: already one clear line
            raise
        if "paddle.load" in str(exc):  # paddle's "can not parse the file"
            raise _damaged(model_dir, exc) from exc
        raise ModelLoadError(str(exc) if str(model_dir) in str(exc) else f"{model_dir}: {exc}") from exc
    except (ImportError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types for unreadable model files
        raise _damaged(model_dir, exc) from exc


def _damaged(model_dir, exc: BaseException) -> Exception:
    from distill.modeldir import ModelLoadError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ModelLoadError(f"{model_dir}: model files are damaged or incomplete ({first}); re-export it or re-run "
                          "the stage that wrote it")


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


def cli_predict(args) -> int:
    """``tinydistill predict``: decoded JSON per text.  Lives here, not in ``compress.predictor`` (which imports
    numpy), so that ``--backend onnxruntime-c`` runs in a process without numpy or paddle."""
    if args.backend == "onnxruntime-c":
        from compress.ort_capi import lean_process

        lean_process()
    predictor = open_predictor(args.model_dir, backend=args.backend, threads=args.threads)
    for text, result in zip(args.texts, predictor.predict(args.texts)):
        print(json.dumps({"text": text, **result}, ensure_ascii=False, default=_plain))
    return 0


def _plain(obj: Any) -> Any:
    for attr in ("item", "tolist"):  # numpy scalars and arrays (Python predictor)
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    raise TypeError(type(obj).__name__)


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


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=json_default)
