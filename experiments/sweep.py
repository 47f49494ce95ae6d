"""``tinydistill sweep``: the grid a config declares (teachers x students x recipes x seeds).

Every grid cell is one run of ``experiments.runner`` with its own run directory and store record.
Teacher fine-tuning is shared: a teacher is keyed by (task section, teacher section, seed), trained
once under ``<out>/<name>/_teachers/`` and linked into every run that uses it, so the students and
recipes of a sweep are compared against the very same teacher.  With ``--jobs N`` the distinct
teachers are trained first (in parallel), then the students; finished runs are skipped, so a sweep can
be re-run after an interruption (or extended with more seeds) and only does the missing work.

Many machines: ``--list-cells`` prints the grid, one cell per line (index, run id, labels, status), and
``--cell K`` / ``--cells K-M`` runs only those cells, so any scheduler (a SLURM job array, Kubernetes
indexed jobs, Ray or Dask tasks) can spread one sweep over machines that share the output directory.
The indices are positions in the grid of that config (and ``--set`` overrides): every worker must be
given the same ones.  Each run holds a lock in the store while it runs and each shared teacher is
trained under its own (``experiments.store.StoreLock``: lock files that survive a crashed holder), so
overlapping selections and re-runs of a killed worker are safe and a teacher is trained once.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydistill.distill.logs import get_logger, progress
from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.config import ExperimentConfig, load_config, resolve
from tinydistill.experiments.config_yaml import deep_merge


@dataclass
class Cell:
    """One grid cell: its config, parsed once from ``raw`` (the base config with the cell's teacher, student
    and recipe merged in), its seed and labels.  ``raw`` is what crosses to a worker process, which parses it
    once on arrival (``_run_cell``)."""

    config: ExperimentConfig
    seed: int
    labels: dict[str, str]
    raw: dict


def _merge_model(base: dict | None, item: Any, path: str, inherit: tuple[str, ...]) -> dict:
    """A grid item (a registry name or a full section) replacing the base section; ``inherit`` keys of
    the base section (e.g. ``init``, ``train``) are kept when the item does not set them."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"{path}: expected a registry name or a mapping with 'name', got {item!r}")
    out = copy.deepcopy(item)
    for key in inherit:
        if base and key in base and key not in out:
            out[key] = copy.deepcopy(base[key])
    return out


def expand(cfg: ExperimentConfig) -> list[Cell]:
    """All cells of ``cfg``'s grid, each validated; without a ``sweep`` section: one cell per seed."""
    raw = cfg.to_raw()
    sweep = raw.pop("sweep", None) or {}
    teachers = sweep.get("teachers") or [None]
    students = sweep.get("students") or [None]
    recipes = sweep.get("recipes") or {cfg.recipe: {}}
    cells = []
    for ti, t in enumerate(teachers):
        for si, s in enumerate(students):
            for recipe, overrides in recipes.items():
                if not isinstance(overrides, dict):
                    raise ConfigError(f"sweep.recipes.{recipe}: expected a mapping of overrides, "
                                      f"got {overrides!r}")
                base = copy.deepcopy(raw)
                if t is not None:
                    base["teacher"] = _merge_model(raw.get("teacher"), t, f"sweep.teachers[{ti}]",
                                                   ("init", "train"))
                if s is not None:
                    base["student"] = _merge_model(raw.get("student"), s, f"sweep.students[{si}]", ("init",))
                try:
                    merged = deep_merge(base, overrides)
                except ConfigError as exc:
                    raise ConfigError(f"sweep.recipes.{recipe}: {exc}") from None
                merged["recipe"] = recipe
                for seed in cfg.seeds:
                    one = dict(merged, seeds=[seed])
                    try:
                        cell_cfg = resolve(one)
                    except ConfigError as exc:
                        raise ConfigError(f"sweep cell (teacher {ti}, student {si}, recipe {recipe!r}): "
                                          f"{exc}") from None
                    cell_cfg.source = cfg.source
                    labels = {"teacher": cell_cfg.teacher.name if cell_cfg.teacher else "-",
                              "student": cell_cfg.student.name, "recipe": recipe}
                    cells.append(Cell(cell_cfg, seed, labels, one))
    return cells


# ----------------------------------------------------------------------------------------------
# execution


def _run_cell(job: tuple[dict, int, str, str | None, str, str]) -> tuple[str, str, str]:
    """Worker: run one cell (or only its teacher stage). Returns (run id, status, message)."""
    raw, seed, out, data_dir, what, source = job
    from tinydistill.experiments.identity import short_name
    from tinydistill.experiments.runner import Runner

    cfg = resolve(raw)
    cfg.source = source
    runner = Runner(cfg, seed, out_root=out, data_dir=data_dir, resume=True,
                    prefix=f"[{short_name(cfg.student.name)}/{cfg.recipe} s{seed}] ")
    try:
        if what == "teacher":
            runner.run_teachers()
            return runner.run_id, "teacher", ""
        status = runner.run()
        return runner.run_id, status, ""
    except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the sweep
        import traceback

        return runner.run_id, "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the sweep that spawned it ends.

    Without it, a sweep stopped by SIGTERM or SIGKILL (a scheduler's timeout, ``kill PID``) leaves its workers
    training on as orphans: they hold the store's locks (a rerun waits on them) and race the rerun for the same
    run directories.  Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``; elsewhere nothing (Ctrl-C still reaches the
    whole process group)."""
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the sweep ended before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _map(jobs: list, n: int):
    """Results of ``_run_cell`` over ``jobs``, in completion order, with up to ``n`` worker processes.

    Workers are spawned (paddle is not fork-safe once imported), one task each, so every run starts from
    a clean process; a worker that dies raises ``BrokenProcessPool`` here instead of hanging the sweep.
    """
    if n <= 1 or len(jobs) <= 1:
        yield from map(_run_cell, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import os

    with ProcessPoolExecutor(max_workers=min(n, len(jobs)), mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        for future in as_completed([pool.submit(_run_cell, job) for job in jobs]):
            yield future.result()


def parse_cells(specs: list[str], n: int) -> list[int]:
    """``["3", "5-7", "0,2"]`` -> sorted distinct cell indices, each checked against the grid size ``n``."""
    chosen: set[int] = set()
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            lo, sep, hi = part.partition("-")
            try:
                first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
            except ValueError:
                raise ConfigError(f"--cell/--cells: expected K, K-M or a comma list of them, got {spec!r}") from None
            if first > last or first < 0 or last >= n:
                raise ConfigError(f"--cell/--cells {part}: the grid has cells 0-{n - 1}")
            chosen.update(range(first, last + 1))
    return sorted(chosen)


def list_cells(cfg: ExperimentConfig, out: str | Path, data_dir: str | None = None) -> list[str]:
    """One line per cell, tab-separated: index, run id, teacher, student, recipe, seed, done|todo."""
    from tinydistill.experiments.runner import Runner

    lines = []
    for k, cell in enumerate(expand(cfg)):
        runner = Runner(cell.config, cell.seed, out_root=str(out), data_dir=data_dir, resume=True)
        lines.append("\t".join([str(k), runner.run_id, cell.labels["teacher"], cell.labels["student"],
                                cell.labels["recipe"], f"seed={cell.seed}",
                                "done" if runner.finished() else "todo"]))
    return lines


def order_teacher_jobs(keyed: list[tuple[set, Any]]) -> list:
    """Teacher jobs in an order that keeps parallel workers busy: first every job that shares no teacher (or
    assistant) key with an earlier first-round job, then the rest.  A chain ``base -> mini`` needs ``base``,
    which another job trains: started alongside it, its worker would only wait on the lock, where a job with
    its own teacher (``micro``) can train meanwhile."""
    first, later, taken = [], [], set()
    for keys, job in keyed:
        if keys & taken:
            later.append(job)
        else:
            first.append(job)
            taken |= keys
    return first + later


def run_sweep(cfg: ExperimentConfig, out: str | Path, jobs: int = 1, data_dir: str | None = None,
              log=progress, cells: list[int] | None = None) -> dict[str, list[str]]:
    """Run every cell of the grid (or only the cells with these indices); returns run ids by status
    (``done``, ``skipped``, ``failed``)."""
    from tinydistill.experiments.runner import Runner

    grid = expand(cfg)
    cells = grid if cells is None else [grid[k] for k in cells]
    out = str(out)
    result: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    pending = []
    for cell in cells:
        runner = Runner(cell.config, cell.seed, out_root=out, data_dir=data_dir, resume=True)
        if runner.finished():
            result["skipped"].append(runner.run_id)
        else:
            pending.append((cell, runner))
    log(f"sweep {cfg.name}: {len(cells)} runs{'' if len(cells) == len(grid) else f' of {len(grid)}'} "
        f"({len(result['skipped'])} already finished, "
        f"{len(pending)} to do), {jobs} job(s), output {Path(out) / cfg.name}")
    # phase 1: every distinct teacher once (keyed by its hash), so students never race to train it
    keyed, seen = [], set()
    for cell, runner in pending:
        keys = runner.teacher_keys()
        if keys and not all(k in seen for k in keys) and not runner.teachers_finished():
            seen.update(keys)
            keyed.append((set(keys), (cell.raw, cell.seed, out, data_dir, "teacher", cfg.source)))
    teacher_jobs = order_teacher_jobs(keyed)
    start = time.time()
    for run_id, status, msg in _map(teacher_jobs, jobs):
        if status == "failed":
            log(f"  teacher for {run_id} FAILED: {msg}")
    # phase 2: students (distill, compress, export, bench, report)
    student_jobs = [(cell.raw, cell.seed, out, data_dir, "run", cfg.source) for cell, _ in pending]
    for i, (run_id, status, msg) in enumerate(_map(student_jobs, jobs), 1):
        # "skipped": finished by another worker since the check above (counted as such, not as done)
        result[status if status in ("failed", "skipped") else "done"].append(run_id)
        log(f"  [{i}/{len(student_jobs)}] {run_id}: {status}{(' - ' + msg.splitlines()[0]) if msg else ''}")
        if msg and status == "failed":
            get_logger(__name__).error("%s", msg)
    log(f"sweep {cfg.name}: {len(result['done'])} done, {len(result['skipped'])} skipped, "
        f"{len(result['failed'])} failed in {time.time() - start:.1f}s")
    return result


def cli_sweep(args: argparse.Namespace) -> int:
    from tinydistill.experiments.runner import test_file_override

    cfg = load_config(args.config, test_file_override(args))
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if getattr(args, "list_cells", False):
        print("\n".join(list_cells(cfg, args.out, data_dir=args.data_dir)))
        return 0
    specs = list(getattr(args, "cell", None) or []) + list(getattr(args, "cells", None) or [])
    cells = parse_cells(specs, len(expand(cfg))) if specs else None
    result = run_sweep(cfg, args.out, jobs=args.jobs, data_dir=args.data_dir, cells=cells)
    progress(f"report: tinydistill report {Path(args.out) / cfg.name} --plots")
    return 1 if result["failed"] else 0
