"""Equal-budget controls of the compression steps that train (width-pruning recovery, QAT).

A training step changes two things at once: it compresses the model and it trains it for more steps.  On a
model that is not trained to a plateau the extra steps alone raise its accuracy, so ``step - input`` credits
compression with what training did.  The control continues training the step's *input* model, uncompressed,
with the same training configuration, data, losses and teacher (the input model itself, as in the step), by
the same training function; ``step - control`` is then the effect of compressing alone (``Δ compression``).

``training_config(step, params, ctx)`` is the ``DistillConfig`` the step trains with (None for steps that
do not train); ``run_control`` writes the control's model directory and returns its training facts.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

#: what each training step passes to ``distill.trainer.train`` besides its model (compress/prune.py,
#: compress/quant.py); a step missing here has no control
_CONFIGS = {
    "width_prune": lambda p, ctx: None if p.recover is None else
    {**_plain(p.recover), "seed": ctx.seed, "progress": ctx.progress},
    "qat": lambda p, ctx: {"epochs": p.epochs, "max_steps": p.max_steps, "lr": p.lr, "batch_size": p.batch_size,
                           "losses": p.losses, "seed": ctx.seed, "progress": ctx.progress, "teacher_cache": "off"},
}


def _plain(obj: Any) -> dict:
    from tinydistill.distill.schema import to_dict

    return to_dict(obj)


def _params(step: str, params: Any):
    from tinydistill.compress.steps import step_params

    return params if not isinstance(params, dict) else step_params(step, params)


def training_config(step: str, params: Any, ctx) -> Any:
    """The ``DistillConfig`` that step ``step`` trains with under ``params`` and ``ctx`` (None: it does not train)."""
    make = _CONFIGS.get(step)
    raw = make(_params(step, params), ctx) if make is not None else None
    if raw is None:
        return None
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.schema import from_dict

    return from_dict(DistillConfig, raw, f"compress.{step}")


def trains(step: str, params: Any) -> bool:
    """Whether ``step`` trains under ``params`` (so it gets a control)."""
    from tinydistill.compress.steps import StepContext

    return training_config(step, params, StepContext()) is not None


def run_control(step: str, in_dir, out_dir, params: Any, ctx, max_steps: int | None = None) -> dict:
    """Train ``in_dir`` uncompressed as step ``step`` would train its compressed copy; write the best
    checkpoint to ``out_dir`` (a model directory).  ``max_steps``: the steps the step itself trained, where
    known (the control then trains exactly as many, whatever stopped the step).  Returns ``{"dev",
    "train_steps", "best_step", "stopped_early", "num_train_examples", "batch_size", "epochs_planned",
    "max_steps"}``."""
    from tinydistill.compress.evaluation import require_float, task_and_data
    from tinydistill.distill.modeldir import load_model_dir, save_model_dir
    from tinydistill.distill.trainer import train

    cfg = training_config(step, params, ctx)
    if cfg is None:
        raise ValueError(f"compress.{step}: does not train, so it has no control")
    if max_steps is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, max_steps=max_steps, early_stopping_patience=None)
    require_float(in_dir, step)
    model, tok, manifest = load_model_dir(in_dir)
    task, train_ex, dev_ex = task_and_data(manifest, ctx)
    teacher = copy.deepcopy(model)  # the step distils from its uncompressed input; so does its control
    teacher.eval()
    out_dir = Path(out_dir)
    work = out_dir.parent / f".{out_dir.name}.control"
    try:
        result = train(model, tok, task, train_ex, dev_ex, cfg, work, teachers=[(teacher, tok)])
        best = load_model_dir(result.best_dir)[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    facts = {"step": step, "from": str(in_dir), "train_steps": result.global_step, "best_step": result.best_step,
             "stopped_early": bool(result.stopped_early), "num_train_examples": result.num_train_examples,
             "batch_size": cfg.batch_size, "epochs_planned": cfg.epochs, "max_steps": cfg.max_steps}
    extra = dict(manifest.get("extra") or {})
    extra["control"] = facts
    save_model_dir(out_dir, best, tok, task, extra=extra)
    return {"dev": {k: float(v) for k, v in result.best_metrics.items()}, **facts}
