"""The teacher stages of one run (``teacher``, ``teacher1``, ...): fine-tune each teacher once, shared.

A teacher is keyed by (task, teacher section, seed) and trained once under ``<out>/<name>/_teachers/<key>/``,
under a store lock (sweep cells and workers on other machines wait instead of training it twice); run
directories link to it (``teacher -> ../_teachers/<key>``), so every student and recipe of a sweep learns from
the very same teacher.  A multi-task teacher (``tasks:``) is trained by experiments/multitask.py.
"""
from __future__ import annotations

import time
from pathlib import Path

from tinydistill.distill.fsutil import clean_stale_temporaries, link_atomically, read_json, write_json
from tinydistill.distill.runtime import seed_everything
from tinydistill.experiments.identity import config_hash, hash_view, short_name
from tinydistill.experiments.protocol import teacher_task, training_facts
from tinydistill.experiments.stage_tools import model_facts, resumable
from tinydistill.experiments.store import flatten_metrics

TEACHERS_DIR = "_teachers"


class TeacherSet:
    """The teachers of one ``experiments.runner.Runner``, in config order (``cfg.all_teachers``)."""

    def __init__(self, runner):
        self.runner = runner
        self.sections = list(runner.cfg.all_teachers)
        self._models: list | None = None

    def label(self, i: int) -> str:
        return "teacher" if i == 0 else f"teacher{i}"

    def labels(self) -> list[str]:
        return [self.label(i) for i in range(len(self.sections))]

    def stages(self) -> list[tuple[str, object]]:
        return [(self.label(i), lambda i=i: self.stage(i)) for i in range(len(self.sections))]

    def _raw(self, i: int) -> dict:
        """Teacher ``i``'s section in the run's canonical config (``runner.raw``)."""
        raw, has_first = self.runner.raw, self.runner.cfg.teacher is not None
        return raw["teacher"] if (i == 0 and has_first) else raw["teachers"][i - (1 if has_first else 0)]

    # -- identity ------------------------------------------------------------------------------
    def shared_dir(self, i: int) -> Path:
        r, t = self.runner, self.sections[i]
        body = {"task": teacher_task(hash_view(r.raw, r.data_fingerprint)["task"]), "teacher": self._raw(i),
                "seed": r.seed}
        if t.tasks:  # a multi-task teacher: every task's section and data (experiments/multitask.py)
            from tinydistill.experiments.multitask import teacher_key_extra

            body.update(teacher_key_extra(r, t))
        key = config_hash(body)
        return r.exp_dir / TEACHERS_DIR / f"{short_name(t.name)}-s{r.seed}-{key[:10]}"

    def model_dir(self, i: int) -> Path:
        """What students learn from: ``best/``, or a multi-task teacher's view of this run's task."""
        from tinydistill.experiments.multitask import teacher_model_dir

        return teacher_model_dir(self.shared_dir(i), self.sections[i], self.runner.cfg.task.name)

    def keys(self) -> list[str]:
        return [self.shared_dir(i).name for i in range(len(self.sections))]

    def finished(self) -> bool:
        return all((self.shared_dir(i) / ".done.json").is_file() for i in range(len(self.sections)))

    # -- training ------------------------------------------------------------------------------
    def ensure_all(self) -> None:
        for i in range(len(self.sections)):
            self.ensure(i)

    def ensure(self, i: int) -> dict:
        """Train teacher ``i`` once, under a store lock; its ``.done.json``."""
        r = self.runner
        shared = self.shared_dir(i)
        done = shared / ".done.json"
        with r.store.lock(f"teacher-{shared.name}", log=r._log_prefixed):  # trained once, any machine
            if not done.is_file():
                t0 = time.time()
                name = self.sections[i].name
                doing = "training" if self.sections[i].finetune else "loading and evaluating"
                r.log(f"{r.prefix}teacher {name} (seed {r.seed}): {doing} -> {shared}")
                clean_stale_temporaries(shared)  # left by a killed fine-tuning (we hold its lock)
                metrics = self._train(i, shared)
                write_json(done, {"seconds": round(time.time() - t0, 3), "metrics": metrics,
                                  "teacher": r.raw.get("teacher") if i == 0 else None})
                r.log(f"{r.prefix}teacher {name} (seed {r.seed}): done in {time.time() - t0:.1f}s"
                      f"{r._summary(flatten_metrics('teacher', metrics))}")
        return read_json(done)

    def _train(self, i: int, out: Path) -> dict:
        from tinydistill.teachers.base import build_model, load_model_dir, save_model_dir

        r, t = self.runner, self.sections[i]
        path = "teacher" if (i == 0 and r.cfg.teacher) else f"teachers[{i}]"
        if t.tasks:
            from tinydistill.experiments.multitask import train_teacher

            return train_teacher(r, i, out)
        if not t.finetune:
            model, tok, _ = load_model_dir(t.init)
            save_model_dir(out / "best", model, tok, task=r.task, extra={"source": t.init})
            from tinydistill.distill.trainer import evaluate

            return {"dev": evaluate(model, tok, r.task, r.dev_examples)}
        from tinydistill.distill.trainer import train

        tok = r.tokenizer_for(t, path)
        seed_everything(r.seed)
        model = build_model("teacher", t.name, r.task.heads(), init=t.init, vocab_size=tok.vocab_size, **t.options)
        result = resumable(out, "teacher", lambda: train(
            model, tok, r.task, r.train_examples, r.dev_examples, t.train, str(out), teachers=(),
            resume=(out / "checkpoint").exists()))
        return {"dev": dict(result.best_metrics), **training_facts(result, t.train)}

    def stage(self, i: int) -> dict:
        """Stage ``teacher<i>``: the shared teacher (trained if missing), linked into the run directory."""
        r = self.runner
        done = self.ensure(i)
        link_atomically(r.run_dir / self.label(i), self.shared_dir(i))
        best = self.model_dir(i)
        out = flatten_metrics(self.label(i), {**done["metrics"], **model_facts(best), **r._more_sets(best)})
        if i == len(self.sections) - 1 and i > 0:  # several teachers: their mixture is the teacher
            out.update(flatten_metrics("teachers_mixed", self._mixture_metrics()))
        return out

    def _mixture_metrics(self) -> dict:
        """Metrics of the teachers' mixed logits (``distill.mixing``) on every evaluation set."""
        from tinydistill.distill.multiteacher import evaluate_mixture

        r = self.runner
        return {name: {k: float(v) for k, v in evaluate_mixture(self.models(), r.task, rows,
                                                                 r.cfg.distill.mixing).items()}
                for name, rows in r.eval_sets.sets.items() if rows}

    def models(self) -> list:
        """[(model, tokenizer)] of the run's teachers (loaded once)."""
        if self._models is None:
            from tinydistill.teachers.base import load_model_dir

            self._models = [load_model_dir(self.model_dir(i))[:2] for i in range(len(self.sections))]
        return self._models
