"""Run a list of compression steps, each on the previous one's output.

    run_steps("runs/x/student", [{"step": "vocab_prune", "max_vocab_size": 6000},
                                  {"step": "width_prune", "width": 0.75},
                                  {"step": "qat", "epochs": 1}, {"step": "embedding_int8"}],
              "runs/x/compressed", StepContext(data_dir=...))

writes ``compressed/<i>-<step>/`` (a model directory with ``report.json``) for every step and returns the
reports.  A step that does not apply to the model (``NotApplicable``) passes the model through unchanged and
its report says why (``applied: false``).  Parameters are checked strictly before anything runs.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from compress import STEPS
from compress.steps import NotApplicable, StepContext, step_params


def parse_steps(steps: list[dict], path: str = "compress") -> list[tuple[str, object]]:
    """``[{step: name, **params}]`` -> ``[(name, params dataclass)]``; ConfigError naming the bad key."""
    from distill.schema import ConfigError

    out = []
    for i, item in enumerate(steps):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or "step" not in item:
            raise ConfigError(f"{where}: expected a mapping with a 'step' key, got {item!r}")
        params = {k: v for k, v in item.items() if k != "step"}
        try:
            name = STEPS.canonical(item["step"])
        except KeyError as exc:
            raise ConfigError(f"{where}.step: {exc}") from None
        out.append((name, step_params(name, params, where)))
    return out


def run_steps(model_dir, steps: list[dict], out_root, ctx: StepContext | None = None, first: int = 1) -> list[dict]:
    """Run ``steps`` in order; step ``i`` writes ``out_root/<first + i>-<step>/``."""
    from distill.fsutil import write_json

    ctx = ctx or StepContext()
    parsed = parse_steps(steps)
    out_root = Path(out_root)
    current, reports = Path(model_dir), []
    for i, (name, params) in enumerate(parsed, first):
        out_dir = out_root / f"{i}-{name}"
        start = time.time()
        ctx.log(f"[compress] step {i} {name}: {current} -> {out_dir}")
        try:
            report = STEPS.get(name)(current, out_dir, params, ctx)
        except NotApplicable as exc:
            ctx.log(f"[compress] step {name} does not apply: {exc}; passing the model through unchanged")
            if out_dir.exists():
                shutil.rmtree(out_dir)
            shutil.copytree(current, out_dir, ignore=shutil.ignore_patterns("report.json"))
            report = {"step": name, "applied": False, "reason": str(exc), "in_dir": str(current),
                      "out_dir": str(out_dir), "seconds": round(time.time() - start, 2)}
            write_json(out_dir / "report.json", report)
        reports.append(report)
        current = out_dir
    return reports
