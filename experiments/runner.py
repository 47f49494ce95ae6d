"""``tinydistill run``: the stages an experiment config names, into one resumable run directory.

Stages, in order (each one only when the config names it)::

    teacher        fine-tune the teacher(s) on the task (shared: see below)
    assistant<k>   each teacher assistant of the chain, distilled from the model before it (shared;
                   experiments/assistants.py)
    student        distil the student (or train it without KD: the no-KD baseline)
    compress.<s>   each compression step, chained: compressed/<s>/ from the previous model (compress/pipeline.py)
    control.<s>    with ``controls: true``, a training step's equal-budget control: controls/<s>/
    export.<b>     each export backend, from the last model: export/<backend>/
    bench          size / latency / memory of every model directory the run produced
    report         metrics.json, report.md, tb/ summary, and the run's record in the result store

Run directory ``<out>/<name>/<run-id>/`` with ``run-id = <student>-<recipe>-s<seed>-<config hash>``: the same
config and seed always map to the same directory, which is how ``--resume`` and sweeps find finished work.
Every stage writes its outputs atomically and then its marker ``.stages/<stage>.json`` (metrics with
units, duration); a stage with a marker is skipped, an unfinished one runs again (the trainer resumes from
its last checkpoint).  Teachers are keyed by (task, teacher section, seed) and trained once under
``<out>/<name>/_teachers/``; run directories link to them (``teacher -> ../_teachers/<key>``;
experiments/teacher_stages.py).  The run takes its config as parsed (``ExperimentConfig.for_run``); its id
is the hash of that object (experiments/identity.py).
"""
from __future__ import annotations
from __future__ import annotations

import argparse
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from tinydistill.distill.fsutil import atomic_write_text, clean_stale_temporaries, read_json, write_json
from tinydistill.distill.logs import progress
from tinydistill.distill.runtime import seed_everything
from tinydistill.distill.schema import ConfigError, to_dict
from tinydistill.experiments.assistants import AssistantChain
from tinydistill.experiments.config import ExperimentConfig, ModelSection, load_config, uses_teacher
from tinydistill.experiments.config_yaml import dump_yaml
from tinydistill.experiments.identity import data_fingerprint, run_hash, short_name
from tinydistill.experiments.protocol import EvalSets, control_facts, training_facts
from tinydistill.experiments.stage_tools import TMP_DIR, TemporariesInside, model_facts, resumable, size_mb
from tinydistill.experiments.store import ResultStore, flatten_metrics, store_dir
from tinydistill.experiments.teacher_stages import TeacherSet

STAGES_DIR = ".stages"


class Runner:
    """One (config, seed) run.  ``run()`` executes the missing stages; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, seed: int, out_root: str | os.PathLike = "runs",
                 data_dir: str | None = None, resume: bool = False, log: Callable[[str], Any] = progress,
                 prefix: str = ""):
        self.cfg = cfg.for_run(seed, data_dir)  # the command line's data directory wins over task.data_dir
        # the canonical mapping of that config: config.yaml, the store record, the keys of shared models
        self.raw = self.cfg.to_raw()
        self.seed = seed
        self.data_fingerprint = data_fingerprint(self.cfg.task)
        self.hash = run_hash(self.cfg, self.data_fingerprint)
        # the same configuration whatever the seed: the runs a report row aggregates over seeds
        self.group_hash = run_hash(self.cfg, self.data_fingerprint, seedless=True)
        self.run_id = f"{short_name(self.cfg.student.name)}-{self.cfg.recipe}-s{seed}-{self.hash[:8]}"
        self.exp_dir = Path(out_root) / self.cfg.name
        self.run_dir = self.exp_dir / self.run_id
        self.store = ResultStore(store_dir(self.exp_dir))
        self.resume = resume
        self.log = log
        self.prefix = prefix
        self.teachers = TeacherSet(self)
        self.chain = AssistantChain(self)

    @cached_property
    def pipeline(self):
        """The compression chain from the student, laid out in the run directory (compress/pipeline.py)."""
        from tinydistill.compress.pipeline import Pipeline

        return Pipeline(self.cfg.compress, self.run_dir / "student" / "best", self.run_dir)

    # -- stage bookkeeping ---------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], dict]]]:
        out: list[tuple[str, Callable[[], dict]]] = self.teachers.stages() + self.chain.stages()
        out.append(("student", self._student_stage))
        controls = set(self.controls())
        for i, label in enumerate(self.pipeline.labels):
            out.append((f"compress.{label}", lambda i=i, label=label: self._compress_stage(i, label)))
            if label in controls:
                out.append((f"control.{label}", lambda i=i, label=label: self._control_stage(i, label)))
        for e in self.cfg.export:
            out.append((f"export.{e.backend}", lambda e=e: self._export_stage(e)))
        if self.cfg.bench is not None:
            out.append(("bench", self._bench_stage))
        out.append(("report", self._report_stage))
        return out

    def _marker(self, stage: str) -> Path:
        return self.run_dir / STAGES_DIR / f"{stage}.json"

    def done(self, stage: str) -> bool:
        return self._marker(stage).is_file()

    def finished(self) -> bool:
        return self.store.has(self.run_id) and all(self.done(s) for s, _ in self.stages())

    def teacher_keys(self) -> list[str]:
        """Keys of the shared models this run learns from: its teachers, then its assistants."""
        return self.teachers.keys() + self.chain.keys()

    def teachers_finished(self) -> bool:
        return self.teachers.finished() and self.chain.finished()

    def variants(self) -> list[str]:
        """Model variants in pipeline order (metric-key prefixes): student, compressed.<s>, export.<b>."""
        return (["student"] + [f"compressed.{label}" for label in self.pipeline.labels]
                + [f"export.{e.backend}" for e in self.cfg.export])

    def controls(self) -> list[str]:
        """Labels of the compression steps that get an equal-budget control (``controls: true``)."""
        if not self.cfg.controls:
            return []
        return [label for i, label in enumerate(self.pipeline.labels) if self.pipeline.trains(i)]

    def variant_dir(self, variant: str) -> Path:
        if variant == "student":
            return self.pipeline.source
        kind, label = variant.split(".", 1)
        if kind == "compressed":
            return self.pipeline.out_dir(self.pipeline.labels.index(label))
        return self.run_dir / kind / label

    def collected(self) -> tuple[dict, dict]:
        """The metrics and durations (s) of every finished stage, from their markers."""
        metrics, durations = {}, {}
        for stage, _ in self.stages():
            if self.done(stage):
                m = read_json(self._marker(stage))
                metrics.update(m.get("metrics", {}))
                durations[stage] = m.get("seconds")
        return metrics, durations

    # -- running -------------------------------------------------------------------------------
    def run(self) -> str:
        """Run the missing stages; returns ``"skipped"`` (all done already) or ``"done"``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.store.lock(f"run-{self.run_id}", log=self._log_prefixed):  # one process per run, any machine
            if self.finished():
                self.log(f"{self.prefix}{self.run_id}: finished already ({self.run_dir})")
                return "skipped"
            started = any(self.done(s) for s, _ in self.stages()) or (self.run_dir / "student").exists()
            if started and not self.resume:
                raise ConfigError(f"{self.run_dir}: an unfinished run of this config and seed exists; add --resume "
                                  "to continue it, or delete the directory to start over")
            # what a killed run left half-written: atomic-write temporaries and the stage's scratch directory
            import shutil

            shutil.rmtree(self.run_dir / TMP_DIR, ignore_errors=True)
            for stale in clean_stale_temporaries(self.run_dir):
                self.log(f"{self.prefix}removed {stale} (left by an interrupted run)")
            config_file = self.run_dir / "config.yaml"
            atomic_write_text(config_file, f"# resolved config of run {self.run_id} (source: {self.cfg.source})\n"
                              + dump_yaml(self.raw))
            stages = self.stages()
            self.log(f"{self.prefix}run {self.run_id} -> {self.run_dir}")
            for k, (stage, fn) in enumerate(stages, 1):
                tag = f"{self.prefix}[{k}/{len(stages)}] {stage}"
                if self.done(stage):
                    self.log(f"{tag}: done earlier, skipped")
                    continue
                self.log(f"{tag}: running")
                t0 = time.time()
                with TemporariesInside(self.run_dir, stage):
                    metrics = fn() or {}
                if stage == "student":  # rows `on_error: skip` dropped go with the results, not only to stderr
                    metrics.update(flatten_metrics("data", {"skipped_rows": {"value": len(self.task.skipped),
                                                                             "unit": "count"}}))
                seconds = time.time() - t0
                write_json(self._marker(stage), {"stage": stage, "seconds": round(seconds, 3),
                                                 "finished_at": time.time(), "metrics": metrics})
                self.log(f"{tag}: done in {seconds:.1f}s{self._summary(metrics)}")
            return "done"

    def _log_prefixed(self, message: str) -> None:
        self.log(f"{self.prefix}{message}")

    def run_teachers(self) -> None:
        """Only the teacher stages (the first phase of a sweep)."""
        self.teachers.ensure_all()
        self.chain.ensure_all()

    def _summary(self, metrics: dict) -> str:
        main = self.task_main_metric
        parts = []
        for key, m in metrics.items():
            variant, _, leaf = key.rpartition(".")
            if key.endswith(f".dev.{main}"):
                parts.append(f"{main} {m['value']:.2f}%")
            elif leaf == "size_mb":
                parts.append(f"{m['value']:.3g} MB")
            elif leaf == "latency_p50_ms":
                parts.append(f"{variant} p50 {m['value']:.3g} ms")
        return f" ({', '.join(parts)})" if parts else ""

    # -- shared inputs -------------------------------------------------------------------------
    @cached_property
    def task(self):
        from tinydistill.tasks import build_task

        return build_task(self.cfg.task.name, **to_dict(self.cfg.task.options))

    @property
    def task_main_metric(self) -> str:
        from tinydistill.tasks import TASKS

        return TASKS.get(self.cfg.task.name).main_metric

    @cached_property
    def train_examples(self) -> list:
        return self.task.training_examples()

    @cached_property
    def dev_examples(self) -> list:
        return self.task.load("dev")

    @cached_property
    def eval_sets(self) -> EvalSets:
        return EvalSets(self.task, self.train_examples, self.dev_examples)

    def _more_sets(self, model_dir: Path) -> dict:
        """Metrics of a final model on the evaluation sets besides dev (test file, unseen-in-train rows)."""
        return self.eval_sets.evaluate(model_dir, data_dir=self.cfg.task.options.data_dir)

    def tokenizer_for(self, section: ModelSection, path: str):
        from tinydistill.experiments.tokenizers import make_tokenizer

        return make_tokenizer(section, path, lambda: self.task.texts("train"))

    # -- student -------------------------------------------------------------------------------
    def _student_stage(self) -> dict:
        if self.cfg.share_student:  # one training for every run with the same student training
            from tinydistill.experiments.shared_student import shared_student

            out, dev, facts = shared_student(self)
        else:
            out = self.run_dir / "student"
            result = self._train_student(out)
            dev, facts = dict(result.best_metrics), training_facts(result, self.cfg.distill)
        best = out / "best"
        return {**flatten_metrics("student", {"dev": dev, **model_facts(best), **facts, **self._more_sets(best)}),
                **flatten_metrics("data", self.eval_sets.sizes())}

    def _train_student(self, out: Path):
        """Distil the student into ``out`` (or train it without KD); the engine's ``TrainResult``."""
        from tinydistill.distill.trainer import train
        from tinydistill.teachers.base import build_model

        s = self.cfg.student
        if s.tokenizer.from_teacher:
            if not self.cfg.all_teachers:
                raise ConfigError("student.tokenizer.from_teacher: the config has no teacher")
            tok = self.chain.student_teachers()[0][1]
        else:
            tok = self.tokenizer_for(s, "student")
        seed_everything(self.seed)
        model = build_model("student", s.name, self.task.heads(), init=s.init, vocab_size=tok.vocab_size, **s.options)
        teachers = self.chain.student_teachers() if uses_teacher(self.cfg) else []
        return resumable(out, "student", lambda: train(
            model, tok, self.task, self.train_examples, self.dev_examples, self.cfg.distill, str(out),
            teachers=teachers, resume=(out / "checkpoint").exists()))

    # -- compression, export, bench ------------------------------------------------------------
    def step_context(self):
        from tinydistill.compress.steps import StepContext

        return StepContext(data_dir=self.cfg.task.options.data_dir, seed=self.seed,
                           threads=self.cfg.bench.threads if self.cfg.bench else 1, log=self.log)

    def _compress_stage(self, i: int, label: str) -> dict:
        out_dir = self.pipeline.out_dir(i)
        report = self.pipeline.run(i, self.step_context())
        if not isinstance(report.get("dev"), dict) or self.task_main_metric not in report["dev"]:
            report["dev"] = self._evaluate_dir(out_dir)
        applied = report.get("applied") is not False  # False: carried through unchanged
        report = {**report, **self._more_sets(out_dir), "applied": {"value": int(applied), "unit": "bool"},
                  "size_mb": size_mb(out_dir)}
        return flatten_metrics(f"compressed.{label}", report)

    def _control_stage(self, i: int, label: str) -> dict:
        """The equal-budget control of training step ``i``: its input model trained as the step trains
        (compress/controls.py), uncompressed; ``Δ compression = step - control`` in reports."""
        done = read_json(self._marker(f"compress.{label}")).get("metrics", {})
        applied = done.get(f"compressed.{label}.applied")
        if applied is not None and not applied["value"]:
            self.log(f"  control.{label}: the step did not apply; no control")
            return {}
        # where the step's report says how many steps it trained, the control trains exactly as many
        steps = next((m["value"] for k, m in done.items() if k in (f"compressed.{label}.recovery.steps",
                                                                  f"compressed.{label}.training.steps")), None)
        report = self.pipeline.run_control(i, self.step_context(), max_steps=int(steps) if steps else None)
        out_dir = self.pipeline.control_dir(i)
        metrics = {**control_facts(report), "size_mb": size_mb(out_dir), **self._more_sets(out_dir)}
        return flatten_metrics(f"control.{label}", metrics)

    def _export_stage(self, e) -> dict:
        from tinydistill.compress.export import export

        out_dir = self.run_dir / "export" / e.backend
        report = export(self.pipeline.last_dir(), e.backend, out_dir, check=e.check, tolerance=e.tolerance,
                        atol=e.atol, max_check_examples=e.max_check_examples,
                        data_dir=self.cfg.task.options.data_dir)
        if "dev" not in report:
            report = dict(report, dev=self._evaluate_dir(out_dir))
        report = {**report, **self._more_sets(out_dir), "size_mb": size_mb(out_dir)}
        return flatten_metrics(f"export.{e.backend}", report)

    def _evaluate_dir(self, model_dir: Path) -> dict:
        from tinydistill.compress.predictor import Predictor

        predictor = Predictor.from_dir(model_dir, threads=1, data_dir=self.cfg.task.options.data_dir)
        return predictor.evaluate(self.dev_examples)

    def _bench_stage(self) -> dict:
        """Every model variant in its own fresh process (compress.bench): end-to-end latency (tokeniser
        included) and model-only latency, peak RSS, throughput."""
        from tinydistill.compress.bench import bench_dirs

        b = self.cfg.bench
        variants = [v for v in self.variants() if self.variant_dir(v).exists()]
        results = bench_dirs([self.variant_dir(v) for v in variants], batch_size=b.batch_size, seq_len=b.seq_len,
                             threads=b.threads, runs=b.runs, warmup=b.warmup,
                             throughput_batches=tuple(b.throughput_batches), log=self.log)
        out = {}
        for variant, r in zip(variants, results):
            values = {"latency_p50_ms": r["e2e_ms"]["p50"], "latency_p90_ms": r["e2e_ms"]["p90"],
                      "model_latency_p50_ms": r["model_ms"]["p50"], "model_latency_p90_ms": r["model_ms"]["p90"],
                      "peak_rss_mib": r["peak_rss_mib"], "load_s": r["load_s"],
                      "bench_seq_len": {"value": r["seq_len"], "unit": "tokens"},
                      "bench_batch_size": {"value": r["batch_size"], "unit": "count"},
                      "bench_threads": {"value": r["threads"], "unit": "count"}}
            for batch, per_s in r.get("throughput_per_s", {}).items():
                values[f"throughput_b{batch}_per_s"] = per_s
            out.update(flatten_metrics(variant, values))
        return out

    def _report_stage(self) -> dict:
        from tinydistill.experiments.run_report import report_stage

        return report_stage(self)


def test_file_override(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus ``task.test=<absolute path>`` for ``--test-file`` (run, sweep)."""
    extra = [f"task.test={Path(args.test_file).expanduser().resolve()}"] if getattr(args, "test_file", None) else []
    return list(args.overrides) + extra


def cli_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, test_file_override(args))
    if cfg.sweep is not None:
        progress(f"note: {args.config} declares a sweep; `run` runs its base config only "
                 f"(`tinydistill sweep {args.config}` runs the grid)")
    for seed in cfg.seeds:
        runner = Runner(cfg, seed, out_root=args.out, data_dir=args.data_dir, resume=args.resume)
        runner.run()
        print(f"run {runner.run_id}: {runner.run_dir / 'report.md'}")
    return 0
