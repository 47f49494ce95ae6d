"""Teacher-assistant chains (Mirzadeh et al. 2020): teacher -> assistant 1 -> ... -> assistant N -> student.

```yaml
teacher: {name: ernie-3.0-tiny-base-v2-zh, ...}
assistants:                      # in chain order; each is distilled from the model before it
  - name: ernie-3.0-tiny-mini-v2-zh
    init: pretrained
    options: {}                  # architecture overrides, as for any model
    tokenizer: {from_teacher: true}   # the tokenizer of the model it learns from
    distill: {losses: [...]}     # this hop's overrides, merged over the experiment's `distill` section
student: {name: ernie-3.0-tiny-nano-v2-zh, ...}   # the last hop: the experiment's `distill` section as is
```

Every hop is one engine call (``distill.trainer.train``) with the hop's ``DistillConfig`` (``distill`` merged with
the assistant's own ``distill``), and one stage ``assistant<k>`` (1-based, chain order) with its own directory,
checkpoint (``--resume`` continues it), teacher-output cache and metrics (``assistant<k>.*``).  Like teachers,
assistants are shared: keyed by the task, the teachers' keys, every assistant before it and its own resolved
section and hop config, and the seed, trained once under ``<out>/<name>/_assistants/<key>/`` (under a store
lock, so sweep cells and workers on other machines wait instead of training it twice) and linked into each run
(``assistant1 -> ../_assistants/<key>``).  The first hop learns from all the teachers (mixed as ``distill.mixing``
says), each later hop from the assistant before it, the student from the last assistant.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydistill.distill.fsutil import clean_stale_temporaries, read_json, write_json
from tinydistill.distill.schema import ConfigError, to_dict
from tinydistill.experiments.config_sections import ModelSection
from tinydistill.experiments.config_yaml import deep_merge
from tinydistill.experiments.identity import EXECUTION_KEYS, config_hash, hash_view, short_name

ASSISTANTS_DIR = "_assistants"


@dataclass
class AssistantSection(ModelSection):
    """One hop's model (a ``ModelSection``) and its ``distill`` overrides as written (``train`` holds the
    resolved hop config)."""

    distill_override: dict = field(default_factory=dict)

    def with_seed(self, seed: int) -> AssistantSection:
        """This hop in a run with seed ``seed``: the seed of the ``distill`` section it is merged over, unless
        its own overrides set one (as ``assistant_sections`` resolves it)."""
        if "seed" in self.distill_override:
            return self
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))


# ----------------------------------------------------------------------------------------------
# config


def assistant_sections(value: Any, distill_raw: dict, teachers: list) -> list[AssistantSection]:
    """Validate ``assistants:`` (a list of model sections with an optional ``distill`` override each)."""
    from tinydistill.experiments.config import _distill_config, _model_section, _uses_teacher

    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"assistants: expected a list of model sections, got {value!r}")
    if value and not teachers:
        raise ConfigError("assistants: a teacher-assistant chain needs a 'teacher' section to start from")
    out = []
    for i, item in enumerate(value):
        path = f"assistants[{i}]"
        data = dict(item) if isinstance(item, dict) else ({"name": item} if isinstance(item, str) else item)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a model name or a mapping with 'name', got {item!r}")
        override = data.pop("distill", None) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{path}.distill: expected a mapping of overrides of the 'distill' section, "
                              f"got {override!r}")
        section = _model_section(data, path, "teachers")
        try:
            merged = deep_merge(distill_raw, override)
        except ConfigError as exc:
            raise ConfigError(f"{path}.distill: {exc}") from None
        hop = _distill_config(merged, f"{path}.distill")
        if not _uses_teacher(hop):
            raise ConfigError(f"{path}.distill.losses: the hop into this assistant has no distillation loss "
                              f"({[loss.type for loss in hop.losses]}); an assistant must learn from the model "
                              "before it")
        fields_ = {k: getattr(section, k) for k in ("name", "init", "options", "tokenizer")}
        out.append(AssistantSection(**fields_, train=hop, distill_override=copy.deepcopy(override)))
    return out


def assistant_raw(a: AssistantSection) -> dict:
    """The section as ``assistant_sections`` accepts it again (saved in config.yaml)."""
    raw = {"name": a.name, "init": a.init, "options": dict(a.options), "tokenizer": to_dict(a.tokenizer)}
    if a.distill_override:
        raw["distill"] = copy.deepcopy(a.distill_override)
    return raw


def hop_config_raw(a: AssistantSection) -> dict:
    """The resolved hop config without the settings that do not change results (part of the shared key)."""
    raw = to_dict(a.train)
    for key in EXECUTION_KEYS:
        raw.pop(key, None)
    return raw


# ----------------------------------------------------------------------------------------------
# runner side


class AssistantChain:
    """The assistant stages of one ``experiments.runner.Runner`` (stage ``assistant<k>``, 1-based)."""

    def __init__(self, runner):
        self.runner = runner
        self.sections: list[AssistantSection] = list(runner.cfg.assistants)
        self._models: dict[int, tuple] = {}

    def label(self, k: int) -> str:
        return f"assistant{k + 1}"

    def labels(self) -> list[str]:
        return [self.label(k) for k in range(len(self.sections))]

    def stages(self) -> list[tuple[str, Any]]:
        return [(self.label(k), lambda k=k: self.stage(k)) for k in range(len(self.sections))]

    # -- identity ------------------------------------------------------------------------------
    def shared_dir(self, k: int) -> Path:
        """``<exp>/_assistants/<short>-s<seed>-<key>``: the same chain prefix and hop config -> the same model."""
        from tinydistill.experiments.protocol import teacher_task

        r = self.runner
        body = {"task": teacher_task(hash_view(r.raw, r.data_fingerprint)["task"]),
                "teacher_keys": r.teachers.keys(),
                "chain": [dict(assistant_raw(a), hop=hop_config_raw(a)) for a in self.sections[:k + 1]],
                "seed": r.seed}
        key = config_hash(body, drop=())
        return r.exp_dir / ASSISTANTS_DIR / f"{short_name(self.sections[k].name)}-s{r.seed}-{key[:10]}"

    def keys(self) -> list[str]:
        return [f"assistant:{self.shared_dir(k).name}" for k in range(len(self.sections))]

    def finished(self) -> bool:
        return all((self.shared_dir(k) / ".done.json").is_file() for k in range(len(self.sections)))

    # -- training ------------------------------------------------------------------------------
    def ensure_all(self) -> None:
        for k in range(len(self.sections)):
            self.ensure(k)

    def ensure(self, k: int) -> dict:
        """Train assistant ``k`` (and the ones before it) once, under a store lock; its ``.done.json``."""
        r = self.runner
        if k > 0:
            self.ensure(k - 1)
        else:
            r.teachers.ensure_all()
        shared = self.shared_dir(k)
        done = shared / ".done.json"
        with r.store.lock(f"assistant-{shared.name}", log=r._log_prefixed):
            if not done.is_file():
                t0 = time.time()
                name = self.sections[k].name
                r.log(f"{r.prefix}{self.label(k)} {name} (seed {r.seed}): distilling from "
                      f"{self._teacher_names(k)} -> {shared}")
                clean_stale_temporaries(shared)
                metrics = self._train(k, shared)
                write_json(done, {"seconds": round(time.time() - t0, 3), "metrics": metrics,
                                  "assistant": assistant_raw(self.sections[k]), "hop": hop_config_raw(self.sections[k])})
                r.log(f"{r.prefix}{self.label(k)} {name} (seed {r.seed}): done in {time.time() - t0:.1f}s")
        return read_json(done)

    def _teacher_names(self, k: int) -> str:
        if k == 0:
            return " + ".join(t.name for t in self.runner.cfg.all_teachers)
        return f"{self.label(k - 1)} ({self.sections[k - 1].name})"

    def teachers_of(self, k: int) -> list:
        """[(model, tokenizer)] that hop ``k`` learns from (``k == len(sections)``: the student's)."""
        if k == 0:
            return self.runner.teachers.models()
        return [self.model(k - 1)]

    def student_teachers(self) -> list:
        """Who teaches the student: the last assistant, or the teachers without a chain."""
        return self.teachers_of(len(self.sections))

    def model(self, k: int) -> tuple:
        if k not in self._models:
            from tinydistill.teachers.base import load_model_dir

            model, tok, _ = load_model_dir(self.shared_dir(k) / "best")
            self._models[k] = (model, tok)
        return self._models[k]

    def _train(self, k: int, out: Path) -> dict:
        from tinydistill.distill.runtime import seed_everything
        from tinydistill.distill.trainer import train
        from tinydistill.experiments.protocol import training_facts
        from tinydistill.experiments.stage_tools import resumable
        from tinydistill.teachers.base import build_model

        r, a = self.runner, self.sections[k]
        teachers = self.teachers_of(k)
        tok = teachers[0][1] if a.tokenizer.from_teacher else r.tokenizer_for(a, f"assistants[{k}]")
        seed_everything(r.seed)
        model = build_model("teacher", a.name, r.task.heads(), init=a.init, vocab_size=tok.vocab_size, **a.options)
        result = resumable(out, self.label(k), lambda: train(
            model, tok, r.task, r.train_examples, r.dev_examples, a.train, str(out), teachers=teachers,
            resume=(out / "checkpoint").exists()))
        return {"dev": dict(result.best_metrics), **training_facts(result, a.train)}

    def stage(self, k: int) -> dict:
        """Stage ``assistant<k+1>``: the shared assistant (trained if missing), linked into the run directory."""
        from tinydistill.distill.fsutil import link_atomically
        from tinydistill.experiments.stage_tools import model_facts
        from tinydistill.experiments.store import flatten_metrics

        r = self.runner
        done = self.ensure(k)
        shared = self.shared_dir(k)
        link_atomically(r.run_dir / self.label(k), shared)
        best = shared / "best"
        return flatten_metrics(self.label(k), {**done["metrics"], **model_facts(best), **r._more_sets(best)})


# ----------------------------------------------------------------------------------------------
# report side


def chain_of(record: dict) -> list[str]:
    """Model names of a run's chain, teacher first, student last."""
    config = record.get("config") or {}
    teacher = (config.get("teacher") or {}).get("name") or record.get("teacher") or "-"
    return [teacher] + [a.get("name", "?") for a in config.get("assistants") or []] + [record.get("student", "?")]


def chain_table(rows: list) -> tuple[list[str], list[list[str]], list[list[Any]]] | None:
    """Every KD row's chain with each hop's dev metric, and the student minus the direct chain's student
    (same task, teacher and student, KD, no assistants), paired by seed.  None without any assistant run."""
    from tinydistill.experiments.report import mean_std, paired_diff
    from tinydistill.experiments.report_protocol import _fmt_diff

    kd = [row for row in rows if row.kd]
    if not any(len(chain_of(row.records[0])) > 2 for row in kd):
        return None
    metric = kd[0].main_metric
    header = ["task", "recipe", "seeds", "chain", f"dev {metric} per hop (%)", f"student {metric} (%)",
              "student - direct (pp)"]
    cells, raw = [], [["task", "recipe", "seeds", "chain", "hops", "student_mean", "student_std",
                       "minus_direct_mean", "minus_direct_std", "minus_direct_n", "direct_recipe"]]
    for row in kd:
        chain = chain_of(row.records[0])
        labels = ["teacher"] + [f"assistant{k}" for k in range(1, len(chain) - 1)] + ["student"]
        hops = []
        for name, label in zip(chain, labels):
            m, s = mean_std(list(row.per_seed(f"{label}.dev.{row.main_metric}").values()))
            hops.append(f"{short_name(name)} " + ("-" if m is None else f"{m:.2f}" + (f" ± {s:.2f}" if s else "")))
        student = mean_std(list(row.per_seed(f"student.dev.{row.main_metric}").values()))
        direct = next((d for d in kd if d is not row and d.task == row.task and d.student == row.student
                       and d.teacher == row.teacher and len(chain_of(d.records[0])) == 2), None)
        diff = (paired_diff(row.per_seed(f"student.dev.{row.main_metric}"),
                            direct.per_seed(f"student.dev.{row.main_metric}"), baseline=direct.recipe)
                if direct is not None and len(chain) > 2 else None)
        cells.append([row.task, row.recipe, str(len(row.records)), " → ".join(short_name(n) for n in chain),
                      " → ".join(hops), "-" if student[0] is None else
                      f"{student[0]:.2f}" + (f" ± {student[1]:.2f}" if student[1] else ""),
                      "direct" if len(chain) == 2 else (_fmt_diff(diff) + (f" (p={diff.p_value:.3f})"
                                                                           if diff.p_value is not None else "")
                                                         if diff else "no direct run")])
        raw.append([row.task, row.recipe, len(row.records), " -> ".join(chain), len(chain) - 1, student[0],
                    student[1], diff.mean if diff else None, diff.std if diff else None, diff.n if diff else None,
                    direct.recipe if direct else None])
    return header, cells, raw
