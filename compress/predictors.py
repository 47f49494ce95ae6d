"""Open the predictor of a model directory; ``tinydistill predict`` and ``evaluate``.

``open_predictor`` opens the predictor the runtime's registry entry names: ``compress.predictor.Predictor``
(numpy, every runtime) or the numpy-free ``compress.ort_capi.CPredictor`` (the ``onnxruntime-c`` runtime).  It
sits above both and above ``compress.common``, which they import, so nothing below imports it back.  Nothing
here imports numpy at module level or before the predictor is chosen: ``tinydistill predict --runtime
onnxruntime-c`` runs in a process without numpy or paddle.
"""
from __future__ import annotations

import json

from tinydistill.compress.common import json_default, read_manifest, runtime_of, runtime_or_backend


def predictor_class(runtime: str):
    """The end-to-end predictor of a runtime: ``compress.predictor.Predictor`` unless the runtime's registry entry
    names its own (``onnxruntime-c``: the numpy-free ``CPredictor``), imported only now so that one's process
    stays small."""
    import importlib

    from tinydistill.compress import RUNTIMES

    module, attr = RUNTIMES.entry(runtime).meta.get("predictor", "tinydistill.compress.predictor:Predictor").split(":")
    return getattr(importlib.import_module(module), attr)


def open_predictor(model_dir, runtime: str | None = None, threads: int = 1, *, backend: str | None = None,
                   **kwargs):
    """The predictor of ``model_dir`` on ``runtime`` (a ``compress.RUNTIMES`` name; default: its format's own);
    ``backend`` is the old name of ``runtime`` (deprecated)."""
    from tinydistill.distill.modeldir import ModelLoadError

    runtime = runtime_or_backend(runtime, backend)
    try:
        name = runtime_of(read_manifest(model_dir), runtime)
        return predictor_class(name).from_dir(model_dir, runtime=name, threads=threads, **kwargs)
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
    from tinydistill.distill.modeldir import ModelLoadError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ModelLoadError(f"{model_dir}: model files are damaged or incomplete ({first}); re-export it or re-run "
                          "the stage that wrote it")


def cli_predict(args) -> int:
    """``tinydistill predict``: decoded JSON per text."""
    from tinydistill.compress import RUNTIMES

    if RUNTIMES.entry(runtime_of(read_manifest(args.model_dir), args.runtime)).meta.get("lean"):
        from tinydistill.compress.ort_capi import lean_process

        lean_process()
    predictor = open_predictor(args.model_dir, runtime=args.runtime, threads=args.threads)
    for text, result in zip(args.texts, predictor.predict(args.texts)):
        print(json.dumps({"text": text, **result}, ensure_ascii=False, default=json_default))
    return 0


def cli_evaluate(args) -> int:
    """``tinydistill evaluate``: the task's metrics of a model directory on dev (or ``--file``)."""
    predictor = open_predictor(args.model_dir, runtime=args.runtime, threads=args.threads, task=args.task,
                               data_dir=args.data_dir)
    if predictor.task is None:
        raise ValueError(f"{args.model_dir}: the manifest records no task; pass --task NAME")
    examples = predictor.task.load_file(args.file) if args.file else predictor.task.load("dev")
    if not examples:
        from tinydistill.tasks.base import DataError

        raise DataError(args.file or f"{predictor.task.name} dev split", None,
                        "no examples to evaluate (empty file?)")
    metrics = predictor.evaluate(examples, batch_size=args.batch_size)
    print(json.dumps({"model_dir": str(args.model_dir), "runtime": predictor.runtime, "task": predictor.task.name,
                      "examples": len(examples), "metrics": metrics}, ensure_ascii=False, indent=2,
                     default=json_default))
    return 0
