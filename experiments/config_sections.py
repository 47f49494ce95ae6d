"""The sections of an experiment config as typed objects (``experiments.config.resolve`` builds them, once) and
their canonical mapping (``ExperimentConfig.to_raw``: what config.yaml holds and what run ids hash).  The
schema itself is described in experiments/config.py.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from tinydistill.distill.schema import replace_section, require, to_dict

if TYPE_CHECKING:
    from tinydistill.compress.pipeline import Step


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
class ExperimentConfig:
    name: str
    task: TaskSection
    student: ModelSection
    distill: Any  # distill.config.DistillConfig
    recipe: str = "default"
    teacher: Optional[ModelSection] = None
    teachers: list[ModelSection] = field(default_factory=list)
    compress: list[Step] = field(default_factory=list)  # compress.pipeline.parse_steps
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

    def for_run(self, seed: int, data_dir: str | None = None) -> ExperimentConfig:
        """The config of this config's run with seed ``seed``: every training seed set to it (``distill``, the
        teachers' fine-tuning, the assistants' hops), the grid and search sections dropped, and ``data_dir``
        (the command line's) over ``task.data_dir``."""
        replace = replace_section  # task.options is a record (distill.records), the sections dataclasses

        def seeded(m: ModelSection) -> ModelSection:
            return m if m.train is None else replace(m, train=replace(m.train, seed=seed))

        task = self.task
        if data_dir is not None:
            task = replace(task, options=replace(task.options, data_dir=str(data_dir)))
        return replace(self, task=task, seeds=[seed], sweep=None, search=None,
                       distill=replace(self.distill, seed=seed),
                       teacher=seeded(self.teacher) if self.teacher else None,
                       teachers=[seeded(t) for t in self.teachers],
                       assistants=[a.with_seed(seed) for a in self.assistants])

    def to_raw(self) -> dict:
        """The resolved config as a plain mapping that ``resolve`` accepts again (saved as config.yaml)."""
        raw: dict[str, Any] = {"name": self.name, "recipe": self.recipe,
                               "task": {"name": self.task.name, **_plain(self.task.options)}}
        if self.teacher:
            raw["teacher"] = _model_raw(self.teacher)
        if self.teachers:
            raw["teachers"] = [_model_raw(t) for t in self.teachers]
        if self.assistants:  # only when used: configs without a chain keep their run ids
            from tinydistill.experiments.assistants import assistant_raw

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


