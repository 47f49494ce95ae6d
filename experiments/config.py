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

YAML is read with ``yaml.safe_load`` semantics (no object construction), bounded in size and alias
expansion (``safe_yaml``).  Every problem is a ``ConfigError``
naming the file, line and key path, with the closest valid key or registered name.  ``--set
key.sub=value`` overrides are applied to the parsed mapping before validation (value parsed as a YAML
scalar; list items by index: ``distill.losses.0.weight=0.5``).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from distill.config import loss_identity
from distill.registry import RegistryError
from distill.schema import ConfigError, coerce, from_dict, require, to_dict

# ----------------------------------------------------------------------------------------------
# sections owned here


@dataclass
class BenchSection:
    """Benchmark settings for every model directory the run produced."""

    batch_size: int = 1
    seq_len: int = 16
    threads: int = 1
    runs: int = 100
    warmup: int = 10
    #: batch sizes of the throughput measurement (examples/s, end to end)
    throughput_batches: list[int] = field(default_factory=lambda: [8, 32])

    def validate(self) -> None:
        for name in ("batch_size", "threads", "runs"):
            require(self, name, ge=1)
        require(self, "seq_len", ge=3)  # [CLS] + one token + [SEP]: anything shorter would silently be 3
        require(self, "warmup", ge=0)
        if any(b < 1 for b in self.throughput_batches):
            raise ValueError(f"throughput_batches must be >= 1, got {self.throughput_batches}")


@dataclass
class ExportSection:
    """One export: backend name plus the check ``compress.export.export`` runs before accepting it (FP32:
    max |logit diff| < ``atol``; INT8: dev main metric within ``tolerance`` points of the source)."""

    backend: str
    check: bool = True
    tolerance: float = 0.5
    atol: float = 1e-4
    max_check_examples: Optional[int] = None

    def validate(self) -> None:
        require(self, "tolerance", ge=0)
        require(self, "atol", gt=0)
        require(self, "max_check_examples", ge=1)


@dataclass
class SweepSection:
    """The grid of ``tinydistill sweep``: teachers x students x recipes x seeds.

    ``teachers``/``students`` items are a registry name or a mapping merged over the base section;
    ``recipes`` maps a recipe name to overrides (nested mapping or ``dotted.key: value`` pairs).
    """

    teachers: list[Any] = field(default_factory=list)
    students: list[Any] = field(default_factory=list)
    recipes: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizerSection:
    """The model's tokenizer (``tinydistill list tokenizers``).

    ``type`` defaults to ``ernie-wordpiece`` for ERNIE models and ``jieba-word`` otherwise.
    ``ernie-wordpiece`` reads ``vocab_file`` (default: ``vocab.txt`` of an ``init`` directory, else the
    paddlenlp cache ``~/.paddlenlp/models/<name>/vocab.txt``), or with ``build: true`` makes a vocabulary
    of the training texts' characters (scratch models only: fully offline).  ``char``/``jieba-word``
    always build their vocabulary from the training texts (``min_freq``, ``max_size``).
    """

    type: Optional[str] = None
    #: students only: use the (first) teacher's tokenizer, which token-level KD (token heads, hidden
    #: states, attentions) needs
    from_teacher: bool = False
    vocab_file: Optional[str] = None
    build: bool = False
    min_freq: int = 1
    max_size: Optional[int] = None

    def validate(self) -> None:
        require(self, "min_freq", ge=1)
        require(self, "max_size", ge=1)


@dataclass
class ModelSection:
    """A teacher or student: registry name, ``init`` (scratch | pretrained | a directory), builder options."""

    name: str
    init: str = "pretrained"
    options: dict[str, Any] = field(default_factory=dict)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    #: teachers only: fine-tune on the task first (false: use ``init``, a fine-tuned model directory, as is)
    finetune: bool = True
    train: Any = None  # teachers only: the fine-tuning DistillConfig (hard labels only)
    #: teachers only: fine-tune jointly on these tasks, one encoder and a set of heads per task (experiments.multitask)
    tasks: list[Any] = field(default_factory=list)
    #: teachers only, with ``tasks``: ``{mode: proportional | temperature, temperature: 2.0}``
    task_mixing: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskSection:
    name: str
    options: Any = None  # the task's Options dataclass instance


@dataclass
class StepSection:
    step: str
    params: Any = None  # the step's params dataclass instance (or a dict when the step has none)


@dataclass
class ExperimentConfig:
    name: str
    task: TaskSection
    student: ModelSection
    distill: Any  # distill.config.DistillConfig
    recipe: str = "default"
    teacher: Optional[ModelSection] = None
    teachers: list[ModelSection] = field(default_factory=list)
    compress: list[StepSection] = field(default_factory=list)
    export: list[ExportSection] = field(default_factory=list)
    bench: Optional[BenchSection] = None
    seeds: list[int] = field(default_factory=lambda: [1])
    sweep: Optional[SweepSection] = None
    #: equal-budget controls: every compression step that trains (width-pruning recovery, QAT) is repeated
    #: on its uncompressed input model with the same training (compress/controls.py)
    controls: bool = False
    #: teacher-assistant chain, teacher -> assistants[0] -> ... -> student (experiments.assistants)
    assistants: list = field(default_factory=list)
    #: the space of ``tinydistill search`` (experiments.search.SearchSection)
    search: Any = None
    #: one student training for every run with the same student, teachers, distill and seed
    #: (experiments.shared_student)
    share_student: bool = False
    source: str = ""  # file the config came from (not part of the schema)

    @property
    def all_teachers(self) -> list[ModelSection]:
        return ([self.teacher] if self.teacher else []) + list(self.teachers)

    def to_raw(self) -> dict:
        """The resolved config as a plain mapping that ``resolve`` accepts again (saved as config.yaml)."""
        raw: dict[str, Any] = {"name": self.name, "recipe": self.recipe,
                               "task": {"name": self.task.name, **_plain(self.task.options)}}
        if self.teacher:
            raw["teacher"] = _model_raw(self.teacher)
        if self.teachers:
            raw["teachers"] = [_model_raw(t) for t in self.teachers]
        if self.assistants:  # only when used: configs without a chain keep their run ids
            from experiments.assistants import assistant_raw

            raw["assistants"] = [assistant_raw(a) for a in self.assistants]
        raw["student"] = _model_raw(self.student)
        raw["distill"] = _plain(self.distill)
        raw["compress"] = [{"step": s.step, **_plain(s.params)} for s in self.compress]
        default = {k: v for k, v in to_dict(ExportSection("-")).items() if k != "backend"}
        raw["export"] = [e.backend if {k: v for k, v in to_dict(e).items() if k != "backend"} == default
                         else to_dict(e) for e in self.export]
        raw["bench"] = _plain(self.bench) if self.bench else None
        raw["seeds"] = list(self.seeds)
        if self.controls:  # only when on: configs without it keep their run ids
            raw["controls"] = True
        if self.share_student:  # likewise
            raw["share_student"] = True
        if self.sweep:
            raw["sweep"] = _plain(self.sweep)
        if self.search:
            raw["search"] = _plain(self.search)
        return raw


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


def _plain(obj: Any) -> Any:
    return to_dict(obj) if obj is not None else {}


def _model_raw(m: ModelSection) -> dict:
    raw = {"name": m.name, "init": m.init, "options": dict(m.options), "tokenizer": _plain(m.tokenizer)}
    if m.train is not None:
        raw["finetune"] = m.finetune
        raw["train"] = _plain(m.train)
    if m.tasks:  # only for a multi-task teacher: other teachers keep their keys
        raw["tasks"] = copy.deepcopy(m.tasks)
        if m.task_mixing:
            raw["task_mixing"] = dict(m.task_mixing)
    return raw


# ----------------------------------------------------------------------------------------------
# loading


#: bounds of what a config may expand to: a YAML "alias bomb" (anchors referencing anchors) is a few
#: lines that expand to billions of nodes, so the composed graph is measured before anything is built
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_ALIASES = 1_000


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a composed YAML graph whose expansion (aliases copied out) is too large or cyclic."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            active.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            if sizes[nid] > MAX_YAML_NODES:
                raise ConfigError(f"{where}:{node.start_mark.line + 1}: config expands to more than "
                                  f"{MAX_YAML_NODES:,} values (YAML aliases repeating aliases?); write it out")
            continue
        if nid in sizes:
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"{where}:{node.start_mark.line + 1}: more than {MAX_YAML_ALIASES:,} YAML "
                                  "alias uses; write the values out")
            continue
        if nid in active:
            raise ConfigError(f"{where}:{node.start_mark.line + 1}: recursive YAML alias (a value contains itself)")
        active.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node))


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with bounded size and alias expansion (``ConfigError`` naming ``where``)."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters is more than a config may have "
                          f"({MAX_YAML_BYTES:,})")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is more than a config may have "
                          f"({MAX_YAML_BYTES:,})")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read, override and validate a config file; errors name ``file:line: key.path``."""
    raw = load_yaml(path)
    raw = apply_overrides(raw, overrides)
    try:
        cfg = resolve(raw)
    except ConfigError as exc:
        raise ConfigError(_locate(path, str(exc))) from None
    cfg.source = str(path)
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. teacher.init=scratch)")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key segment")
    try:
        parsed = safe_yaml(value, f"--set {key}") if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return _split_key(key), parsed


def _split_key(key: str) -> list[str]:
    # "distill.losses[0].weight" and "distill.losses.0.weight" are the same path
    return [p for p in re.split(r"\.|\[(\d+)\]", key) if p]


def apply_overrides(raw: dict, overrides: list[str] | dict) -> dict:
    """Return a copy of ``raw`` with ``--set`` style overrides (``["a.b=1"]`` or ``{"a.b": 1}``) applied."""
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = _split_key(key) if isinstance(key, str) else key
        set_path(raw, parts, value)
    return raw


def set_path(raw: dict, parts: list[str], value: Any) -> None:
    node: Any = raw
    where = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where.append(part)
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{'.'.join(where)}: no list item {part} (the list has {len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{'.'.join(where[:-1])}: is a value ({node!r}), cannot set {part!r} in it")


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings merge recursively, other values replace.
    Keys with dots (``distill.epochs: 3``) address nested keys."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        parts = _split_key(str(key))
        if len(parts) > 1:
            set_path(out, parts, copy.deepcopy(value))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    from experiments.multitask import check_task_listed

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
    from experiments.assistants import assistant_sections
    from experiments.search import search_section

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
    from distill.registry import get_registry

    return get_registry(kind)


def _checked_name(name: Any, path: str, kind: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{path}: expected a registered {kind[:-1]} name, got {name!r}")
    try:
        return _registry(kind).canonical(name)
    except RegistryError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _require_mapping(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    if "name" not in value:
        raise ConfigError(f"{path}.name: required key is missing")
    return dict(value)


def task_options_class(task_name: str):
    cls = _registry("tasks").get(task_name)
    opts = getattr(cls, "Options", None)
    if opts is None or not dataclasses.is_dataclass(opts):
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
        from experiments.multitask import check_teacher_tasks

        check_teacher_tasks(section, path)
        train = dict(train or {})
        train.setdefault("losses", [{"type": "hard_ce", "weight": 1.0}])
        section.train = _distill_config(train, f"{path}.train")
        if _uses_teacher(section.train):
            raise ConfigError(f"{path}.train.losses: teacher fine-tuning uses hard-label losses only "
                              f"(found {[loss.type for loss in section.train.losses]})")
    return section


def distill_config_class():
    from distill.config import DistillConfig

    return DistillConfig


def _distill_config(value: Any, path: str):
    # every loss entry is checked against its own loss's parameter class there (distill.config.LossConfig)
    return from_dict(distill_config_class(), value, path)


def _uses_teacher(cfg: Any) -> bool:
    """True when a DistillConfig has a KD loss whose weight is not 0 throughout (needs teacher outputs)."""
    from distill.losses import uses_teacher

    return uses_teacher(getattr(cfg, "losses", []) or [])


def uses_teacher(cfg: ExperimentConfig) -> bool:
    return _uses_teacher(cfg.distill)


def step_params_class(step: str):
    entry = _registry("steps").entry(step)
    cls = entry.meta.get("params") or getattr(entry.obj, "Params", None)
    return cls if cls is not None and dataclasses.is_dataclass(cls) else None


def _compress_section(value: Any) -> list[StepSection]:
    if not isinstance(value, list):
        raise ConfigError(f"compress: expected a list of steps, got {value!r}")
    out = []
    for i, item in enumerate(value):
        path = f"compress[{i}]"
        if not isinstance(item, dict) or "step" not in item:
            raise ConfigError(f"{path}: expected a mapping with a 'step' key, got {item!r}")
        data = dict(item)
        name = _checked_name(data.pop("step"), f"{path}.step", "steps")
        cls = step_params_class(name)
        params = from_dict(cls, data, path) if cls else data
        if cls:
            _check_step_params(params, path)
        out.append(StepSection(step=name, params=params))
    return out


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
        from distill.config import LossConfig

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


def _names_list(value: Any, path: str, kind: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of {kind} names, got {value!r}")
    return [_checked_name(v, f"{path}[{i}]", kind) for i, v in enumerate(value)]


# ----------------------------------------------------------------------------------------------
# hashing, saving, error locations


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


#: distill settings that change how fast or how visibly a run trains, not its result
EXECUTION_KEYS = ("threads", "progress", "log_every", "teacher_cache", "cache_dir")


def config_hash(raw: dict, *, drop: tuple[str, ...] = ("seeds", "sweep", "name", "recipe"),
                seedless: bool = False) -> str:
    """Stable hash of what determines a run's results (the resolved config without labels and seeds).
    ``seedless``: also ignore the training seeds (``distill.seed``, ``teacher.train.seed``)."""
    body = loss_identity(copy.deepcopy({k: v for k, v in raw.items() if k not in drop}))
    # how a run executes, not what it computes: not part of its identity (a resumed or moved run keeps its id)
    for section in [body.get("distill")] + [t.get("train") for t in
                                             ([body.get("teacher")] + list(body.get("teachers") or [])) if t]:
        if isinstance(section, dict):
            for key in EXECUTION_KEYS:
                section.pop(key, None)
    if seedless:
        for section in [body.get("distill")] + [t.get("train") for t in
                                                 ([body.get("teacher")] + list(body.get("teachers") or [])) if t]:
            if isinstance(section, dict):
                section.pop("seed", None)
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:12]


_CHECKSUMS: dict[tuple, str] = {}
#: options of a task that name its own files (``tsv_classification``), read relative to ``data_dir``
_PATH_OPTIONS = ("train", "dev", "test")


def _file_checksum(path: Path) -> str:
    """SHA-256 of a file's content, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CHECKSUMS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                h.update(chunk)
        _CHECKSUMS[key] = f"sha256:{h.hexdigest()}"
    return _CHECKSUMS[key]


def data_fingerprint(task: TaskSection) -> dict[str, str]:
    """What a run reads, by content: ``{file: checksum}`` for the task's data files.

    Content checksums, not paths, so the same data in another directory gives the same run id and
    different data under the same path a different one.  A data set that is not on disk yet (it will be
    downloaded and verified) is fingerprinted by its official checksums, which the download must match.
    """
    from tasks.datasets import DATASETS, get_dataset, resolve_data_dir

    options = task.options
    data_dir = getattr(options, "data_dir", None)
    out: dict[str, str] = {}
    dataset = getattr(_registry("tasks").get(task.name), "dataset", None)
    if dataset:
        ds = get_dataset(dataset)
        try:
            folder = resolve_data_dir(ds.name, data_dir, download=False)
        except FileNotFoundError:
            folder = None
        for name in ds.required:
            out[f"{ds.name}/{name}"] = (_file_checksum(folder / name) if folder is not None
                                        else DATASETS[ds.name].files.get(name, "missing"))
    for key in _PATH_OPTIONS:
        value = getattr(options, key, None)
        if isinstance(value, str):
            path = Path(value).expanduser()
            if not path.is_absolute() and data_dir:
                path = Path(data_dir) / path
            out[f"task.{key}"] = _file_checksum(path) if path.is_file() else f"missing:{value}"
    return out


def teacher_hash(cfg: ExperimentConfig, teacher: ModelSection, seed: int) -> str:
    """Key of a teacher fine-tuning run: same task + teacher section + seed -> same teacher."""
    body = {"task": cfg.to_raw()["task"], "teacher": _model_raw(teacher), "seed": seed}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:12]


def dump_yaml(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)


def _locate(path: str | Path, message: str) -> str:
    """Prefix ``file:line`` for the key path a ConfigError message starts with."""
    key = message.split(":", 1)[0].strip()
    line = _key_line(path, key) if key and " " not in key else None
    return f"{path}:{line}: {message}" if line else f"{path}: {message}"


def _key_line(path: str | Path, key: str) -> int | None:
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in _split_key(key):
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return found[0] if found else None
