"""``tinydistill search CONFIG --budget latency_ms=1.0 [--budget size_mb=5 ...]``: a recipe search over the
accuracy / latency trade-off.

```yaml
search:
  students: [ernie-3.0-tiny-nano-v2-zh, {name: ernie-3.0-tiny-pico-v2-zh, label: pico}]   # as sweep.students
  widths: [1.0, 0.75, 0.5]         # width_prune (1.0: no step)
  vocab_sizes: [null, 6000, 3000]  # vocab_prune (null: no step)
  quantize:                        # name -> steps after pruning, or {steps: [...], export: [...]}
    fp32: {steps: [], export: [onnx]}
    int8: {steps: [{step: embedding_int8}], export: [onnx-int8]}
  width_prune: {recover: {epochs: 1}}   # extra parameters of every width_prune / vocab_prune step
  budget: {latency_ms: 1.0}        # defaults; --budget NAME=VALUE wins
  slack: 0.0                       # prune when an untrained latency exceeds budget x (1 + slack)
```

The space is students x widths x vocabulary sizes x quantisations; each candidate is a sweep cell (recipe
``<quantize>-w<width>-v<vocab>``, chain ``vocab_prune -> width_prune -> quantisation steps -> exports``), run by
``experiments.sweep.run_sweep`` into the experiment's result store, so finished candidates are skipped and an
interrupted search continues (``--resume`` is implied, as for sweeps).  The candidates of one student share its
training (``share_student``, ``experiments.shared_student``): each student is trained once per seed.

Cheapest signals first.  Before any training, every candidate is *probed*: its student is built untrained
(scratch weights of the same architecture and vocabulary), its compression chain is run with one training
step per training step and no accuracy checks, and the result is measured: the size on disk first (nothing to
run), then the latency (in this process, ``bench`` settings, ``probe_runs`` timed runs).  Size and latency do
not depend on the weights, so a candidate whose untrained model already exceeds a budget is pruned there and
never trained.  Probes (experiments/search_probe.py) are stored under ``<out>/<name>/_search/probe/`` and
reused (a tighter or looser budget re-decides from them).  The survivors are trained and benchmarked as any run (``bench`` stage, a fresh process
per model); the report (``experiments.search_report``) checks the budgets again on those measurements.
"""
from __future__ import annotations

import argparse
import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tinydistill.distill.fsutil import read_json
from tinydistill.distill.logs import progress
from tinydistill.distill.schema import ConfigError, from_dict

#: --budget NAME -> the metric of a model variant it bounds (``<variant>.<metric>``)
BUDGETS = {"latency_ms": "latency_p50_ms", "latency_p90_ms": "latency_p90_ms",
           "model_latency_ms": "model_latency_p50_ms", "size_mb": "size_mb", "params": "num_parameters"}
#: what a probe can know without running the model: checked before latency is measured
STATIC_BUDGETS = ("size_mb", "params")
SEARCH_DIR = "_search"


@dataclass
class SearchSection:
    """The declared space of ``tinydistill search`` (module docstring)."""

    students: list[Any] = field(default_factory=list)
    widths: list[float] = field(default_factory=lambda: [1.0])
    vocab_sizes: list[Optional[int]] = field(default_factory=lambda: [None])
    quantize: dict[str, Any] = field(default_factory=lambda: {"fp32": []})
    width_prune: dict[str, Any] = field(default_factory=dict)
    vocab_prune: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)
    slack: float = 0.0
    probe_runs: int = 30

    def validate(self) -> None:
        if not self.students:
            raise ValueError("students must name at least one student")
        if not self.widths or any(not 0.0 < w <= 1.0 for w in self.widths):
            raise ValueError(f"widths must be fractions in (0, 1], got {self.widths}")
        if not self.vocab_sizes or any(v is not None and v < 10 for v in self.vocab_sizes):
            raise ValueError(f"vocab_sizes must be null or >= 10, got {self.vocab_sizes}")
        if not self.quantize:
            raise ValueError("quantize must name at least one quantisation (e.g. {fp32: []})")
        if self.slack < 0:
            raise ValueError(f"slack must be >= 0, got {self.slack}")
        if self.probe_runs < 1:
            raise ValueError(f"probe_runs must be >= 1, got {self.probe_runs}")
        check_budget(self.budget, "budget")


def check_budget(budget: dict, where: str) -> dict[str, float]:
    from tinydistill.experiments.config_yaml import closest

    for name, limit in budget.items():
        if name not in BUDGETS:
            close = closest(str(name), list(BUDGETS))
            raise ConfigError(f"{where}.{name}: unknown budget{f'; did you mean {close!r}?' if close else ''} "
                              f"(valid: {', '.join(BUDGETS)})")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
            raise ConfigError(f"{where}.{name}: expected a number > 0, got {limit!r}")
    return {k: float(v) for k, v in budget.items()}


def search_section(value: Any) -> SearchSection:
    """Validated ``search:`` section (called by ``experiments.config.resolve``)."""
    section = from_dict(SearchSection, value, "search")
    for name, q in section.quantize.items():
        _quantize_entry(q, f"search.quantize.{name}")
    for i, s in enumerate(section.students):
        if not isinstance(s, (str, dict)) or (isinstance(s, dict) and "name" not in s):
            raise ConfigError(f"search.students[{i}]: expected a student name or a section with 'name', got {s!r}")
    return section


def _quantize_entry(q: Any, path: str) -> tuple[list, Optional[list]]:
    """``[steps]`` or ``{steps: [...], export: [...]}`` -> (steps, exports or None for the config's)."""
    if q is None:
        return [], None
    if isinstance(q, list):
        return q, None
    if isinstance(q, dict) and set(q) <= {"steps", "export"}:
        return list(q.get("steps") or []), (list(q["export"]) if q.get("export") is not None else None)
    raise ConfigError(f"{path}: expected a list of compression steps or {{steps: [...], export: [...]}}, got {q!r}")


# ----------------------------------------------------------------------------------------------
# the space as a sweep


@dataclass
class Candidate:
    """One point of the space: a student and a compression recipe, run once per seed."""

    index: int
    student_label: str
    student: dict
    width: float
    vocab: Optional[int]
    quantize: str
    recipe: str
    cells: list[int] = field(default_factory=list)  # indices into the sweep grid, one per seed
    runners: list = field(default_factory=list)
    probe: dict = field(default_factory=dict)
    status: str = "todo"  # pruned | trained | failed | todo
    reason: str = ""
    result: dict = field(default_factory=dict)  # the trained runs' final model (search_report)
    within: Optional[bool] = None
    over_after: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.student_label}/{self.recipe}"


def recipe_name(quantize: str, width: float, vocab: Optional[int]) -> str:
    return f"{quantize}-w{width:g}-v{vocab if vocab else 'all'}"


def _student_labels(students: list) -> list[tuple[str, dict]]:
    from tinydistill.experiments.identity import short_name

    out = []
    for s in students:
        s = {"name": s} if isinstance(s, str) else dict(s)
        out.append((str(s.pop("label", "")) or short_name(s["name"]), s))
    names = [label for label, _ in out]
    return [(label if names.count(label) == 1 else f"{label}#{i}", s) for i, (label, s) in enumerate(out)]


def grid_config(cfg):
    """``cfg`` with its search space written as a sweep (students x recipes) -> (sweep config, candidates)."""
    import dataclasses

    from tinydistill.experiments.config_sections import BenchSection, SweepSection

    space: SearchSection = cfg.search
    if cfg.sweep is not None:
        raise ConfigError("sweep: a search runs its own grid (search.students x widths x vocab_sizes x quantize); "
                          "leave 'sweep' out")
    if cfg.compress:
        raise ConfigError("compress: a search builds each candidate's compression from search.widths, "
                          "search.vocab_sizes and search.quantize; leave 'compress' out")
    students = _student_labels(space.students)
    recipes: dict[str, dict] = {}
    settings = []
    for q_name, vocab, width in itertools.product(space.quantize, space.vocab_sizes, space.widths):
        steps, exports = _quantize_entry(space.quantize[q_name], f"search.quantize.{q_name}")
        chain = []
        if vocab:
            chain.append({"step": "vocab_prune", **space.vocab_prune, "max_vocab_size": vocab})
        if width < 1.0:
            chain.append({"step": "width_prune", **copy.deepcopy(space.width_prune), "width": width})
        chain += copy.deepcopy(steps)
        name = recipe_name(q_name, width, vocab)
        recipes[name] = {"compress": chain, **({"export": exports} if exports is not None else {})}
        settings.append((name, width, vocab, q_name))
    # the candidates of one student differ after its training: train it once (share_student)
    grid_cfg = dataclasses.replace(cfg, search=None, share_student=True, bench=cfg.bench or BenchSection(),
                                   sweep=SweepSection(students=[s for _, s in students], recipes=recipes))
    candidates = [Candidate(len(settings) * si + ri, label, s, width, vocab, q, name)
                  for si, (label, s) in enumerate(students) for ri, (name, width, vocab, q) in enumerate(settings)]
    n_seeds = len(cfg.seeds)
    for c in candidates:  # expand() walks students, then recipes, then seeds
        c.cells = [c.index * n_seeds + k for k in range(n_seeds)]
    return grid_cfg, candidates


# ----------------------------------------------------------------------------------------------
# budgets


def over_budget(metrics: dict, budget: dict[str, float], slack: float = 0.0,
                only: tuple[str, ...] | None = None) -> list[str]:
    """The budgets ``metrics`` (``{metric: value}``) exceeds, as ``"latency_ms 1.31 > 1"``; ``slack`` loosens the
    measured (timed) budgets only: a size or a parameter count is exact."""
    out = []
    for name, limit in budget.items():
        v = metrics.get(BUDGETS[name])
        tol = 0.0 if name in STATIC_BUDGETS else slack
        if (only is None or name in only) and v is not None and v > limit * (1 + tol):
            out.append(f"{name} {v:.3g} > {limit:g}")
    return out


# ----------------------------------------------------------------------------------------------
# running


def run_search(cfg, budget: dict[str, float], out: str | Path = "runs", jobs: int = 1, data_dir: str | None = None,
               probe_only: bool = False, log=progress) -> dict:
    """Probe every candidate, prune those over ``budget``, train the rest (a sweep), write the report."""
    from tinydistill.experiments.runner import Runner
    from tinydistill.experiments.search_probe import Prober
    from tinydistill.experiments.search_report import write_search_report
    from tinydistill.experiments.sweep import expand, run_sweep

    out = Path(out)
    grid_cfg, candidates = grid_config(cfg)
    grid = expand(grid_cfg)
    for c in candidates:
        c.runners = [Runner(grid[k].config, grid[k].seed, out_root=str(out), data_dir=data_dir, resume=True)
                     for k in c.cells]
        if any(grid[k].labels["recipe"] != c.recipe for k in c.cells):  # expand() changed its order
            raise RuntimeError(f"search: the sweep grid does not match the candidates at {c.name}")
    budget_text = ", ".join(f"{k} <= {v:g}" for k, v in budget.items()) or "none"
    log(f"search {cfg.name}: {len(candidates)} candidates x {len(cfg.seeds)} seed(s), budget {budget_text}")
    prober = Prober(grid_cfg, out, data_dir, cfg.search.probe_runs, log=log)
    for c in candidates:
        if all(r.finished() for r in c.runners):
            c.probe = read_json(prober.file(c)) if prober.file(c).is_file() else {}
            c.status = "trained"
            continue
        try:
            c.probe = prober.probe(c, budget, cfg.search.slack)
        except (ConfigError, FileNotFoundError):  # the config or the data: the same for every candidate
            raise
        except Exception as exc:  # noqa: BLE001 - one candidate that cannot be built must not stop the search
            c.status, c.reason = "failed", f"probe: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            log(f"  probe {c.name}: FAILED ({c.reason})")
            continue
        over = over_budget(c.probe, budget, cfg.search.slack)
        if over:
            c.status, c.reason = "pruned", "untrained: " + ", ".join(over)
        shown = ", ".join(f"{k} {c.probe[k]:.3g}" for k in ("size_mb", "latency_p50_ms") if k in c.probe)
        log(f"  probe {c.name}: {shown}{' -> pruned (' + c.reason + ')' if c.status == 'pruned' else ''}")
    # the cheapest survivors first (untrained latency, else size): an interrupted search has them finished
    order = sorted((c for c in candidates if c.status == "todo"),
                   key=lambda c: (c.probe.get("latency_p50_ms", float("inf")), c.probe.get("size_mb", float("inf"))))
    todo = [k for c in order for k in c.cells]
    log(f"search {cfg.name}: {sum(c.status == 'pruned' for c in candidates)} pruned before training, "
        f"{sum(c.status == 'todo' for c in candidates)} to train, {sum(c.status == 'trained' for c in candidates)} "
        "finished earlier")
    failed: set[str] = set()
    if todo and not probe_only:
        result = run_sweep(grid_cfg, str(out), jobs=jobs, data_dir=data_dir, log=log, cells=todo)
        failed = set(result["failed"])
    for c in candidates:
        if c.status == "todo" and not probe_only:
            c.status = "failed" if any(r.run_id in failed for r in c.runners) else "trained"
    return write_search_report(grid_cfg, candidates, budget, out / cfg.name, slack=cfg.search.slack)


def parse_budgets(items: list[str]) -> dict[str, float]:
    """``["latency_ms=1.0", "size_mb=5"]`` -> ``{"latency_ms": 1.0, "size_mb": 5.0}`` (``--budget``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = str(item).partition("=")
        try:
            out[name.strip()] = float(text) if sep else None
        except ValueError:
            out[name.strip()] = text
        if not sep:
            raise ConfigError(f"--budget {item!r}: expected NAME=VALUE (e.g. latency_ms=1.0); names: "
                              f"{', '.join(BUDGETS)}")
    return check_budget(out, "--budget")


def cli_search(args: argparse.Namespace) -> int:
    from tinydistill.experiments.config import load_config
    from tinydistill.experiments.runner import test_file_override

    budget_cli = parse_budgets(args.budget)
    cfg = load_config(args.config, test_file_override(args))
    if cfg.search is None:
        raise ConfigError(f"{args.config}: no 'search' section (the space to search: students, widths, "
                          "vocab_sizes, quantize)")
    budget = {**check_budget(dict(cfg.search.budget), "search.budget"), **budget_cli}
    if not budget:
        raise ConfigError("--budget: no budget given (e.g. --budget latency_ms=1.0) and the config's "
                          "search.budget is empty")
    written = run_search(cfg, budget, out=args.out, jobs=args.jobs, data_dir=args.data_dir,
                         probe_only=args.probe_only)
    print(Path(written["md"]).read_text(encoding="utf-8"))
    for path in written.values():
        print(f"wrote {path}")
    return 0
