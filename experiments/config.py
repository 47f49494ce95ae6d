"""The experiment config: a strict YAML schema composed from the sections every stage owns.

```yaml
name: slu-nano                 # runs go to runs/<name>/<run-id>/
recipe: logits_kd              # label of this configuration in tables (a sweep sets it per recipe)
task: {name: nlpcc2018_slu, max_seq_length: 16}           # + that task's Options
teacher: {name: ernie-3.0-tiny-base-v2-zh, init: pretrained, options: {}, train: {epochs: 3}}
teachers: []                   # optional extra teachers (multi-teacher distillation), same shape
assistants: [{name: ernie-3.0-tiny-mini-v2-zh, distill: {...}}]   # teacher-assistant chain (experiments/assistants.py)
student: {name: ernie-3.0-tiny-nano-v2-zh, init: pretrained, options: {}}
distill: {epochs: 10, losses: [...]}                       # distill.config.DistillConfig
compress: [{step: vocab_prune, max_vocab_size: 6000}, ...] # each validated by the step's params
export: [paddle-inference, {backend: onnx-int8, tolerance: 1.0}]   # a name, or a mapping with check settings
bench: {batch_size: 1, seq_len: 16, threads: 1, runs: 100}
seeds: [1, 2, 3]
sweep: {teachers: [...], students: [...], recipes: {no_kd: {distill.losses: [{type: hard_ce}]}}}
search: {students: [...], widths: [...], vocab_sizes: [...], quantize: {...}}   # experiments/search.py
```

The typed sections are in experiments/config_sections.py, reading YAML and ``--set`` overrides in
experiments/config_yaml.py, hashes and data fingerprints in experiments/identity.py.  ``resolve`` validates a
parsed mapping into an ``ExperimentConfig`` once; everything downstream takes that object.  Every problem is a
``ConfigError`` naming the file, line and key path, with the closest valid key or registered name.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydistill.distill.schema import ConfigError, coerce, from_dict, is_section, registered_name, require
from tinydistill.experiments.config_sections import (BenchSection, ExperimentConfig, ExportSection, ModelSection, SweepSection,
                                         TaskSection)
from tinydistill.experiments.config_yaml import apply_overrides, closest, load_yaml, locate_error

# top-level keys: used for the unknown/missing key check (sections are validated one by one)
@dataclass
class _TopLevel:
    name: str
    task: Any
    student: Any
    distill: Any = None
    recipe: str = "default"
    teacher: Any = None
    teachers: Any = None
    compress: Any = None
    export: Any = None
    bench: Any = None
    seeds: Any = None
    sweep: Any = None
    controls: Any = None
    assistants: Any = None
    search: Any = None
    share_student: Any = None


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read, override and validate a config file; errors name ``file:line: key.path``."""
    raw = load_yaml(path)
    raw = apply_overrides(raw, overrides)
    try:
        cfg = resolve(raw)
    except ConfigError as exc:
        raise ConfigError(locate_error(path, str(exc))) from None
    cfg.source = str(path)
    return cfg



def resolve(raw: dict) -> ExperimentConfig:
    """Validate a parsed config mapping into an ``ExperimentConfig`` (registry names checked up front)."""
    top = from_dict(_TopLevel, raw)
    task = _task_section(top.task)
    student = _model_section(top.student, "student", "students")
    teacher = _model_section(top.teacher, "teacher", "teachers", teacher=True) if top.teacher else None
    extra = top.teachers or []
    if not isinstance(extra, list):
        raise ConfigError(f"teachers: expected a list of teacher sections, got {extra!r}")
    teachers = [_model_section(t, f"teachers[{i}]", "teachers", teacher=True) for i, t in enumerate(extra)]
    distill = _distill_config(top.distill or {}, "distill")
    from tinydistill.experiments.multitask import check_task_listed

    check_task_listed(task.name, ([teacher] if teacher else []) + teachers)
    if _uses_teacher(distill) and not (teacher or teachers):
        raise ConfigError("distill.losses: distillation losses need a 'teacher' section "
                          "(or use only hard-label losses for a no-KD baseline)")
    compress = _compress_section(top.compress or [])
    export = _export_section(top.export or [])
    for i, backend in enumerate(e.backend for e in export):
        if not _registry("backends").entry(backend).meta.get("builder", True):
            raise ConfigError(f"export[{i}]: backend {backend!r} runs model directories as they are; "
                              "there is nothing to export (list only exported formats)")
    bench = from_dict(BenchSection, top.bench, "bench") if top.bench is not None else None
    seeds = top.seeds if top.seeds is not None else [1]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    sweep = from_dict(SweepSection, top.sweep, "sweep") if top.sweep is not None else None
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", top.name):
        raise ConfigError(f"name: {top.name!r} must be usable as a directory name (letters, digits, _.+-)")
    if top.controls is not None and not isinstance(top.controls, bool):
        raise ConfigError(f"controls: expected true or false, got {top.controls!r}")
    from tinydistill.experiments.assistants import assistant_sections
    from tinydistill.experiments.search import search_section

    assistants = assistant_sections(top.assistants, top.distill or {}, ([teacher] if teacher else []) + teachers)
    if assistants and not _uses_teacher(distill):
        raise ConfigError("assistants: the student is trained without distillation (distill.losses has no KD "
                          "loss), so the chain would teach nobody; drop 'assistants' for a no-KD baseline")
    search = search_section(top.search) if top.search is not None else None
    if top.share_student is not None and not isinstance(top.share_student, bool):
        raise ConfigError(f"share_student: expected true or false, got {top.share_student!r}")
    return ExperimentConfig(name=top.name, recipe=top.recipe, task=task, teacher=teacher, teachers=teachers,
                            student=student, distill=distill, compress=compress, export=export, bench=bench,
                            seeds=list(seeds), sweep=sweep, controls=bool(top.controls), assistants=assistants,
                            search=search, share_student=bool(top.share_student))

def _registry(kind: str):
    from tinydistill.distill.registry import get_registry

    return get_registry(kind)


def _checked_name(name: Any, path: str, kind: str) -> str:
    return registered_name(_registry(kind), name, path, kind[:-1])


def _require_mapping(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    if "name" not in value:
        raise ConfigError(f"{path}.name: required key is missing")
    return dict(value)


def task_options_class(task_name: str):
    cls = _registry("tasks").get(task_name)
    opts = getattr(cls, "Options", None)
    if opts is None or not is_section(opts):
        raise ConfigError(f"task.name: task {task_name!r} has no Options dataclass")
    return opts


def _task_section(value: Any) -> TaskSection:
    data = _require_mapping(value, "task")
    name = _checked_name(data.pop("name"), "task.name", "tasks")
    return TaskSection(name=name, options=from_dict(task_options_class(name), data, "task"))


def _model_section(value: Any, path: str, kind: str, teacher: bool = False) -> ModelSection:
    if isinstance(value, str):
        value = {"name": value}
    data = _require_mapping(value, path)
    data["name"] = _checked_name(data["name"], f"{path}.name", kind)
    train = data.pop("train", None) if teacher else None
    for key in ("finetune", "train", "tasks", "task_mixing"):
        if not teacher and key in data:
            raise ConfigError(f"{path}.{key}: unknown key; only teachers have {key!r} "
                              "(a student is trained by the 'distill' section)")
    section = from_dict(ModelSection, data, path)
    _check_options(kind, section.name, section.options, f"{path}.options")
    if teacher and section.tokenizer.from_teacher:
        raise ConfigError(f"{path}.tokenizer.from_teacher: only a student can take the teacher's tokenizer")
    if section.tokenizer.type is not None:
        section.tokenizer.type = _checked_name(section.tokenizer.type, f"{path}.tokenizer.type", "tokenizers")
    if not section.init:
        raise ConfigError(f"{path}.init: expected scratch, pretrained or a model directory")
    if teacher:
        from tinydistill.experiments.multitask import check_teacher_tasks

        check_teacher_tasks(section, path)
        train = dict(train or {})
        train.setdefault("losses", [{"type": "hard_ce", "weight": 1.0}])
        section.train = _distill_config(train, f"{path}.train")
        if _uses_teacher(section.train):
            raise ConfigError(f"{path}.train.losses: teacher fine-tuning uses hard-label losses only "
                              f"(found {[loss.type for loss in section.train.losses]})")
    return section


def distill_config_class():
    from tinydistill.distill.config import DistillConfig

    return DistillConfig


def _distill_config(value: Any, path: str):
    # every loss entry is checked against its own loss's parameter class there (distill.config.LossConfig)
    return from_dict(distill_config_class(), value, path)


def _uses_teacher(cfg: Any) -> bool:
    """True when a DistillConfig has a KD loss whose weight is not 0 throughout (needs teacher outputs)."""
    from tinydistill.distill.losses import uses_teacher

    return uses_teacher(getattr(cfg, "losses", []) or [])


def uses_teacher(cfg: ExperimentConfig) -> bool:
    return _uses_teacher(cfg.distill)


def _compress_section(value: Any) -> list:
    """``compress:`` -> ``[compress.pipeline.Step]``: the steps as the pipeline parses them, then ranges."""
    from tinydistill.compress.pipeline import parse_steps

    steps = parse_steps(value, "compress")
    for i, step in enumerate(steps):
        if dataclasses.is_dataclass(step.params):
            _check_step_params(step.params, f"compress[{i}]")
    return steps


#: ranges of the training and check parameters compression steps share (their dataclasses live in compress/)
_STEP_RANGES = {"epochs": {"ge": 1}, "max_steps": {"ge": 1}, "batch_size": {"ge": 1}, "lr": {"gt": 0},
                "tolerance": {"ge": 0}, "calibration_examples": {"ge": 1}, "importance_examples": {"ge": 1}}


def _check_step_params(params: Any, path: str) -> None:
    """Ranges of a step's numeric parameters and its ``losses`` (checked like ``distill.losses``)."""
    for name, bounds in _STEP_RANGES.items():
        if hasattr(params, name):
            try:
                require(params, name, **bounds)
            except ValueError as exc:
                raise ConfigError(f"{path}.{name}: {str(exc).split(' ', 1)[1]}") from None
    losses = getattr(params, "losses", None)
    if losses is not None:
        from tinydistill.distill.config import LossConfig

        if not isinstance(losses, list) or not losses:
            raise ConfigError(f"{path}.losses: expected a non-empty list of losses, got {losses!r}")
        for j, loss in enumerate(losses):  # each against its own loss's parameters, as distill.losses
            from_dict(LossConfig, loss, f"{path}.losses[{j}]")
    recover = getattr(params, "recover", None)
    if dataclasses.is_dataclass(recover):
        _check_step_params(recover, f"{path}.recover")


#: integer model options that are ids (count from 0); every other integer option is a size or count
_ZERO_BASED_OPTIONS = ("pad_token_id", "padding_idx", "task_id")


def _check_options(kind: str, name: str, options: dict, path: str) -> None:
    """``options`` against the architecture's option names and types (registry meta ``options``), with
    ranges: sizes and counts >= 1, ids >= 0, dropouts and probabilities in [0, 1), other floats > 0."""
    types_ = _registry(kind).entry(name).meta.get("options")
    if types_ is None:
        return
    for key, value in options.items():
        where = f"{path}.{key}"
        if key not in types_:
            close = closest(str(key), list(types_))
            hint = f"; did you mean {close!r}?" if close else ""
            raise ConfigError(f"{where}: unknown option for {name}{hint} (valid: {', '.join(types_)})")
        value = coerce(value, types_[key], where)
        for v in (value if isinstance(value, list) else [value]):
            if v is None or isinstance(v, (bool, str)):
                continue
            if isinstance(v, int):
                low = 0 if key in _ZERO_BASED_OPTIONS else 1
                if v < low:
                    raise ConfigError(f"{where}: must be >= {low}, got {value!r}")
            elif "dropout" in key or key.endswith("_prob"):
                if not 0.0 <= v < 1.0:
                    raise ConfigError(f"{where}: must be in [0, 1), got {value!r}")
            elif not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{where}: must be > 0, got {value!r}")


def _export_section(value: Any) -> list[ExportSection]:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"export: expected a list of backend names or mappings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        path = f"export[{i}]"
        if isinstance(item, str):
            item = {"backend": item}
        if not isinstance(item, dict) or "backend" not in item:
            raise ConfigError(f"{path}: expected a backend name or a mapping with 'backend', got {item!r}")
        section = from_dict(ExportSection, item, path)
        section.backend = _checked_name(section.backend, f"{path}.backend" if len(item) > 1 else path, "backends")
        out.append(section)
    return out


