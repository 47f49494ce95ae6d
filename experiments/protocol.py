"""The evaluation protocol of a run: which sets every final model is scored on, and how long it trained.

Evaluation sets (metric-key part after the variant, e.g. ``student.test.accuracy``):

    dev          the task's dev split (what checkpoints are selected on)
    test         the task's hold-out file (``task.test`` / ``--test-file``), in the task's own format
    dev_dedup    with ``task.dedup_eval: true``: the dev rows whose text does not occur in the training split
    test_dedup   the same for the test file

Training facts (``<variant>.train_steps`` / ``train_epochs`` / ``best_step`` / ``stopped_early``) say what a
trainer actually ran, so a report can state it; equal-budget controls of the training compression steps live
in ``compress/controls.py``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

#: task options that change what is evaluated, not what is trained: left out of teacher keys, and out of run
#: ids while at their defaults (so configs that do not use them keep their run ids)
EVAL_ONLY_TASK_KEYS = {"test": None, "dedup_eval": False}


def _without_unused_subset(task: dict) -> dict:
    """Without ``max_train_examples`` / ``train_subset_seed`` while no subset is drawn: the ids of runs that train
    on the whole split stay those they had before the option existed (and the seed means nothing then)."""
    if task.get("max_train_examples") is None:
        return {k: v for k, v in task.items() if k not in ("max_train_examples", "train_subset_seed")}
    return dict(task)


def hash_task(task: dict) -> dict:
    """The task section of a run id: evaluation-only options dropped while at their defaults, and an absolute
    test path (machine-specific, like ``data_dir``; the data fingerprint holds the file's checksum)."""
    out = {k: v for k, v in _without_unused_subset(task).items()
           if not (k in EVAL_ONLY_TASK_KEYS and v == EVAL_ONLY_TASK_KEYS[k])}
    if isinstance(out.get("test"), str) and Path(out["test"]).expanduser().is_absolute():
        out.pop("test")
    return out


def teacher_task(task: dict) -> dict:
    """The task section of a teacher key: what the teacher is evaluated on does not change its training."""
    out = {k: v for k, v in _without_unused_subset(task).items() if k not in EVAL_ONLY_TASK_KEYS}
    if isinstance(out.get("data_fingerprint"), dict):
        out["data_fingerprint"] = {k: v for k, v in out["data_fingerprint"].items() if k != "task.test"}
    return out


def count(n: int) -> dict:
    return {"value": int(n), "unit": "count"}


class EvalSets:
    """The evaluation sets of one run (see the module docstring); ``sets["dev"]`` is the dev split."""

    def __init__(self, task, train: Sequence, dev: Sequence):
        from tinydistill.tasks.overlap import seen_texts, unseen

        self.sets: dict[str, list] = {"dev": list(dev)}
        if task.options.test:
            self.sets["test"] = task.load_test()
        if task.options.dedup_eval:
            seen = seen_texts(train)
            for name in list(self.sets):
                self.sets[f"{name}_dedup"] = unseen(self.sets[name], seen)
        self.n_train = len(train)

    @property
    def extra(self) -> list[str]:
        """The sets besides dev (each final model is evaluated on these too)."""
        return [n for n in self.sets if n != "dev"]

    def sizes(self) -> dict:
        """``{"train": {"examples": n}, "dev": ..., ...}`` with count units (recorded as ``data.*``)."""
        return {"train": {"examples": count(self.n_train)},
                **{name: {"examples": count(len(rows))} for name, rows in self.sets.items()}}

    def evaluate(self, model_dir: str | Path, data_dir: str | None = None, sets: Sequence[str] | None = None,
                 threads: int = 1) -> dict[str, dict[str, float]]:
        """Metrics of a model directory (on its own runtime) on ``sets`` (default: every set but dev); an
        empty set (e.g. no dev row unseen in train) is left out."""
        from tinydistill.compress.predictor import Predictor

        names = [n for n in (self.extra if sets is None else sets) if self.sets.get(n)]
        if not names:
            return {}
        predictor = Predictor.from_dir(model_dir, threads=threads, data_dir=data_dir)
        return {n: {k: float(v) for k, v in predictor.evaluate(self.sets[n]).items()} for n in names}


def training_facts(result: Any, config: Any, world_size: int = 1) -> dict:
    """Steps and epochs a ``distill.trainer.train`` call actually ran (with units), for metrics.json."""
    n = int(getattr(result, "num_train_examples", 0) or 0)
    per_epoch = max(1, math.ceil(n / (config.batch_size * world_size))) if n else None
    planned = config.epochs * per_epoch if per_epoch else None
    if planned is not None and config.max_steps is not None:
        planned = min(planned, config.max_steps)
    steps = int(result.global_step)
    out = {"train_steps": {"value": steps, "unit": "steps"},
           "best_step": {"value": int(result.best_step), "unit": "steps"},
           "stopped_early": {"value": int(bool(result.stopped_early)), "unit": "bool"},
           "train_examples": count(n)}
    if per_epoch:
        out["train_epochs"] = {"value": round(steps / per_epoch, 3), "unit": "epochs"}
        out["planned_steps"] = {"value": planned, "unit": "steps"}
    return out


def control_facts(report: dict) -> dict:
    """``compress.controls.run_control``'s report as metrics (dev metrics, steps, epochs)."""
    n, bs = report.get("num_train_examples") or 0, report.get("batch_size") or 1
    per_epoch = max(1, math.ceil(n / bs)) if n else None
    out = {"dev": report["dev"], "train_steps": {"value": report["train_steps"], "unit": "steps"},
           "best_step": {"value": report["best_step"], "unit": "steps"},
           "stopped_early": {"value": int(bool(report.get("stopped_early"))), "unit": "bool"}}
    if per_epoch:
        out["train_epochs"] = {"value": round(report["train_steps"] / per_epoch, 3), "unit": "epochs"}
    return out


def gap(metrics: dict, other: dict) -> dict:
    """``metrics - other`` for every metric both have (percentage points)."""
    return {k: float(metrics[k]) - float(other[k]) for k in metrics if k in other}


def cli_evaluate(args) -> int:
    """``tinydistill evaluate``; with ``--test-file`` / ``--dedup`` dev (or ``--file``) next to the hold-out
    file and the rows unseen in train, and the gaps."""
    from tinydistill.experiments.multitask import evaluate_args

    args = evaluate_args(args)  # a multi-task model directory with --task: that task's view of it
    if not getattr(args, "test_file", None) and not getattr(args, "dedup", False):
        from tinydistill.compress.predictors import cli_evaluate as plain

        return plain(args)
    import json

    from tinydistill.compress.predictors import open_predictor
    from tinydistill.tasks.overlap import seen_texts, unseen

    predictor = open_predictor(args.model_dir, runtime=args.runtime, threads=args.threads, task=args.task,
                               data_dir=args.data_dir)
    task = predictor.task
    if task is None:
        raise ValueError(f"{args.model_dir}: the manifest records no task; pass --task NAME")
    first = "file" if args.file else "dev"
    sets = {first: task.load_file(args.file) if args.file else task.load("dev")}
    if args.test_file:
        sets["test"] = task.load_file(args.test_file)
    if args.dedup:
        seen = seen_texts(task.training_examples())
        for name in list(sets):
            sets[f"{name}_dedup"] = unseen(sets[name], seen)
    out = {"model_dir": str(args.model_dir), "runtime": predictor.runtime, "task": task.name, "sets": {}}
    for name, rows in sets.items():
        metrics = {k: float(v) for k, v in predictor.evaluate(rows, batch_size=args.batch_size).items()} if rows else {}
        out["sets"][name] = {"examples": len(rows), "metrics": metrics}
    got = out["sets"]
    if "test" in got:
        out[f"gap_{first}_minus_test"] = gap(got[first]["metrics"], got["test"]["metrics"])
    for name in [n for n in got if n.endswith("_dedup")]:
        out[f"gap_{name[:-6]}_minus_{name}"] = gap(got[name[:-6]]["metrics"], got[name]["metrics"])
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0
