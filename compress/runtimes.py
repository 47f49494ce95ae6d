"""Runtimes (``compress.RUNTIMES``): run one model directory, numpy in, logits (head order) out.

Each entry is a ``Session`` class; its meta says which manifest formats it runs (``formats``), what
``tinydistill bench`` loads before the model for its memory breakdown (``preload``: ``module`` or
``module:function``), and, for ``onnxruntime-c``, the end-to-end predictor that replaces
``compress.predictor.Predictor`` (``predictor``) and that its process is a lean one (``lean``: no numpy,
``compress.ort_capi.lean_process``).  Nothing here imports numpy or a runtime at module level: the lean
predictor's process reads this registry too, and each session imports its runtime when it opens, so the
``onnxruntime`` session never imports paddle.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tinydistill.compress import RUNTIMES

if TYPE_CHECKING:
    import numpy as np

INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class Session:
    name = ""

    def __init__(self, model_dir: Path, manifest: dict, threads: int = 1):
        self.model_dir, self.manifest, self.threads = Path(model_dir), manifest, threads

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


@RUNTIMES.register(summary="paddle dygraph on a model_state.pdparams directory (the reference every export is "
                           "checked against)", formats=("dygraph",), preload="paddle.inference", aliases=("dygraph",))
class PaddleSession(Session):
    """A dygraph model directory run by paddle (the reference every export is checked against)."""

    name = "paddle"

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        import paddle

        from tinydistill.teachers.base import load_model_dir

        if manifest["format"] != "dygraph":
            raise ValueError(f"{model_dir}: runtime 'paddle' needs a dygraph model directory, "
                             f"this one is {manifest['format']!r}")
        self._paddle = paddle
        self.model = load_model_dir(model_dir)[0]
        self.model.eval()

    def run(self, feed):
        import numpy as np

        paddle = self._paddle
        with paddle.no_grad():
            outs = self.model.export_forward(*(paddle.to_tensor(np.asarray(feed[k], dtype="int64")) for k in INPUTS))
        return [o.numpy() for o in outs]


@RUNTIMES.register(summary="paddle.inference on model.pdmodel, oneDNN on (its INT8 kernels for INT8 programs)",
                   formats=("paddle-inference",), preload="paddle.inference")
class PaddleInferenceSession(Session):
    """``paddle.inference`` on ``model.pdmodel``: oneDNN on, oneDNN INT8 kernels for INT8 programs."""

    name = "paddle-inference"

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
        import numpy as np

        for name in self.input_names:
            self.predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feed[name], dtype="int64"))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]


@RUNTIMES.register(summary="ONNX Runtime (CPU, Python package) on model.onnx or the mobile model.ort; no paddle",
                   formats=("onnx", "ort"), preload="onnxruntime", aliases=("onnx", "ort"))
class OrtSession(Session):
    """ONNX Runtime (CPU) on ``model.onnx`` or the mobile ``model.ort`` format; does not import paddle."""

    name = "onnxruntime"

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        import numpy as np

        from tinydistill.compress.ort_capi import no_telemetry

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
            from tinydistill.compress.int4 import expand

            buf, layout = expand(self.model_dir, manifest)
            dtypes = {3: np.int8, 2: np.uint8}
            self._int4 = [ort.OrtValue.ortvalue_from_numpy(
                np.frombuffer(buf, dtypes[dt], count=n, offset=off).reshape(dims)) for _, dims, dt, off, n in layout]
            for (name, *_), value in zip(layout, self._int4):
                opts.add_initializer(name, value)  # the values (and buf under them) live as long as the session
        self.session = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed):
        import numpy as np

        return self.session.run(None, {n: np.ascontiguousarray(feed[n], dtype="int64") for n in self.input_names})


@RUNTIMES.register(summary="libonnxruntime's C API through ctypes on ONNX/.ort directories: a predictor process "
                           "without numpy, paddle or the onnxruntime package", formats=("onnx", "ort"),
                   preload="tinydistill.compress.ort_capi:api", predictor="tinydistill.compress.ort_capi:CPredictor", lean=True)
class CApiSession(Session):
    """libonnxruntime's C API through ctypes on ONNX/.ort directories: its predictor process imports neither
    numpy, paddle nor the onnxruntime package (compress/ort_capi.py); this session is the numpy adapter."""

    name = "onnxruntime-c"

    def __init__(self, model_dir, manifest, threads=1):
        super().__init__(model_dir, manifest, threads)
        from tinydistill.compress.ort_capi import open_csession

        file = self.model_dir / manifest.get("model_file", "model.onnx")
        if not file.is_file():
            raise FileNotFoundError(f"{file}: ONNX model not found")
        self.session = open_csession(self.model_dir, manifest, threads)

    def run(self, feed):
        from array import array

        import numpy as np

        c_feed = {}
        for name in self.session.input_names:
            value = np.ascontiguousarray(feed[name], dtype="int64")
            c_feed[name] = (array("q", value.tobytes()), list(value.shape))
        return [np.frombuffer(data, dtype=np.float32).reshape(shape) for data, shape in self.session.run(c_feed)]


def open_session(model_dir, manifest: dict, runtime_name: str, threads: int = 1) -> Session:
    from tinydistill.distill.registry import RegistryError

    try:
        cls = RUNTIMES.get(runtime_name)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    return cls(Path(model_dir), manifest, threads)


def as_heads(outputs: Sequence[np.ndarray], heads: Sequence[dict]) -> dict[str, np.ndarray]:
    import numpy as np

    if len(outputs) != len(heads):
        raise ValueError(f"model returned {len(outputs)} outputs for {len(heads)} heads")
    return {h["name"]: np.asarray(o) for h, o in zip(heads, outputs)}
