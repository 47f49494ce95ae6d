"""The compression stage: steps that take a model directory and write a new one plus a report, the
export backends, the predictor and the benchmark harness.

``STEPS``: compression steps (``vocab_prune``, ``width_prune``, ``qat``, ``ptq``, ``embedding_int8``).
``BACKENDS``: export/runtime backends (``paddle``, ``paddle-inference``, ``onnx``, ``onnx-int8``, ``onnx-int4``,
``ort-mobile``, ``onnxruntime-c``).
"""
from distill.registry import Registry

STEPS = Registry("compression step", modules=("compress.steps",))
BACKENDS = Registry("backend", modules=("compress.backends",))
