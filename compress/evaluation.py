"""Helpers shared by the steps: task data, dev metrics of a directory on its runtime, and the step report."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tinydistill.compress.common import REPORT, build_task, deploy_size_bytes, read_manifest


def require_float(in_dir, step: str) -> None:
    """Pruning and QAT need float weights: a clear ordering error for an already quantised/exported input."""
    from tinydistill.distill.schema import ConfigError

    manifest = read_manifest(in_dir)
    if manifest["format"] != "dygraph":
        raise ConfigError(f"compress.{step}: needs a float (dygraph) model directory, but {in_dir} is "
                          f"{manifest['format']} {manifest.get('precision', 'fp32')}; put {step} before the "
                          "quantisation steps (qat, ptq, embedding_int8) and exports")


def task_and_data(manifest: dict, ctx, need_train: bool = True):
    """(task, train examples, dev examples) for a model directory's task, capped by the context."""
    task = build_task(manifest, data_dir=ctx.data_dir)
    if task is None:
        raise ValueError("this step needs the model's task (manifest 'task' is null)")
    train = task.training_examples() if need_train else []
    dev = task.load("dev")
    if ctx.max_train_examples:
        train = train[: ctx.max_train_examples]
    if ctx.max_dev_examples:
        dev = dev[: ctx.max_dev_examples]
    return task, train, dev


def model_latency_ms(predictor, seq_len: int = 16, batch_size: int = 1, runs: int = 50, warmup: int = 10) -> dict:
    """Model-only latency (p50/p90/mean ms) of a predictor on a fixed batch of ``seq_len`` real-looking ids."""
    from tinydistill.compress.bench import time_ms

    rng = np.random.default_rng(0)
    ids = rng.integers(5, predictor.tokenizer.vocab_size, (batch_size, seq_len)).astype("int64")
    feed = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids)}
    return time_ms(lambda: predictor.logits(feed), runs, warmup)


def dir_metrics(model_dir, ctx, examples=None) -> tuple[str, dict]:
    """(main metric name, dev metrics) of a model directory run on its own runtime."""
    from tinydistill.compress.predictor import Predictor

    p = Predictor.from_dir(model_dir, data_dir=ctx.data_dir, threads=ctx.threads)
    return p.task.main_metric, _dev_metrics(p, ctx, examples)


def _dev_metrics(predictor, ctx, examples=None) -> dict:
    """Metrics of ``examples`` (default: the dev split, capped by the context) on an open predictor."""
    if examples is None:
        examples = predictor.task.load("dev")
        if ctx.max_dev_examples:
            examples = examples[: ctx.max_dev_examples]
    return {k: float(v) for k, v in predictor.evaluate(examples).items()}


def step_report(step: str, params, in_dir, out_dir, ctx, started: float, extra: dict | None = None,
                metrics: dict | None = None) -> dict:
    """Measure ``out_dir`` (dev metrics, deployable size, parameters, model-only latency), save and return."""
    from tinydistill.compress.predictor import Predictor
    from tinydistill.distill.fsutil import write_json
    from tinydistill.distill.schema import to_dict

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    p = Predictor.from_dir(out_dir, data_dir=ctx.data_dir, threads=ctx.threads)
    if metrics is None:
        metrics = _dev_metrics(p, ctx)
    report = {
        "step": step, "applied": True, "params": to_dict(params), "in_dir": str(in_dir), "out_dir": str(out_dir),
        "format": manifest["format"], "precision": manifest.get("precision", "fp32"), "runtime": p.runtime,
        "main_metric": p.task.main_metric, "dev_metrics": metrics,
        "size_bytes": deploy_size_bytes(out_dir), "num_parameters": manifest.get("num_parameters"),
        "latency_ms_b1_s16": model_latency_ms(p, runs=ctx.latency_runs),
        "seconds": round(time.time() - started, 2), **(extra or {}),
    }
    if not ctx.max_dev_examples:
        report["dev"] = metrics  # the whole dev split (the runner reads this key)
    write_json(out_dir / REPORT, report)
    return report
