"""The compression stage: steps that take a model directory and write a new one plus a report, the
export formats, the runtimes that run model directories, the predictor and the benchmark harness.

``STEPS``: compression steps (``vocab_prune``, ``width_prune``, ``qat``, ``ptq``, ``embedding_int8``).
``FORMATS``: export formats, what a config's ``export:`` names (``paddle``, ``paddle-inference``, ``onnx``,
``onnx-int8``, ``onnx-int4``, ``ort-mobile``); each records the manifest format it writes and the runtime
that runs it by default.
``RUNTIMES``: what runs a model directory, what ``--runtime`` names (``paddle``, ``paddle-inference``,
``onnxruntime``, ``onnxruntime-c``); each records the manifest formats it can run.
"""
from tinydistill.distill.registry import Registry

STEPS = Registry("compression step", modules=("tinydistill.compress.steps",))
FORMATS = Registry("export format", modules=("tinydistill.compress.formats",))
RUNTIMES = Registry("runtime", modules=("tinydistill.compress.runtimes",))
