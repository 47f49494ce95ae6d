"""Open the predictor of a model directory; ``tinydistill predict`` and ``evaluate``.

``open_predictor`` chooses between ``compress.predictor.Predictor`` (numpy, every runtime) and the numpy-free
``compress.ort_capi.CPredictor`` (the ``onnxruntime-c`` backend).  It sits above both and above
``compress.common``, which they import, so nothing below imports it back.  Nothing here imports numpy at module
level or before the predictor is chosen: ``tinydistill predict --backend onnxruntime-c`` runs in a process
without numpy or paddle.
"""
from __future__ import annotations

import json

from compress.common import json_default, read_manifest, runtime_of


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


def cli_predict(args) -> int:
    """``tinydistill predict``: decoded JSON per text."""
    if args.backend == "onnxruntime-c":
        from compress.ort_capi import lean_process

        lean_process()
    predictor = open_predictor(args.model_dir, backend=args.backend, threads=args.threads)
    for text, result in zip(args.texts, predictor.predict(args.texts)):
        print(json.dumps({"text": text, **result}, ensure_ascii=False, default=json_default))
    return 0


def cli_evaluate(args) -> int:
    """``tinydistill evaluate``: the task's metrics of a model directory on dev (or ``--file``)."""
    predictor = open_predictor(args.model_dir, backend=args.backend, threads=args.threads, task=args.task,
                               data_dir=args.data_dir)
    if predictor.task is None:
        raise ValueError(f"{args.model_dir}: the manifest records no task; pass --task NAME")
    examples = predictor.task.load_file(args.file) if args.file else predictor.task.load("dev")
    if not examples:
        from tasks.base import DataError

        raise DataError(args.file or f"{predictor.task.name} dev split", None,
                        "no examples to evaluate (empty file?)")
    metrics = predictor.evaluate(examples, batch_size=args.batch_size)
    print(json.dumps({"model_dir": str(args.model_dir), "runtime": predictor.runtime, "task": predictor.task.name,
                      "examples": len(examples), "metrics": metrics}, ensure_ascii=False, indent=2,
                     default=json_default))
    return 0
