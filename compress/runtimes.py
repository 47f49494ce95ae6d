"""Runtime sessions: run one model directory on one runtime, numpy in, logits (head order) out.

``RUNTIMES`` maps a runtime name to its session class; each imports its runtime lazily, so the
``onnxruntime`` session never imports paddle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

INPUTS = ("input_ids", "token_type_ids", "attention_mask")
RUNTIMES: dict[str, type] = {}


def runtime(name: str):
    def deco(cls):
        cls.name = name
        RUNTIMES[name] = cls
        return cls
    return deco


class Session:
    name = ""

    def __init__(self, model_dir: Path, manifest: dict, threads: int = 1):
        self.model_dir, self.manifest, self.threads = Path(model_dir), manifest, threads

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


@runtime("paddle")
class PaddleSession(Session):
    """A dygraph model directory run by paddle (the reference every export is checked against)."""

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        import paddle

        from teachers.base import load_model_dir

        if manifest["format"] != "dygraph":
            raise ValueError(f"{model_dir}: runtime 'paddle' needs a dygraph model directory, "
                             f"this one is {manifest['format']!r}")
        self._paddle = paddle
        self.model = load_model_dir(model_dir)[0]
        self.model.eval()

    def run(self, feed):
        paddle = self._paddle
        with paddle.no_grad():
            outs = self.model.export_forward(*(paddle.to_tensor(np.asarray(feed[k], dtype="int64")) for k in INPUTS))
        return [o.numpy() for o in outs]


@runtime("paddle-inference")
class PaddleInferenceSession(Session):
    """``paddle.inference`` on ``model.pdmodel``: oneDNN on, oneDNN INT8 kernels for INT8 programs."""

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        from paddle import inference

        prefix = self.model_dir / manifest.get("model_file", "model.pdmodel")
        params = prefix.with_suffix(".pdiparams")
        if not prefix.is_file():
            raise FileNotFoundError(f"{prefix}: Paddle Inference program not found")
        config = inference.Config(str(prefix), str(params))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        config.enable_mkldnn()
        if manifest.get("precision") == "int8":
            config.enable_mkldnn_int8()
        config.disable_glog_info()
        config.switch_ir_optim(bool(manifest.get("ir_optim", True)))
        self.predictor = inference.create_predictor(config)
        self.input_names = self.predictor.get_input_names()
        self.output_names = self.predictor.get_output_names()

    def run(self, feed):
        for name in self.input_names:
            self.predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feed[name], dtype="int64"))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]


@runtime("onnxruntime")
class OrtSession(Session):
    """ONNX Runtime (CPU) on ``model.onnx`` or the mobile ``model.ort`` format; does not import paddle."""

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        from compress.ort_capi import no_telemetry

        no_telemetry()  # before onnxruntime creates its environment (has no effect if that already happened)
        import onnxruntime as ort

        file = self.model_dir / manifest.get("model_file", "model.onnx")
        if not file.is_file():
            raise FileNotFoundError(f"{file}: ONNX model not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # a batch-1 predictor: no CPU arena and no memory patterns (both hold on to freed buffers for reuse,
        # which costs RSS and, at this size, no measurable time; see experiments/benchmarks/bench_compress.py)
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        if file.suffix == ".ort":  # run from the flatbuffer in place: initializers are not copied at load
            opts.add_session_config_entry("session.use_ort_model_bytes_directly", "1")
            opts.add_session_config_entry("session.use_ort_model_bytes_for_initializers", "1")
        self._int4 = None
        if manifest.get("int4"):  # 4-bit rows on disk, expanded to user-owned INT8 initializers (compress/int4.py)
            from compress.int4 import expand

            buf, layout = expand(self.model_dir, manifest)
            dtypes = {3: np.int8, 2: np.uint8}
            self._int4 = [ort.OrtValue.ortvalue_from_numpy(
                np.frombuffer(buf, dtypes[dt], count=n, offset=off).reshape(dims)) for _, dims, dt, off, n in layout]
            for (name, *_), value in zip(layout, self._int4):
                opts.add_initializer(name, value)  # the values (and buf under them) live as long as the session
        self.session = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed):
        return self.session.run(None, {n: np.ascontiguousarray(feed[n], dtype="int64") for n in self.input_names})


def open_session(model_dir, manifest: dict, runtime_name: str, threads: int = 1) -> Session:
    if runtime_name not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime_name!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[runtime_name](Path(model_dir), manifest, threads)


def as_heads(outputs: Sequence[np.ndarray], heads: Sequence[dict]) -> dict[str, np.ndarray]:
    if len(outputs) != len(heads):
        raise ValueError(f"model returned {len(outputs)} outputs for {len(heads)} heads")
    return {h["name"]: np.asarray(o) for h, o in zip(heads, outputs)}
