"""Schedules for loss weights and temperatures (``ScheduleConfig``): a value as a function of progress.

``SCHEDULES`` maps a schedule type to ``f(base, end, step, total_steps) -> value``; adding one is one
decorated function.
"""
from __future__ import annotations

from tinydistill.distill.config import ScheduleConfig
from tinydistill.distill.registry import Registry

SCHEDULES = Registry("schedule")


@SCHEDULES.register("constant", summary="the base value at every step")
def _constant(base: float, end: float | None, step: int, total: int) -> float:
    return base


@SCHEDULES.register("linear", summary="from the base value at step 0 to 'end' at the last step")
def _linear(base: float, end: float | None, step: int, total: int) -> float:
    frac = min(max(step / max(total - 1, 1), 0.0), 1.0)
    return base + (end - base) * frac


def scheduled(base: float, schedule: ScheduleConfig, step: int, total_steps: int) -> float:
    """Value of a scheduled quantity at 0-based ``step`` of ``total_steps`` (linear: base at step 0,
    ``schedule.end`` at the last step)."""
    return SCHEDULES.get(schedule.type)(base, schedule.end, step, total_steps)
