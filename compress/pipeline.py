"""A chain of compression steps, each on the previous one's output, laid out in one directory.

    pipe = Pipeline(parse_steps([{"step": "vocab_prune", "max_vocab_size": 6000},
                                 {"step": "width_prune", "width": 0.75}, {"step": "qat", "epochs": 1}]),
                    source="runs/x/student/best", root="runs/x")
    pipe.run(0, ctx)   # one step (the runner: one resumable stage per step); pipe.run_all(ctx): all of them

Step ``i`` reads ``pipe.in_dir(i)`` (the source, or the step before it) and writes ``root/compressed/<label>/``, a
model directory with ``report.json``; ``label`` is the step's name, ``<step>-<k>`` for its k-th use in the chain.
The equal-budget control of a training step (compress/controls.py) goes to ``root/controls/<label>/``.  This is
the layout of a run directory (experiments/runner.py), which the result store and the reports name by label.
A step that does not apply to the model (``NotApplicable``) carries the model through unchanged and its report
says why (``applied: false``).  Parameters are checked strictly before anything runs (``parse_steps``).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydistill.compress import STEPS
from tinydistill.compress.steps import NotApplicable, StepContext

COMPRESSED_DIR = "compressed"
CONTROLS_DIR = "controls"


@dataclass(frozen=True)
class Step:
    """One compression step: its registered name and its parameters (the step's params dataclass)."""

    step: str
    params: Any


def parse_steps(steps: list[dict], path: str = "compress") -> list[Step]:
    """``[{step: name, **params}]`` -> ``[Step]``; a ConfigError names the bad key (``compress[0].width``)."""
    from tinydistill.distill.schema import ConfigError, from_dict, registered_name

    if not isinstance(steps, list):
        raise ConfigError(f"{path}: expected a list of steps, got {steps!r}")
    out = []
    for i, item in enumerate(steps):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or "step" not in item:
            raise ConfigError(f"{where}: expected a mapping with a 'step' key, got {item!r}")
        name = registered_name(STEPS, item["step"], f"{where}.step", "step")
        params = {k: v for k, v in item.items() if k != "step"}
        cls = STEPS.entry(name).meta.get("params")
        out.append(Step(name, from_dict(cls, params, where) if cls is not None else params))
    return out


def step_labels(names: list[str]) -> list[str]:
    """Directory (and metric) label of every step of a chain: its name, ``<name>-<k>`` for its k-th use."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def run_step(step: Step, in_dir, out_dir, ctx: StepContext) -> dict:
    """Run ``step`` on ``in_dir`` into ``out_dir``; its report (also ``out_dir/report.json``)."""
    from tinydistill.distill.fsutil import atomic_dir, write_json

    start = time.time()
    try:
        return dict(STEPS.get(step.step)(in_dir, out_dir, step.params, ctx) or {})
    except NotApplicable as exc:
        # carried through unchanged, so later steps and exports chain as configured
        ctx.log(f"[compress] {step.step} does not apply: {exc}; the model is carried through unchanged")
        report = {"step": step.step, "applied": False, "reason": str(exc), "in_dir": str(in_dir),
                  "out_dir": str(out_dir), "seconds": round(time.time() - start, 2)}
        with atomic_dir(Path(out_dir)) as tmp:
            shutil.copytree(in_dir, tmp, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns("report.json"))  # the input's report is not this one
            write_json(Path(tmp) / "report.json", report)
        return report


class Pipeline:
    """The steps of one chain from ``source`` with their directories under ``root`` (module docstring)."""

    def __init__(self, steps: list[Step], source, root):
        self.steps = list(steps)
        self.source, self.root = Path(source), Path(root)
        self.labels = step_labels([s.step for s in self.steps])

    def __len__(self) -> int:
        return len(self.steps)

    def out_dir(self, i: int) -> Path:
        return self.root / COMPRESSED_DIR / self.labels[i]

    def control_dir(self, i: int) -> Path:
        return self.root / CONTROLS_DIR / self.labels[i]

    def in_dir(self, i: int) -> Path:
        return self.out_dir(i - 1) if i > 0 else self.source

    def last_dir(self) -> Path:
        """The chain's final model (the source when there are no steps)."""
        return self.in_dir(len(self.steps))

    def run(self, i: int, ctx: StepContext) -> dict:
        """Step ``i`` (its input must exist: the steps before it ran)."""
        return run_step(self.steps[i], self.in_dir(i), self.out_dir(i), ctx)

    def trains(self, i: int) -> bool:
        """Whether step ``i`` trains, so it has an equal-budget control."""
        from tinydistill.compress.controls import trains

        return trains(self.steps[i].step, self.steps[i].params)

    def run_control(self, i: int, ctx: StepContext, max_steps: int | None = None) -> dict:
        """The equal-budget control of training step ``i`` (compress/controls.py), into ``control_dir(i)``."""
        from tinydistill.compress.controls import run_control

        step = self.steps[i]
        return run_control(step.step, self.in_dir(i), self.control_dir(i), step.params, ctx, max_steps=max_steps)

    def run_all(self, ctx: StepContext | None = None) -> list[dict]:
        ctx = ctx or StepContext()
        reports = []
        for i in range(len(self.steps)):
            ctx.log(f"[compress] step {i + 1} {self.labels[i]}: {self.in_dir(i)} -> {self.out_dir(i)}")
            reports.append(self.run(i, ctx))
        return reports


def run_steps(model_dir, steps: list[dict], root, ctx: StepContext | None = None) -> list[dict]:
    """Run the chain ``steps`` (``[{step: name, **params}]``) from ``model_dir`` into ``root/compressed/``."""
    return Pipeline(parse_steps(steps), model_dir, root).run_all(ctx)
