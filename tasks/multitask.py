"""Several tasks as one: the adapter a multi-task teacher is fine-tuned with (one shared encoder, one set of
heads per task).

Heads are the sub-tasks' heads named ``<task>__<head>`` (``nlpcc2018_slu__intent``, ``chnsenticorp__label``), so
tasks whose heads share a name (``label``) stay apart.  Every example carries its task (``meta["task"]``) and
only that task's labels; the engine's batches fill the other heads with ``IGNORE_INDEX``, so each example trains
its own task's heads and the shared encoder.  Training batches mix the tasks: ``mixing: proportional`` keeps
every task's examples as they are (each task in proportion to its size); ``mixing: temperature`` resamples them
so task *t* makes up a share proportional to ``n_t ** (1 / temperature)`` of the same total (temperature 1:
proportional; larger: closer to uniform, small tasks repeated, large ones subsampled), deterministically in
``seed``.  Metrics are every sub-task's, prefixed with its name (``chnsenticorp.accuracy``), and their mean main
metric ``mean_main``, by which the best checkpoint is chosen.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

from tinydistill.distill.records import field, record, replace
from tinydistill.distill.schema import ConfigError
from tinydistill.tasks import TASKS
from tinydistill.tasks.base import Encoded, Example, HeadSpec, Task, TaskOptions

SEP = "__"


@record
class MultiTaskOptions(TaskOptions):
    #: the sub-tasks: ``{name: <task>, ...that task's options}`` each
    tasks: list[Any] = field(default_factory=list)
    mixing: Literal["proportional", "temperature"] = "proportional"
    temperature: float = 2.0
    seed: int = 42

    def validate(self) -> None:
        super().validate()
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@TASKS.register("multitask", summary="several tasks on one encoder, one set of heads per task (multi-task teachers)")
class MultiTask(Task):
    name = "multitask"
    main_metric = "mean_main"
    Options = MultiTaskOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.tasks: dict[str, Task] = {}
        for i, spec in enumerate(self.options.tasks):
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"task.tasks[{i}]: expected a mapping with 'name', got {spec!r}")
            spec = dict(spec)
            if spec.get("data_dir") is None:  # a task without its own folder reads the multi-task one
                spec["data_dir"] = self.options.data_dir
            name = TASKS.canonical(spec.pop("name"))
            if name in self.tasks or name == self.name:
                raise ConfigError(f"task.tasks[{i}]: {name!r} is listed twice or is not a single task")
            self.tasks[name] = TASKS.get(name)(**spec)

    @staticmethod
    def describe(name: str = "") -> str:
        return "heads <task>__<head> of every sub-task; options tasks, mixing (proportional|temperature)"

    def use_heads(self, heads: Sequence[dict]) -> None:
        """Each sub-task takes its own heads' label lists from a joint model directory's manifest."""
        for t, task in self.tasks.items():
            task.use_heads([dict(h, name=h["name"][len(t) + len(SEP):]) for h in heads
                            if h["name"].startswith(f"{t}{SEP}")])

    def task_of(self, head: str) -> tuple[str, str]:
        task, _, own = head.partition(SEP)
        return task, own

    # -- data ---------------------------------------------------------------------------------
    def heads(self) -> list[HeadSpec]:
        return [HeadSpec(f"{t}{SEP}{h.name}", h.kind, h.labels) for t, task in self.tasks.items() for h in task.heads()]

    def _tagged(self, t: str, rows: Sequence[Example]) -> list[Example]:
        return [replace(ex, meta={**ex.meta, "task": t}) for ex in rows]

    def load(self, split: str) -> list[Example]:
        per_task = {t: self._tagged(t, task.load(split)) for t, task in self.tasks.items()}
        if split == "train" and self.options.mixing == "temperature":
            per_task = self._resample(per_task)
        return [ex for rows in per_task.values() for ex in rows]

    def _resample(self, per_task: dict[str, list[Example]]) -> dict[str, list[Example]]:
        total = sum(len(rows) for rows in per_task.values())
        weights = {t: len(rows) ** (1.0 / self.options.temperature) for t, rows in per_task.items() if rows}
        norm = sum(weights.values())
        import random  # here: only temperature mixing samples (a predictor process never does)

        rng = random.Random(self.options.seed)
        out = {}
        for t, rows in per_task.items():
            if not rows:
                out[t] = rows
                continue
            want = max(1, round(total * weights[t] / norm))
            picked = []
            while len(picked) + len(rows) <= want:  # whole passes first, then a seeded sample of the rest
                picked += rows
            picked += rng.sample(rows, want - len(picked))
            out[t] = picked
        return out

    def texts(self, split: str = "train") -> list[str]:
        return [text for task in self.tasks.values() for text in task.texts(split)]

    def load_file(self, path: str) -> list[Example]:
        raise ConfigError(f"{path}: a multi-task model reads a file per task: evaluate it with --task NAME")

    def split_info(self) -> dict:
        return {t: task.split_info() for t, task in self.tasks.items()}

    # -- encoding, metrics, decoding ----------------------------------------------------------
    def encode(self, example: Example, tokenizer) -> Encoded:
        t = example.meta.get("task") or next(iter(self.tasks))
        enc = self.tasks[t].encode(example, tokenizer)
        labels = {f"{t}{SEP}{k}": v for k, v in enc.labels.items()} if example.meta.get("task") else {}
        return replace(enc, labels=labels)

    def _rows(self, t: str, encoded: Sequence[Encoded]) -> list[int]:
        prefix = f"{t}{SEP}"
        return [i for i, e in enumerate(encoded) if any(k.startswith(prefix) for k in e.labels)]

    def compute_metrics(self, logits: dict, encoded: Sequence[Encoded]) -> dict[str, float]:
        out, mains = {}, []
        for t, task in self.tasks.items():
            rows = self._rows(t, encoded)
            if not rows:
                continue
            own = {h.name: logits[f"{t}{SEP}{h.name}"][rows] for h in task.heads()}
            enc = [replace(encoded[i], labels={self.task_of(k)[1]: v for k, v in encoded[i].labels.items()})
                   for i in rows]
            metrics = task.compute_metrics(own, enc)
            out.update({f"{t}.{k}": float(v) for k, v in metrics.items()})
            mains.append(float(metrics[task.main_metric]))
        if mains:
            out["mean_main"] = sum(mains) / len(mains)
        return out

    def decode(self, example: Example, logits: dict, encoded: Encoded) -> dict:
        """Every task's reading of the example (``{task: that task's decoded output}``)."""
        return {t: task.decode(example, {h.name: logits[f"{t}{SEP}{h.name}"] for h in task.heads()}, encoded)
                for t, task in self.tasks.items()}
