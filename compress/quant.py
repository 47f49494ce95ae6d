"""Quantisation steps: QAT with KD, post-training static INT8, INT8 embeddings (imports paddle).

Quantised directories run on Paddle Inference (``format: paddle-inference``, ``precision: int8``: oneDNN
INT8 kernels) and carry ``source/``, the dygraph directory of the float weights they were built from, plus
the recipe in ``manifest["quant"]``; ``export(..., "onnx-int8")`` rebuilds the same model for ONNX Runtime
from those (paddle2onnx cannot convert paddleslim's QAT programs).  Every result is checked on dev data
against its input before it is written: more than ``tolerance`` points lost raises ``ExportError``.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path

from tinydistill.compress.common import (SOURCE_DIR, ExportError, copy_tokenizer_files, deploy_size_bytes, read_manifest,
                             write_manifest)
from tinydistill.compress.evaluation import dir_metrics, require_float, step_report, task_and_data
from tinydistill.compress.export import float_source, input_spec, save_program


def _quant_manifest(manifest: dict, quant: dict, model_file: str = "model.pdmodel", fmt="paddle-inference") -> dict:
    new = {k: v for k, v in manifest.items() if k not in ("verification", "backend", "exported_from")}
    new.update({"format": fmt, "precision": "int8", "model_file": model_file,
                "quant": {**(manifest.get("quant") or {}), **quant}})
    return new


def _check(name, got: dict, ref: dict, metric: str, tolerance: float, where) -> dict:
    if got[metric] < ref[metric] - tolerance:
        raise ExportError(f"{where}: {name} result fails its check: dev {metric} {got[metric]:.2f} vs "
                          f"{ref[metric]:.2f} before quantisation (tolerance {tolerance} points); refusing it")
    return {"metric": metric, "before": ref[metric], "after": got[metric], "tolerance": tolerance, "passed": True}


def _strip_wrappers(key: str) -> str:
    """State-dict key of a QAT-wrapped layer -> the key of the original layer."""
    return key.replace("._layer.", ".")


def skip_layers(model, prefixes) -> list[str]:
    """Keep the Linear layers under ``prefixes`` in FP32 (``skip_quant``); by default the task heads and the
    pooler: quantising the layers next to the logits costs the most accuracy for the least speed."""
    from paddle import nn

    names = [n for n, l in model.named_sublayers() if isinstance(l, nn.Linear) and n.startswith(tuple(prefixes))]
    for n, l in model.named_sublayers():
        if n in names:
            l.skip_quant = True
    return names


# -- qat ---------------------------------------------------------------------------------------------------
def qat(in_dir, out_dir, p, ctx) -> dict:
    import paddle
    from paddleslim import QAT

    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.fsutil import atomic_dir
    from tinydistill.distill.schema import from_dict
    from tinydistill.distill.trainer import train
    from tinydistill.distill.modeldir import load_model_dir, save_model_dir

    started = time.time()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    require_float(in_dir, "qat")
    model, tok, manifest = load_model_dir(in_dir)
    task, train_ex, dev_ex = task_and_data(manifest, ctx)
    metric, before = dir_metrics(in_dir, ctx, dev_ex)
    fp32 = copy.deepcopy(model)
    fp32.eval()
    float_keys = list(fp32.state_dict())
    paddle.seed(ctx.seed)
    quanter = QAT(config={
        "weight_quantize_type": p.weight_quantize_type, "activation_quantize_type": p.activation_quantize_type,
        "weight_bits": 8, "activation_bits": 8, "dtype": "int8", "window_size": 10000, "moving_rate": 0.9,
        "quantizable_layer_type": ["Linear"], "onnx_format": True})
    skipped = skip_layers(model, p.fp32_layers)
    quanter.quantize(model)
    cfg = from_dict(DistillConfig, {"epochs": p.epochs, "max_steps": p.max_steps, "lr": p.lr,
                                    "batch_size": p.batch_size, "losses": p.losses, "seed": ctx.seed,
                                    "progress": ctx.progress, "teacher_cache": "off"}, "compress.qat")
    # trained in memory: the engine loads the best dev weights (QAT wrappers included) back into ``model``
    result = train(model, tok, task, train_ex, dev_ex, cfg, None, teachers=[(fp32, tok)])
    state = model.state_dict()
    model.eval()
    float_state = {_strip_wrappers(k): v for k, v in state.items()}
    missing = [k for k in float_keys if k not in float_state]
    if missing:
        raise ExportError(f"QAT state has no float weights for {missing[:3]}")
    fp32.set_state_dict({k: float_state[k] for k in float_keys})
    quant = {"method": "qat", "weights": f"int8 {p.weight_quantize_type}",
             "activations": p.activation_quantize_type, "embedding": False, "fp32_layers": skipped}
    with atomic_dir(out_dir) as tmp:
        from tinydistill.compress.export import export_layer

        quanter.save_quantized_model(export_layer(model), str(tmp / "model"), input_spec=input_spec())
        info = tmp / "model.pdiparams.info"
        if info.exists():
            info.unlink()
        save_model_dir(tmp / SOURCE_DIR, fp32, tok, task, extra={"qat": {"from": str(in_dir)}})
        copy_tokenizer_files(in_dir, tmp, manifest)
        write_manifest(tmp, _quant_manifest(manifest, quant))
        _, after = dir_metrics(tmp, ctx, dev_ex)
        check = _check("QAT", after, before, metric, p.tolerance, out_dir)
    return step_report("qat", p, in_dir, out_dir, ctx, started, metrics=after,
                       extra={"check": check, "training": {"best_metrics": result.best_metrics, "steps": result.global_step,
                                                             "best_step": result.best_step,
                                                             "epochs": round(result.epochs_run, 3)}})


# -- ptq ---------------------------------------------------------------------------------------------------
def _calibration_batches(task, tok, examples, batch_size: int = 16) -> list[dict]:
    encoded = [task.encode(ex, tok) for ex in examples]
    batches = []
    for start in range(0, len(encoded), batch_size):
        b = task.collate(encoded[start:start + batch_size], pad_id=tok.pad_token_id)
        batches.append({k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    return batches


class _Loader:
    """The callable data loader ``quant_post_static`` iterates (feed dicts)."""

    def __init__(self, batches):
        self.batches = batches

    def __call__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _ptq_paddle(src_dir: Path, batches, out: Path, algo: str) -> None:
    import paddle
    from paddleslim.quant import quant_post_static

    from tinydistill.distill.modeldir import load_model_dir

    with tempfile.TemporaryDirectory() as work:
        save_program(load_model_dir(src_dir)[0], Path(work) / "model")
        paddle.enable_static()
        try:
            exe = paddle.static.Executor(paddle.CPUPlace())
            scope = paddle.static.Scope()
            with paddle.static.scope_guard(scope):
                quant_post_static(executor=exe, model_dir=work, quantize_model_path=str(out),
                                  data_loader=_Loader(batches), model_filename="model.pdmodel",
                                  params_filename="model.pdiparams", batch_nums=len(batches), algo=algo,
                                  weight_quantize_type="channel_wise_abs_max",
                                  quantizable_op_type=["matmul", "matmul_v2", "mul"], onnx_format=True, scope=scope)
        finally:
            paddle.disable_static()


def _ptq_onnx(src_dir: Path, manifest: dict, batches, out: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from tinydistill.compress.export import _onnx_fp32

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as work:
        fp32 = Path(work) / "fp32.onnx"
        _onnx_fp32(src_dir, manifest, fp32, Path(work))
        quantize_static(str(fp32), str(out / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.MinMax)


def ptq(in_dir, out_dir, p, ctx) -> dict:
    from tinydistill.distill.fsutil import atomic_dir

    started = time.time()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    manifest = read_manifest(in_dir)
    src = float_source(in_dir, manifest)
    src_manifest = read_manifest(src)
    from tinydistill.tasks.tokenization import load_tokenizer

    tok = load_tokenizer(src, src_manifest["tokenizer"])
    task, train_ex, dev_ex = task_and_data(src_manifest, ctx)
    metric, before = dir_metrics(in_dir, ctx, dev_ex)
    batches = _calibration_batches(task, tok, train_ex[: p.calibration_examples])
    methods = ["paddle", "onnx"] if p.method == "both" else [p.method]
    candidates, records = {}, {}
    base = out_dir.parent / f".{out_dir.name}.ptq"
    shutil.rmtree(base, ignore_errors=True)
    for method in methods:
        cand = base / method
        cand.mkdir(parents=True)
        try:
            if method == "paddle":
                _ptq_paddle(src, batches, cand, p.paddle_algo)
                new = _quant_manifest(src_manifest, {"method": "ptq-paddleslim", "algo": p.paddle_algo,
                                                     "weights": "int8 channel_wise_abs_max", "embedding": False})
            else:
                _ptq_onnx(src, src_manifest, batches, cand)
                new = _quant_manifest(src_manifest, {"method": "ptq-onnxruntime-qdq", "weights": "int8 per-channel",
                                                     "activations": "uint8 minmax", "embedding": False},
                                      model_file="model.onnx", fmt="onnx")
            copy_tokenizer_files(src, cand, src_manifest)
            shutil.copytree(src, cand / SOURCE_DIR, ignore=shutil.ignore_patterns("report.json"))
            write_manifest(cand, new)
            _, got = dir_metrics(cand, ctx, dev_ex)
            records[method] = {"dev_metrics": got, "size_bytes": deploy_size_bytes(cand)}
            candidates[method] = got[metric]
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - one method failing must not hide the other; recorded
            records[method] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if not candidates:
        shutil.rmtree(base, ignore_errors=True)
        raise ExportError(f"ptq: every method failed: {records}")
    best = max(candidates, key=candidates.get)
    check = _check(f"PTQ ({best})", {metric: candidates[best]}, before, metric, p.tolerance, out_dir)
    with atomic_dir(out_dir) as tmp:
        shutil.rmtree(tmp)
        shutil.copytree(base / best, tmp)
    shutil.rmtree(base, ignore_errors=True)
    return step_report("ptq", p, in_dir, out_dir, ctx, started, metrics=records[best]["dev_metrics"],
                       extra={"check": check, "kept": best, "candidates": records})


# -- embedding_int8 ----------------------------------------------------------------------------------------
def quantize_program_embeddings(prefix: Path, out_prefix: Path, quantize_type: str) -> None:
    """paddleslim ``quant_embedding`` (INT8 ``lookup_table_v2`` weights) on a saved inference program."""
    import paddle
    from paddleslim.quant import quant_embedding

    paddle.enable_static()
    try:
        place = paddle.CPUPlace()
        exe = paddle.static.Executor(place)
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
            config = {"quantize_op_types": ["lookup_table_v2"], "lookup_table_v2": {"quantize_type": quantize_type}}
            qprog = quant_embedding(program, place, config, scope=scope)
            block = qprog.global_block()
            paddle.static.save_inference_model(str(out_prefix), [block.var(n) for n in feeds],
                                               [block.var(f.name) for f in fetches], exe, program=qprog)
    finally:
        paddle.disable_static()


def embedding_int8(in_dir, out_dir, p, ctx) -> dict:
    from tinydistill.distill.fsutil import atomic_dir

    started = time.time()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    manifest = read_manifest(in_dir)
    metric, before = dir_metrics(in_dir, ctx)
    quant = {"embedding": True, "embedding_method": f"{p.quantize_type} int8"}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as work:
        fmt = manifest["format"]
        if fmt == "onnx":  # quantised Gather on the ONNX graph
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(in_dir / manifest.get("model_file", "model.onnx")), str(tmp / "model.onnx"),
                             op_types_to_quantize=["Gather"], per_channel=False, weight_type=QuantType.QInt8)
            new = _quant_manifest(manifest, quant, model_file="model.onnx", fmt="onnx")
        elif fmt in ("dygraph", "paddle-inference"):
            if fmt == "dygraph":
                from tinydistill.distill.modeldir import load_model_dir

                prefix = Path(work) / "model"
                save_program(load_model_dir(in_dir)[0], prefix)
            else:
                prefix = in_dir / Path(manifest.get("model_file", "model.pdmodel")).stem
            quantize_program_embeddings(prefix, tmp / "model", p.quantize_type)
            new = _quant_manifest(manifest, {**quant, **({"method": "embedding-only", "weights": "fp32"}
                                                         if fmt == "dygraph" else {})})
            new["precision"] = "int8"
        else:
            raise ExportError(f"{in_dir}: embedding_int8 works on dygraph, paddle-inference or onnx directories, "
                              f"not {fmt!r}")
        src = float_source(in_dir, manifest) if fmt != "onnx" or (in_dir / SOURCE_DIR).is_dir() else None
        if src is not None:
            shutil.copytree(src, tmp / SOURCE_DIR, ignore=shutil.ignore_patterns("report.json"))
        copy_tokenizer_files(in_dir, tmp, manifest)
        write_manifest(tmp, new)
        _, after = dir_metrics(tmp, ctx)
        check = _check("embedding_int8", after, before, metric, p.tolerance, out_dir)
    return step_report("embedding_int8", p, in_dir, out_dir, ctx, started, metrics=after, extra={"check": check})

