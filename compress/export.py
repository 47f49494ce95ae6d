"""Export a model directory to a runtime, verified against its source before it is written.

``export(model_dir, backend, out_dir)`` builds the new directory under a temporary name, runs the source
and the export on the same inputs and only then renames it into place:

* FP32 export of an FP32 source: max |logit difference| over every head must be below ``atol`` (1e-4);
* anything quantised (INT8, INT4): the dev main metric must be within ``tolerance`` points (default 0.5) of
  the source's, and every output finite.  A failed check raises ``ExportError``; nothing is written at ``out_dir``.

The builders (``build_*``) are what the ``FORMATS`` registry entries (``compress/formats.py``) point to.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinydistill.compress.common import (SOURCE_DIR, ExportError, copy_tokenizer_files, deploy_size_bytes, read_manifest,
                             write_manifest)

ATOL = 1e-4


# -- paddle programs ----------------------------------------------------------------------------------
def input_spec():
    import paddle

    return [paddle.static.InputSpec([None, None], "int64", name) for name in
            ("input_ids", "token_type_ids", "attention_mask")]


def export_layer(model):
    """A Layer whose ``forward`` is ``model.export_forward`` (tuple of logits in head order)."""
    import paddle

    class ExportForward(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, token_type_ids, attention_mask):
            return tuple(self.inner.export_forward(input_ids, token_type_ids, attention_mask))

    return ExportForward(model)


def save_program(model, prefix: Path) -> None:
    """``paddle.jit.save`` of a deep copy of ``model`` (to_static changes a Layer in place)."""
    import paddle

    layer = export_layer(copy.deepcopy(model))
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=input_spec(), full_graph=True)
    paddle.jit.save(static, str(prefix))
    info = Path(str(prefix) + ".pdiparams.info")
    if info.exists():
        info.unlink()


def float_source(model_dir: Path, manifest: dict) -> Path:
    """The dygraph directory holding a model's float weights (itself, or ``source/`` of a quantised dir)."""
    if manifest["format"] == "dygraph":
        return model_dir
    if (model_dir / SOURCE_DIR / "manifest.json").is_file():
        return model_dir / SOURCE_DIR
    raise ExportError(f"{model_dir}: format {manifest['format']!r} has no float weights ({SOURCE_DIR}/) to "
                      "export from")


def _program_of(model_dir: Path, manifest: dict, work: Path) -> Path:
    """Path prefix of an FP32 Paddle program of the model (saved into ``work`` if needed)."""
    if manifest["format"] == "paddle-inference" and manifest.get("precision", "fp32") == "fp32":
        return model_dir / Path(manifest.get("model_file", "model.pdmodel")).stem
    from tinydistill.distill.modeldir import load_model_dir

    model = load_model_dir(float_source(model_dir, manifest))[0]
    prefix = work / "model"
    save_program(model, prefix)
    return prefix


# -- builders (one per backend) ----------------------------------------------------------------------
def build_paddle_inference(src: Path, manifest: dict, out: Path, params: dict) -> dict:
    if manifest["format"] == "paddle-inference":
        for suffix in (".pdmodel", ".pdiparams"):
            shutil.copy2(src / f"model{suffix}", out / f"model{suffix}")
        return {"model_file": "model.pdmodel", "precision": manifest.get("precision", "fp32")}
    if manifest["format"] != "dygraph":
        raise ExportError(f"{src}: cannot build a Paddle program from format {manifest['format']!r}")
    from tinydistill.distill.modeldir import load_model_dir

    save_program(load_model_dir(src)[0], out / "model")
    return {"model_file": "model.pdmodel", "precision": "fp32", **_ir_probe(out, manifest)}


def _ir_probe(out: Path, manifest: dict) -> dict:
    """Run the program once with Paddle Inference's IR passes; if they break it (seen with TextCNN: a fused op
    with a wrong broadcast) the directory records ``ir_optim: false`` and runs unfused."""
    from tinydistill.compress.runtimes import PaddleInferenceSession

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (3, 7)).astype("int64")
    feed = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids)}
    try:
        PaddleInferenceSession(out, {**manifest, "model_file": "model.pdmodel", "precision": "fp32"}).run(feed)
        return {}
    except Exception as exc:  # noqa: BLE001 - any failure of the optimised program means: run it unoptimised
        return {"ir_optim": False, "ir_optim_error": str(exc).strip().splitlines()[0][:300]}


def _onnx_fp32(src: Path, manifest: dict, target: Path, work: Path) -> None:
    if manifest["format"] == "onnx" and manifest.get("precision", "fp32") == "fp32":
        shutil.copy2(src / manifest.get("model_file", "model.onnx"), target)
        return
    prefix = _program_of(src, manifest, work)
    # in a child process: paddle2onnx aborts the whole process (SIGABRT) on an operator it cannot convert
    code = ("import paddle2onnx, sys; paddle2onnx.export(sys.argv[1], sys.argv[2], sys.argv[3], opset_version=13, "
            "enable_onnx_checker=True, verbose=False)")
    proc = subprocess.run([sys.executable, "-c", code, str(prefix) + ".pdmodel", str(prefix) + ".pdiparams",
                           str(target)], capture_output=True, text=True)
    if proc.returncode != 0 or not Path(target).is_file():
        lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "ERROR" in l or "rror" in l]
        raise ExportError(f"paddle2onnx cannot convert {src} (exit {proc.returncode}): "
                          f"{' | '.join(lines[:4]) or proc.stderr.strip()[-400:]}")


def build_onnx(src: Path, manifest: dict, out: Path, params: dict) -> dict:
    with tempfile.TemporaryDirectory() as work:
        _onnx_fp32(src, manifest, out / "model.onnx", Path(work))
    return {"model_file": "model.onnx", "precision": "fp32"}


def quantize_onnx(fp32: Path, target: Path, embedding: bool) -> None:
    """ONNX Runtime dynamic INT8: per-channel MatMul weights, and the embedding ``Gather`` tables if asked."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ["MatMul", "Gather"] if embedding else ["MatMul"]
    quantize_dynamic(str(fp32), str(target), op_types_to_quantize=ops, per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})


def _embedding_flag(manifest: dict, params: dict) -> bool:
    if params.get("quantize_embedding") is not None:
        return bool(params["quantize_embedding"])
    quant = manifest.get("quant") or {}
    return bool(quant.get("embedding", True)) if quant else True


def build_onnx_int8(src: Path, manifest: dict, out: Path, params: dict) -> dict:
    embedding = _embedding_flag(manifest, params)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if manifest["format"] == "onnx" and manifest.get("precision") == "fp32":
            fp32 = src / manifest.get("model_file", "model.onnx")
        else:
            fp32 = work / "fp32.onnx"
            _onnx_fp32(float_source(src, manifest), read_manifest(float_source(src, manifest)), fp32, work)
        quantize_onnx(fp32, out / "model.onnx", embedding)
    quant = dict(manifest.get("quant") or {})
    quant.update({"weights": "int8 per-channel (onnxruntime dynamic)", "embedding": embedding})
    return {"model_file": "model.onnx", "precision": "int8", "quant": quant}


def optimise_onnx(src: Path, target: Path) -> str:
    """ONNX Runtime's graph optimisations (``ORT_ENABLE_EXTENDED``: constant folding, the fusions into
    ``DynamicQuantizeMatMul``/``MatMulIntegerToFloat``/``SkipLayerNormalization``/``Gelu``...; not the layout
    level, whose output is specific to this CPU) applied once, offline, and the optimised graph saved with its
    weights inline: a session that loads it with optimisation off runs the same graph without building it, so no
    optimiser (its code and its copies of the graph) runs in the deployed process.  Returns the ORT version."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(target)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    if not Path(target).is_file():
        raise ExportError(f"onnxruntime did not write the optimised model of {src}")
    return ort.__version__


def build_onnx_int4(src: Path, manifest: dict, out: Path, params: dict) -> dict:
    """``onnx-int8``, then its large INT8 tensors stored as 4-bit rows in ``model.int4`` that the predictor
    expands back to INT8 when it loads the model (``compress/int4.py``): INT4 size on disk, the INT8 kernels.
    ``int4_embedding`` (default true) packs the quantised embedding tables too, ``int4_block`` (default 64) is the
    most values one step code covers; ``quantize_embedding`` as for ``onnx-int8``.  ``offline_optimize`` (default
    true): the graph is ONNX Runtime's optimised one (``optimise_onnx``; the manifest's ``graph_optimized``), which
    the ``onnxruntime-c`` predictor loads with optimisation off (1.6 MiB lower peak RSS on the nano, same kernels)."""
    import onnx

    from tinydistill.compress.int4 import pack_int4

    with tempfile.TemporaryDirectory() as work:
        int8 = build_onnx_int8(src, manifest, Path(work), params)
        graph, optimized = Path(work) / "model.onnx", None
        if params.get("offline_optimize", True):
            optimized = {"level": "extended", "by": f"onnxruntime {optimise_onnx(graph, Path(work) / 'opt.onnx')}"}
            graph = Path(work) / "opt.onnx"
        int4_embedding = bool(int8["quant"]["embedding"]) and bool(params.get("int4_embedding", True))
        model, blob, spec = pack_int4(onnx.load(str(graph)), embedding=int4_embedding,
                                      block=int(params.get("int4_block", 64)))
    (out / "model.onnx").write_bytes(model.SerializeToString())  # not onnx.save: it would chase the external data
    (out / spec["file"]).write_bytes(blob)
    quant = dict(int8["quant"])
    quant.update({"weights": "int4 on disk (one step per segment of <= int4_block values of a row), expanded to the "
                             "int8 kernels of onnxruntime dynamic quantisation at load", "int4_embedding": int4_embedding,
                  "int4_block": int(params.get("int4_block", 64)),
                  "int4_tensors": len(spec["tensors"]), "int4_max_relative_rms_error": spec["max_relative_rms_error"]})
    return {"model_file": "model.onnx", "precision": "int4", "quant": quant, "int4": spec,
            **({"graph_optimized": optimized} if optimized else {})}


def build_ort_mobile(src: Path, manifest: dict, out: Path, params: dict) -> dict:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        onnx_dir = work / "onnx"
        onnx_dir.mkdir()
        if manifest.get("int4"):
            raise ExportError(f"{src}: an onnx-int4 directory expands its weights at load; export ort-mobile from "
                              "its source instead")
        if manifest["format"] == "onnx":
            shutil.copy2(src / manifest.get("model_file", "model.onnx"), onnx_dir / "model.onnx")
            extra = {"precision": manifest.get("precision", "fp32"), "quant": manifest.get("quant")}
        else:  # the mobile format is for the INT8 model unless asked otherwise
            builder = build_onnx if params.get("precision") == "fp32" else build_onnx_int8
            extra = builder(src, manifest, onnx_dir, params)
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_dir / "model.onnx"),
               "--output_dir", str(work / "ort"), "--optimization_style", "Fixed"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        produced = sorted((work / "ort").glob("*.ort"))
        if proc.returncode != 0 or not produced:
            raise ExportError(f"convert_onnx_models_to_ort failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        shutil.copy2(produced[0], out / "model.ort")
    return {"model_file": "model.ort", "precision": extra.get("precision", "int8"),
            **({"quant": extra["quant"]} if extra.get("quant") else {})}


# -- verification -------------------------------------------------------------------------------------
def check_inputs(predictor, n: int = 64) -> dict[str, np.ndarray]:
    """A batch to compare logits on: dev texts when the task's data is there, else random ids."""
    if predictor.task is not None:
        try:
            examples = predictor.task.load("dev")[:n]
            return predictor.collate(predictor.encode(examples))
        except (FileNotFoundError, OSError, ValueError, RuntimeError):
            pass
    rng = np.random.default_rng(0)
    length = min(16, predictor.max_seq_length or 16)
    ids = rng.integers(0, predictor.tokenizer.vocab_size, (8, length)).astype("int64")
    mask = np.ones_like(ids)
    mask[::2, length // 2:] = 0
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def dev_metric(predictor, max_examples: int | None = None) -> tuple[str, float, dict]:
    task = predictor.task
    if task is None:
        raise ExportError(f"{predictor.model_dir}: INT8 results are checked on dev data, but the manifest "
                          "records no task")
    try:
        examples = task.load("dev")
    except (FileNotFoundError, OSError) as exc:
        raise ExportError(f"INT8 results are checked on dev data, which is not available ({exc}); "
                          "give data_dir (or check=False)") from None
    if max_examples:
        examples = examples[:max_examples]
    metrics = predictor.evaluate(examples)
    return task.main_metric, float(metrics[task.main_metric]), metrics


def verify(src_dir: Path, dst_dir: Path, tolerance: float = 0.5, atol: float = ATOL, data_dir=None,
           max_examples: int | None = None, src_metrics: dict | None = None) -> dict:
    """Compare ``dst_dir`` with ``src_dir`` (see module doc); returns the check record or raises ExportError."""
    from tinydistill.compress.predictor import Predictor

    src = Predictor.from_dir(src_dir, data_dir=data_dir)
    dst = Predictor.from_dir(dst_dir, data_dir=data_dir)
    feed = check_inputs(src)
    a, b = src.logits(feed), dst.logits(feed)
    diff = max(float(np.abs(a[h] - b[h]).max()) for h in a)
    finite = all(np.isfinite(b[h]).all() for h in b)
    record = {"max_abs_logit_diff": diff, "finite": finite, "atol": atol}
    if not finite:
        raise ExportError(f"{dst_dir}: the exported model outputs NaN/inf; refusing it")
    quantised = "fp32" != src.manifest.get("precision", "fp32") or "fp32" != dst.manifest.get("precision", "fp32")
    if not quantised:
        if diff >= atol:
            raise ExportError(f"{dst_dir}: exported model differs from {src_dir}: max |logit diff| "
                              f"{diff:.3g} >= {atol:g}")
        record["passed"] = True
        return record
    name, ref, ref_all = (src_metrics["name"], src_metrics["value"], src_metrics["all"]) if src_metrics else \
        dev_metric(src, max_examples)
    _, got, got_all = dev_metric(dst, max_examples)
    record.update({"metric": name, "source": ref, "export": got, "tolerance": tolerance,
                   "source_metrics": ref_all, "export_metrics": got_all})
    if got < ref - tolerance:
        precision = dst.manifest.get("precision", "fp32").upper()
        raise ExportError(f"{dst_dir}: {precision} model fails its check: dev {name} {got:.2f} vs {ref:.2f} from "
                          f"{src_dir} (tolerance {tolerance} points); refusing it")
    record["passed"] = True
    return record


# -- entry point --------------------------------------------------------------------------------------
def export(model_dir, backend: str, out_dir, check: bool = True, tolerance: float = 0.5, atol: float = ATOL,
           data_dir: str | None = None, max_check_examples: int | None = None, **params) -> dict:
    """Export ``model_dir`` in export format ``backend`` (a ``FORMATS`` name) to ``out_dir``; returns the report."""
    from tinydistill.compress import FORMATS
    from tinydistill.distill.fsutil import atomic_dir, write_json

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    entry = FORMATS.entry(backend)
    if not entry.meta.get("builder"):
        raise ExportError(f"export format {entry.name!r} needs no export: it runs {entry.meta['format']} model "
                          "directories as they are")
    manifest = read_manifest(model_dir)
    module, func = entry.meta["builder"].split(":")
    builder = getattr(__import__(module, fromlist=[func]), func)
    start = time.time()
    with atomic_dir(out_dir) as tmp:
        updates = builder(model_dir, manifest, tmp, params)
        new = {k: v for k, v in manifest.items() if k not in ("quant", "precision", "model_file", "verification",
                                                              "int4", "graph_optimized")}
        new.update({"format": entry.meta["format"], "backend": entry.name, "exported_from": str(model_dir)})
        new.update(updates)
        copy_tokenizer_files(model_dir, tmp, manifest)
        write_manifest(tmp, new)
        record = verify(model_dir, tmp, tolerance, atol, data_dir, max_check_examples) if check else {"skipped": True}
        report = {"backend": entry.name, "format": new["format"], "precision": new.get("precision", "fp32"),
                  "source": str(model_dir), "out_dir": str(out_dir), "size_bytes": deploy_size_bytes(tmp),
                  "check": record, "seconds": round(time.time() - start, 2)}
        if "export_metrics" in record and not max_check_examples:
            report["dev"] = record["export_metrics"]  # measured on the whole dev split by the INT8 check
        new["verification"] = {k: v for k, v in record.items() if not k.endswith("_metrics")}
        write_manifest(tmp, new)
        write_json(tmp / "report.json", report)
    return report
