"""Probes of ``tinydistill search``: a candidate's size and latency before any training.

Its student is built untrained (scratch weights of the same architecture and vocabulary), its compression chain
runs through ``compress.pipeline`` with one training step per training step and no accuracy checks, and its
exports are made unchecked.  Size and latency do not depend on the weights, so a candidate whose untrained model
already exceeds a budget need never be trained.  Probes are stored under ``<out>/<name>/_search/probe/`` and
reused (a tighter or looser budget re-decides from them).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Optional

from tinydistill.distill.fsutil import read_json, write_json
from tinydistill.distill.logs import progress
from tinydistill.experiments.search import SEARCH_DIR, STATIC_BUDGETS, Candidate, over_budget


def probe_params(params: Any) -> Any:
    """A step's parameters (dataclass) for a probe: one training step, a handful of examples, no checks."""
    if not dataclasses.is_dataclass(params):
        return params
    changes = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if f.name in ("epochs", "max_steps") and v is not None:
            v = 1
        elif f.name in ("importance_examples", "calibration_examples") and v is not None:
            v = min(int(v), 16)
        elif f.name == "tolerance":
            v = 1e9
        else:
            v = probe_params(v)  # width_prune's recovery training
        changes[f.name] = v
    if "epochs" in changes and "max_steps" in changes and changes["max_steps"] is None:
        changes["max_steps"] = 1
    return dataclasses.replace(params, **changes)


class Prober:
    """Builds, compresses and measures untrained candidates (one process, data and tokenizers loaded once)."""

    def __init__(self, grid_cfg, out: Path, data_dir: Optional[str], runs: int, log=progress):
        self.grid_cfg, self.out, self.data_dir, self.runs, self.log = grid_cfg, out, data_dir, runs, log
        self.dir = out / grid_cfg.name / SEARCH_DIR / "probe"

    def file(self, c: Candidate) -> Path:
        return self.dir / f"{c.runners[0].run_id.rsplit('-', 2)[0]}-{c.runners[0].group_hash[:8]}.json"

    def probe(self, c: Candidate, budget: dict[str, float], slack: float) -> dict:
        """Size first, latency only when the size is within budget; cached in ``file(c)``."""
        f = self.file(c)
        probe = read_json(f) if f.is_file() else {}
        timed = bool(set(budget) - set(STATIC_BUDGETS))
        if "size_mb" in probe and (not timed or "latency_p50_ms" in probe
                                   or over_budget(probe, budget, slack, STATIC_BUDGETS)):
            return probe
        work = self.dir / f.stem
        try:
            model_dir = self._build(c, work)
            probe = {**probe, **self._static(c, model_dir)}
            if timed and not over_budget(probe, budget, slack, STATIC_BUDGETS):
                probe.update(self._latency(c, model_dir))
            write_json(f, probe)
        finally:  # the probe's numbers are kept, its model is not (a looser budget builds it again)
            shutil.rmtree(work, ignore_errors=True)
        return probe

    def _build(self, c: Candidate, work: Path) -> Path:
        """The candidate's final model directory, untrained: scratch student, compression chain, exports."""
        from tinydistill.compress.export import export
        from tinydistill.compress.pipeline import Pipeline, Step
        from tinydistill.compress.steps import StepContext
        from tinydistill.distill.runtime import seed_everything
        from tinydistill.teachers.base import build_model, save_model_dir

        runner = c.runners[0]
        cfg, s = runner.cfg, runner.cfg.student
        shutil.rmtree(work, ignore_errors=True)
        tok = (runner.tokenizer_for(cfg.all_teachers[0], "teacher") if s.tokenizer.from_teacher
               else runner.tokenizer_for(s, "student"))
        seed_everything(runner.seed)
        model = build_model("student", s.name, runner.task.heads(), init="scratch", vocab_size=tok.vocab_size,
                            **s.options)
        save_model_dir(work / "student", model, tok, task=runner.task)
        ctx = StepContext(data_dir=cfg.task.options.data_dir, seed=runner.seed, max_train_examples=64,
                          max_dev_examples=32, latency_runs=1, log=lambda m: None)
        pipe = Pipeline([Step(st.step, probe_params(st.params)) for st in cfg.compress], work / "student", work)
        pipe.run_all(ctx)
        current = pipe.last_dir()
        for e in cfg.export:
            target = work / f"export-{e.backend}"
            export(current, e.backend, target, check=False, data_dir=cfg.task.options.data_dir)
            current = target
        return Path(current)

    def _static(self, c: Candidate, model_dir: Path) -> dict:
        from tinydistill.compress.common import deploy_size_bytes

        manifest = read_json(model_dir / "manifest.json") if (model_dir / "manifest.json").is_file() else {}
        n = manifest.get("num_parameters")
        return {"candidate": c.name, "size_mb": round(deploy_size_bytes(model_dir) / 1e6, 4),
                **({"num_parameters": n} if isinstance(n, int) else {})}

    def _latency(self, c: Candidate, model_dir: Path) -> dict:
        from tinydistill.compress.bench import measure

        b = c.runners[0].cfg.bench
        r = measure(str(model_dir), None, b.batch_size, b.seq_len, b.threads, self.runs, min(b.warmup, 5), [])
        return {"latency_p50_ms": r["e2e_ms"]["p50"], "latency_p90_ms": r["e2e_ms"]["p90"],
                "model_latency_p50_ms": r["model_ms"]["p50"], "latency_runs": self.runs}
