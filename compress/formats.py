"""Export formats (``FORMATS``), what a config's ``export:`` names.  Light module: the builders live in
``compress/export.py``.

Each entry's meta: ``runtime`` (the ``RUNTIMES`` entry that runs the directory by default), ``format`` (the
manifest format of an exported directory) and ``builder`` (``module:function`` that writes it; none for
``paddle``, which runs dygraph directories as they are).  The default runtime of each manifest format is
read from here (``compress.common.default_runtime``); which other runtimes can run it, from ``RUNTIMES``.
"""
from tinydistill.compress import FORMATS


class ExportFormat:
    """An export format description; ``export(...)`` delegates to ``compress.export.export``."""

    def __init__(self, name: str):
        self.name = name

    def export(self, model_dir, out_dir, **kwargs) -> dict:
        from tinydistill.compress.export import export

        return export(model_dir, self.name, out_dir, **kwargs)

    def describe(self, name: str = "") -> str:
        meta = FORMATS.entry(self.name).meta
        return f"runtime {meta['runtime']}, format {meta['format']}"


def _add(name: str, summary: str, runtime: str, fmt: str, builder: str | None) -> None:
    FORMATS.add(name, ExportFormat(name), summary=summary, runtime=runtime, format=fmt, builder=builder)


_add("paddle", "dygraph model directory run by paddle (the reference; no export)", "paddle", "dygraph", None)
_add("paddle-inference", "static program (paddle.jit.save) run by paddle.inference with oneDNN (INT8 kernels "
     "for INT8 programs)", "paddle-inference", "paddle-inference", "tinydistill.compress.export:build_paddle_inference")
_add("onnx", "FP32 ONNX via paddle2onnx, run by ONNX Runtime", "onnxruntime", "onnx", "tinydistill.compress.export:build_onnx")
_add("onnx-int8", "ONNX Runtime dynamic INT8 (per-channel MatMul weights, quantised embedding Gather)",
     "onnxruntime", "onnx", "tinydistill.compress.export:build_onnx_int8")
_add("onnx-int4", "onnx-int8 with its weights stored as 4-bit blocks (embedding too), expanded to the same INT8 "
     "kernels when ONNX Runtime loads the model: INT4 size, INT8 speed", "onnxruntime", "onnx",
     "tinydistill.compress.export:build_onnx_int4")
_add("ort-mobile", "ONNX Runtime mobile format (.ort) of the INT8 ONNX model", "onnxruntime", "ort",
     "tinydistill.compress.export:build_ort_mobile")
