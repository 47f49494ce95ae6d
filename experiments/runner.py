"""``tinydistill run``: the stages an experiment config names, into one resumable run directory.

Stages, in order (each one only when the config names it)::

    teacher        fine-tune the teacher(s) on the task (shared: see below)
    assistant<k>   each teacher assistant of the chain, distilled from the model before it (shared;
                   experiments/assistants.py)
    student        distil the student (or train it without KD: the no-KD baseline)
    compress.<s>   each compression step, chained: compressed/<step>/ from the previous model
    export.<b>     each export backend, from the last model: export/<backend>/
    bench          size / latency / memory of every model directory the run produced
    report         metrics.json, report.md, tb/ summary, and the run's record in the result store

Run directory ``<out>/<name>/<run-id>/`` with ``run-id = <student>-<recipe>-s<seed>-<config hash>``: the same
config and seed always map to the same directory, which is how ``--resume`` and sweeps find finished work.
Every stage writes its outputs atomically and then its marker ``.stages/<stage>.json`` (metrics with
units, duration); a stage with a marker is skipped, an unfinished one runs again (the trainer resumes from
its last checkpoint).  Teachers are keyed by (task, teacher section, seed) and trained once under
``<out>/<name>/_teachers/``; run directories link to them (``teacher -> ../_teachers/<key>``).
"""
from __future__ import annotations

import argparse
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from distill.fsutil import link_atomically, atomic_write_text, clean_stale_temporaries, dir_size_bytes, read_json, write_json
from distill.logs import progress
from distill.runtime import seed_everything
from distill.schema import ConfigError, to_dict
from experiments.assistants import AssistantChain
from experiments.config import (ExperimentConfig, ModelSection, config_hash, data_fingerprint, dump_yaml,
                                load_config, resolve, uses_teacher)
from experiments.protocol import EvalSets, control_facts, hash_task, teacher_task, training_facts
from experiments.store import ResultStore, flatten_metrics, provenance, store_dir

STAGES_DIR = ".stages"
TMP_DIR = ".tmp"  # scratch space of the running stage (tempfile.tempdir)
TEACHERS_DIR = "_teachers"


def short_name(name: str) -> str:
    return name.replace("ernie-3.0-tiny-", "").replace("-v2-zh", "").replace("-zh", "")


def _hash_view(raw: dict, data: dict) -> dict:
    """What identifies results: the raw config without the (machine-specific) data directory, plus the
    content fingerprint of the data files (``experiments.config.data_fingerprint``)."""
    task = hash_task({k: v for k, v in raw["task"].items() if k != "data_dir"})
    return dict(raw, task=dict(task, data_fingerprint=data))


class CheckpointError(RuntimeError):
    """A stage's checkpoint cannot be read back (damaged, e.g. written by a tool outside the atomic path)."""


def _resumable(stage_dir: Path, stage: str, train: Callable[[], Any]) -> Any:
    """``train()``; a failure while it reads the checkpoint back becomes one line naming what to delete."""
    try:
        return train()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - paddle and pickle raise many types for a truncated file
        tb = exc.__traceback__
        while tb is not None and "load_checkpoint" not in tb.tb_frame.f_code.co_name:  # the engine's reader
            tb = tb.tb_next
        if tb is None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{stage_dir / 'checkpoint'}: damaged checkpoint, cannot resume ({first}); delete "
                              f"{stage_dir} to restart the {stage} stage") from None


class _TemporariesInside:
    """Point ``tempfile`` (and subprocesses, via ``TMPDIR``) at ``<run dir>/.tmp`` while a stage runs, so a
    killed stage leaves its scratch files in the run directory, where the next run removes them."""

    def __init__(self, run_dir: Path, stage: str = ""):
        self.dir, self.where = run_dir / TMP_DIR, f"{run_dir} (stage {stage})"

    def __enter__(self):
        import tempfile

        self.dir.mkdir(parents=True, exist_ok=True)
        self._saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
        tempfile.tempdir = str(self.dir)
        os.environ["TMPDIR"] = str(self.dir)

    def __exit__(self, kind, exc, tb):
        import errno
        import shutil
        import tempfile

        tempfile.tempdir, tmpdir = self._saved
        if tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = tmpdir
        shutil.rmtree(self.dir, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            # paddle.save and friends report a full disk without the file: name the stage that was writing
            raise OSError(exc.errno, exc.strerror, self.where) from exc
        return False


class Runner:
    """One (config, seed) run.  ``run()`` executes the missing stages; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, seed: int, out_root: str | os.PathLike = "runs",
                 data_dir: str | None = None, resume: bool = False, log: Callable[[str], Any] = progress,
                 prefix: str = ""):
        raw = cfg.to_raw()
        raw.pop("sweep", None)
        raw.pop("search", None)  # the space a search runs this config in, not part of the run
        raw["seeds"] = [seed]
        raw["distill"]["seed"] = seed
        for t in ([raw.get("teacher")] if raw.get("teacher") else []) + list(raw.get("teachers", [])):
            if t.get("train") is not None:
                t["train"]["seed"] = seed
        if data_dir is not None:  # the command line wins over the config's task.data_dir
            raw["task"]["data_dir"] = str(data_dir)
        self.raw = raw
        self.cfg = resolve(raw)
        self.cfg.source = cfg.source
        self.seed = seed
        self.data_fingerprint = data_fingerprint(self.cfg.task)
        self.hash = config_hash(_hash_view(raw, self.data_fingerprint))
        # the same configuration whatever the seed: the runs a report row aggregates over seeds
        self.group_hash = config_hash(_hash_view(raw, self.data_fingerprint), seedless=True)
        self.run_id = f"{short_name(self.cfg.student.name)}-{self.cfg.recipe}-s{seed}-{self.hash[:8]}"
        self.exp_dir = Path(out_root) / self.cfg.name
        self.run_dir = self.exp_dir / self.run_id
        self.store = ResultStore(store_dir(self.exp_dir))
        self.resume = resume
        self.log = log
        self.prefix = prefix
        self._teacher_models: list | None = None
        self.chain = AssistantChain(self)

    # -- stage bookkeeping ---------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], dict]]]:
        out: list[tuple[str, Callable[[], dict]]] = []
        for i in range(len(self.cfg.all_teachers)):
            out.append((self._teacher_label(i), lambda i=i: self._teacher_stage(i)))
        out.extend(self.chain.stages())
        out.append(("student", self._student_stage))
        controls = set(self.controls())
        for label, i in self._step_labels():
            out.append((f"compress.{label}", lambda i=i, label=label: self._compress_stage(i, label)))
            if label in controls:
                out.append((f"control.{label}", lambda i=i, label=label: self._control_stage(i, label)))
        for e in self.cfg.export:
            out.append((f"export.{e.backend}", lambda e=e: self._export_stage(e)))
        if self.cfg.bench is not None:
            out.append(("bench", self._bench_stage))
        out.append(("report", self._report_stage))
        return out

    def _teacher_label(self, i: int) -> str:
        return "teacher" if i == 0 else f"teacher{i}"

    def _step_labels(self) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        out = []
        for i, step in enumerate(self.cfg.compress):
            seen[step.step] = seen.get(step.step, 0) + 1
            out.append((step.step if seen[step.step] == 1 else f"{step.step}-{seen[step.step]}", i))
        return out

    def _marker(self, stage: str) -> Path:
        return self.run_dir / STAGES_DIR / f"{stage}.json"

    def done(self, stage: str) -> bool:
        return self._marker(stage).is_file()

    def finished(self) -> bool:
        return self.store.has(self.run_id) and all(self.done(s) for s, _ in self.stages())

    def teacher_keys(self) -> list[str]:
        """Keys of the shared models this run learns from: its teachers, then its assistants."""
        return [self._teacher_dir(i).name for i in range(len(self.cfg.all_teachers))] + self.chain.keys()

    def teachers_finished(self) -> bool:
        return (all((self._teacher_dir(i) / ".done.json").is_file() for i in range(len(self.cfg.all_teachers)))
                and self.chain.finished())

    def variants(self) -> list[str]:
        """Model variants in pipeline order (metric-key prefixes): student, compressed.<s>, export.<b>."""
        return (["student"] + [f"compressed.{label}" for label, _ in self._step_labels()]
                + [f"export.{e.backend}" for e in self.cfg.export])

    def controls(self) -> list[str]:
        """Labels of the compression steps that get an equal-budget control (``controls: true``)."""
        if not self.cfg.controls:
            return []
        from compress.controls import trains

        return [label for label, i in self._step_labels()
                if trains(self.cfg.compress[i].step, self.cfg.compress[i].params)]

    def variant_dir(self, variant: str) -> Path:
        if variant == "student":
            return self.run_dir / "student" / "best"
        kind, label = variant.split(".", 1)
        return self.run_dir / kind / label

    def _collected(self) -> tuple[dict, dict]:
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
                with _TemporariesInside(self.run_dir, stage):
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
        for i in range(len(self.cfg.all_teachers)):
            self._ensure_teacher(i)
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
        from tasks import build_task

        return build_task(self.cfg.task.name, **to_dict(self.cfg.task.options))

    @property
    def task_main_metric(self) -> str:
        from tasks import TASKS

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
        from experiments.tokenizers import make_tokenizer

        return make_tokenizer(section, path, lambda: self.task.texts("train"))

    # -- teacher -------------------------------------------------------------------------------
    def _teacher_dir(self, i: int) -> Path:
        t = self.cfg.all_teachers[i]
        raw_t = (self.raw["teacher"] if (i == 0 and self.cfg.teacher) else
                 self.raw["teachers"][i - (1 if self.cfg.teacher else 0)])
        body = {"task": teacher_task(_hash_view(self.raw, self.data_fingerprint)["task"]), "teacher": raw_t,
                "seed": self.seed}
        if t.tasks:  # a multi-task teacher: every task's section and data (experiments/multitask.py)
            from experiments.multitask import teacher_key_extra

            body.update(teacher_key_extra(self, t))
        key = config_hash(body)
        return self.exp_dir / TEACHERS_DIR / f"{short_name(t.name)}-s{self.seed}-{key[:10]}"

    def _teacher_model_dir(self, i: int) -> Path:
        """What students learn from: ``best/``, or a multi-task teacher's view of this run's task."""
        from experiments.multitask import teacher_model_dir

        return teacher_model_dir(self._teacher_dir(i), self.cfg.all_teachers[i], self.cfg.task.name)

    def _ensure_teacher(self, i: int) -> dict:
        shared = self._teacher_dir(i)
        done = shared / ".done.json"
        with self.store.lock(f"teacher-{shared.name}", log=self._log_prefixed):  # trained once, any machine
            if not done.is_file():
                t0 = time.time()
                name = self.cfg.all_teachers[i].name
                self.log(f"{self.prefix}teacher {name} (seed {self.seed}): training -> {shared}")
                clean_stale_temporaries(shared)  # left by a killed fine-tuning (we hold its lock)
                metrics = self._train_teacher(i, shared)
                write_json(done, {"seconds": round(time.time() - t0, 3), "metrics": metrics,
                                  "teacher": self.raw.get("teacher") if i == 0 else None})
                self.log(f"{self.prefix}teacher {name} (seed {self.seed}): done in {time.time() - t0:.1f}s"
                         f"{self._summary(flatten_metrics('teacher', metrics))}")
        return read_json(done)

    def _train_teacher(self, i: int, out: Path) -> dict:
        from teachers.base import build_model, load_model_dir, save_model_dir

        t = self.cfg.all_teachers[i]
        path = "teacher" if (i == 0 and self.cfg.teacher) else f"teachers[{i}]"
        if t.tasks:
            from experiments.multitask import train_teacher

            return train_teacher(self, i, out)
        if not t.finetune:
            model, tok, _ = load_model_dir(t.init)
            save_model_dir(out / "best", model, tok, task=self.task, extra={"source": t.init})
            from distill.trainer import evaluate

            return {"dev": evaluate(model, tok, self.task, self.dev_examples)}
        from distill.trainer import train

        tok = self.tokenizer_for(t, path)
        seed_everything(self.seed)
        model = build_model("teacher", t.name, self.task.heads(), init=t.init, vocab_size=tok.vocab_size, **t.options)
        result = _resumable(out, "teacher", lambda: train(
            model, tok, self.task, self.train_examples, self.dev_examples, t.train, str(out), teachers=(),
            resume=(out / "checkpoint").exists()))
        return {"dev": dict(result.best_metrics), **training_facts(result, t.train)}

    def _teacher_stage(self, i: int) -> dict:
        done = self._ensure_teacher(i)
        shared = self._teacher_dir(i)
        link_atomically(self.run_dir / self._teacher_label(i), shared)
        best = self._teacher_model_dir(i)
        metrics = {**done["metrics"], "size_mb": _mb(best), **_params(best), **self._more_sets(best)}
        out = flatten_metrics(self._teacher_label(i), metrics)
        if i == len(self.cfg.all_teachers) - 1 and i > 0:   # several teachers: their mixture is the teacher
            out.update(flatten_metrics("teachers_mixed", self._mixture_metrics()))
        return out

    def _mixture_metrics(self) -> dict:
        """Metrics of the teachers' mixed logits (``distill.mixing``) on every evaluation set."""
        from distill.multiteacher import evaluate_mixture

        return {name: {k: float(v) for k, v in evaluate_mixture(self.teacher_models(), self.task, rows,
                                                                 self.cfg.distill.mixing).items()}
                for name, rows in self.eval_sets.sets.items() if rows}

    def teacher_models(self) -> list:
        """[(model, tokenizer)] of the run's teachers (loaded once)."""
        if self._teacher_models is None:
            from teachers.base import load_model_dir

            self._teacher_models = []
            for i in range(len(self.cfg.all_teachers)):
                model, tok, _ = load_model_dir(self._teacher_model_dir(i))
                self._teacher_models.append((model, tok))
        return self._teacher_models

    # -- student -------------------------------------------------------------------------------
    def _student_stage(self) -> dict:
        if self.cfg.share_student:  # one training for every run with the same student training
            from experiments.shared_student import shared_student

            out, dev, facts = shared_student(self)
        else:
            out = self.run_dir / "student"
            result = self._train_student(out)
            dev, facts = dict(result.best_metrics), training_facts(result, self.cfg.distill)
        best = out / "best"
        return {**flatten_metrics("student", {"dev": dev, "size_mb": _mb(best), **_params(best), **facts,
                                              **self._more_sets(best)}),
                **flatten_metrics("data", self.eval_sets.sizes())}

    def _train_student(self, out: Path):
        """Distil the student into ``out`` (or train it without KD); the engine's ``TrainResult``."""
        from distill.trainer import train
        from teachers.base import build_model

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
        return _resumable(out, "student", lambda: train(
            model, tok, self.task, self.train_examples, self.dev_examples, self.cfg.distill, str(out),
            teachers=teachers, resume=(out / "checkpoint").exists()))

    # -- compression, export, bench ------------------------------------------------------------
    def _last_model_dir(self, upto_step: int | None = None) -> Path:
        labels = self._step_labels()
        if upto_step is not None:
            labels = labels[:upto_step]
        return self.run_dir / "compressed" / labels[-1][0] if labels else self.run_dir / "student" / "best"

    def step_context(self):
        from compress.steps import StepContext

        return StepContext(data_dir=self.cfg.task.options.data_dir, seed=self.seed,
                           threads=self.cfg.bench.threads if self.cfg.bench else 1, log=self.log)

    def _compress_stage(self, i: int, label: str) -> dict:
        import shutil

        from compress import STEPS
        from compress.steps import NotApplicable
        from distill.fsutil import atomic_dir

        step = self.cfg.compress[i]
        in_dir = self._last_model_dir(upto_step=i)
        out_dir = self.run_dir / "compressed" / label
        params = to_dict(step.params) if step.params is not None else {}
        try:
            report = STEPS.get(step.step)(in_dir, out_dir, params, self.step_context())
        except NotApplicable as exc:
            # carried through unchanged, so later steps and exports chain as configured
            with atomic_dir(out_dir) as tmp:
                shutil.copytree(in_dir, tmp, dirs_exist_ok=True, symlinks=True)
            self.log(f"  {step.step}: not applicable ({exc}); model carried through unchanged")
            report = {"not_applicable": str(exc)}
        report = dict(report or {})
        if not isinstance(report.get("dev"), dict) or self.task_main_metric not in report["dev"]:
            report["dev"] = self._evaluate_dir(out_dir)
        report = {**report, **self._more_sets(out_dir),
                  "applied": {"value": int("not_applicable" not in report), "unit": "bool"}}
        return flatten_metrics(f"compressed.{label}", _variant_metrics(report, out_dir))

    def _control_stage(self, i: int, label: str) -> dict:
        """The equal-budget control of training step ``i``: its input model trained as the step trains
        (compress/controls.py), uncompressed; ``Δ compression = step - control`` in reports."""
        from compress.controls import run_control

        done = read_json(self._marker(f"compress.{label}")).get("metrics", {})
        applied = done.get(f"compressed.{label}.applied")
        if applied is not None and not applied["value"]:
            self.log(f"  control.{label}: the step did not apply; no control")
            return {}
        # where the step's report says how many steps it trained, the control trains exactly as many
        steps = next((m["value"] for k, m in done.items() if k in (f"compressed.{label}.recovery.steps",
                                                                  f"compressed.{label}.training.steps")), None)
        step = self.cfg.compress[i]
        out_dir = self.run_dir / "controls" / label
        report = run_control(step.step, self._last_model_dir(upto_step=i), out_dir, step.params, self.step_context(),
                             max_steps=int(steps) if steps else None)
        metrics = {**control_facts(report), "size_mb": _mb(out_dir), **self._more_sets(out_dir)}
        return flatten_metrics(f"control.{label}", metrics)

    def _export_stage(self, e) -> dict:
        from compress.export import export

        out_dir = self.run_dir / "export" / e.backend
        report = export(self._last_model_dir(), e.backend, out_dir, check=e.check, tolerance=e.tolerance,
                        atol=e.atol, max_check_examples=e.max_check_examples,
                        data_dir=self.cfg.task.options.data_dir)
        if "dev" not in report:
            report = dict(report, dev=self._evaluate_dir(out_dir))
        report = {**report, **self._more_sets(out_dir)}
        return flatten_metrics(f"export.{e.backend}", _variant_metrics(report, out_dir))

    def _evaluate_dir(self, model_dir: Path) -> dict:
        from compress.predictor import Predictor

        predictor = Predictor.from_dir(model_dir, threads=1, data_dir=self.cfg.task.options.data_dir)
        return predictor.evaluate(self.dev_examples)

    def _bench_stage(self) -> dict:
        """Every model variant in its own fresh process (compress.bench): end-to-end latency (tokeniser
        included) and model-only latency, peak RSS, throughput."""
        from compress.bench import bench_dirs

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

    # -- report --------------------------------------------------------------------------------
    def _report_stage(self) -> dict:
        metrics, durations = self._collected()
        write_json(self.run_dir / "metrics.json", {"run_id": self.run_id, "metrics": metrics,
                                                   "durations_s": durations})
        variants = [v for v in self.variants() if self.variant_dir(v).exists()]
        atomic_write_text(self.run_dir / "report.md", self._report_md(metrics, durations, variants))
        self._write_tb(metrics, variants)
        teacher = self.cfg.teacher.name if self.cfg.teacher else None
        record = {
            "run_id": self.run_id, "name": self.cfg.name, "recipe": self.cfg.recipe, "task": self.cfg.task.name,
            "main_metric": self.task_main_metric, "teacher": teacher, "student": self.cfg.student.name,
            "seed": self.seed, "kd": uses_teacher(self.cfg), "config_hash": self.hash, "group_hash": self.group_hash, "config": self.raw,
            "data_fingerprint": self.data_fingerprint,
            **provenance(), "metrics": metrics, "durations": durations, "variants": variants,
            "final": variants[-1], "run_dir": str(self.run_dir.resolve()),
            "controls": self.controls(), "eval_sets": list(self.eval_sets.sets),
        }
        self.store.put(record)
        return {}

    def _report_md(self, metrics: dict, durations: dict, variants: list[str]) -> str:
        main = self.task_main_metric

        def val(key: str, fmt: str = "{:.2f}") -> str:
            m = metrics.get(key)
            return fmt.format(m["value"]) if m else "-"

        lines = [f"# Run {self.run_id}", "",
                 f"Config `{self.cfg.source or '-'}` (resolved: `config.yaml`), recipe `{self.cfg.recipe}`, "
                 f"seed {self.seed}, task `{self.cfg.task.name}`, student `{self.cfg.student.name}`"
                 + (f", teacher `{self.cfg.teacher.name}`" if self.cfg.teacher else "") + ".", "",
                 f"| model | dev {main} (%) | " + "".join(f"{s} {main} (%) | " for s in self.eval_sets.extra)
                 + "trained steps (epochs) | size (MB) | parameters | latency p50 (ms) | latency p90 (ms) |",
                 "|---|---|" + "---|" * len(self.eval_sets.extra) + "---|---|---|---|---|"]
        rows = ([self._teacher_label(i) for i in range(len(self.cfg.all_teachers))] + self.chain.labels() + variants
                + [f"control.{label}" for label in self.controls()])
        for v in rows:
            steps = val(f"{v}.train_steps", "{:,.0f}")
            if f"{v}.train_epochs" in metrics:
                steps += f" ({val(f'{v}.train_epochs')}{', early stop' if val(f'{v}.stopped_early') == '1.00' else ''})"
            lines.append(f"| {v} | {val(f'{v}.dev.{main}')} | "
                         + "".join(f"{val(f'{v}.{s}.{main}')} | " for s in self.eval_sets.extra)
                         + f"{steps} | {val(f'{v}.size_mb')} | "
                         f"{val(f'{v}.num_parameters', '{:,.0f}')} | {val(f'{v}.latency_p50_ms', '{:.3f}')} | "
                         f"{val(f'{v}.latency_p90_ms', '{:.3f}')} |")
        for label in self.controls():
            step, control = metrics.get(f"compressed.{label}.dev.{main}"), metrics.get(f"control.{label}.dev.{main}")
            if step and control:
                lines.append(f"\nΔ compression of {label} (step - its equal-budget control, dev {main}): "
                             f"{step['value'] - control['value']:+.2f} pp")
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {s} | {d:.1f} |" for s, d in durations.items() if d is not None]
        lines += ["", "All metrics with units: `metrics.json`."]
        return "\n".join(lines) + "\n"

    def _write_tb(self, metrics: dict, variants: list[str]) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            return
        main = self.task_main_metric
        with SummaryWriter(str(self.run_dir / "tb")) as w:
            for step, v in enumerate(variants):
                for key, tag in ((f"{v}.dev.{main}", f"pipeline/dev_{main}"), (f"{v}.size_mb", "pipeline/size_mb"),
                                 (f"{v}.latency_p50_ms", "pipeline/latency_p50_ms")):
                    if key in metrics:
                        w.add_scalar(tag, metrics[key]["value"], step)
            w.add_text("config", "```\n" + dump_yaml(self.raw) + "\n```")


def _mb(model_dir: Path) -> float:
    from compress.common import deploy_size_bytes

    return round((deploy_size_bytes(model_dir) if model_dir.exists() else 0) / 1e6, 4)


def _params(model_dir: Path) -> dict:
    f = model_dir / "manifest.json"
    n = read_json(f).get("num_parameters") if f.is_file() else None
    return {"num_parameters": n} if isinstance(n, int) else {}


def _variant_metrics(report: dict, out_dir: Path) -> dict:
    """A step/export report with the size in MB of what a deployment needs."""
    report = dict(report or {})
    report["size_mb"] = _mb(out_dir)
    return report


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
