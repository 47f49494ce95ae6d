"""The result store: one JSON record per finished run, safe under concurrent writers.

Layout: ``<store>/<run-id>.json``, each written atomically (temp file + rename in the same directory),
so any number of processes (parallel sweep workers, several sweeps at once) can write into one store
without a lock: a reader sees a record completely or not at all, and two runs never share a file.
A record holds the run's identity (name, recipe, task, teacher, student, seed, config hash, resolved
config), provenance (git commit, package versions, host) and results (every metric as
``{"value", "unit"}``, durations per stage in seconds).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from distill.fsutil import read_json, write_json

RECORD_VERSION = 1
PACKAGES = ("paddlepaddle", "paddlenlp", "paddleslim", "paddle2onnx", "onnxruntime", "numpy", "tinydistill")
STORE_DIRNAME = "_store"


def store_dir(runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / STORE_DIRNAME


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the source tree this code runs from (``+dirty`` when it has local changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": package_versions(),
            "python": platform.python_version(), "host": platform.node(), "cpu_count": os.cpu_count()}


class ResultStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _file(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        return self.path / f"{run_id}.json"

    def put(self, record: dict) -> Path:
        """Write (or replace) the record of ``record['run_id']`` atomically."""
        record = {"record_version": RECORD_VERSION, "stored_at": time.time(), **record}
        target = self._file(record["run_id"])
        write_json(target, record)
        return target

    def get(self, run_id: str) -> dict | None:
        f = self._file(run_id)
        return read_json(f) if f.is_file() else None

    def has(self, run_id: str) -> bool:
        return self._file(run_id).is_file()

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records())

    def records(self, damaged: list[str] | None = None) -> list[dict]:
        """All records, sorted by run id.  A damaged file (truncated, not JSON, not a record) is skipped
        with a warning naming it, and its message appended to ``damaged`` when a list is given: one bad
        file must not hide every other run."""
        if not self.path.is_dir():
            return []
        out = []
        for f in sorted(self.path.glob("*.json")):
            if f.name.startswith("."):
                continue
            try:
                rec = read_json(f)
                if not isinstance(rec, dict) or "run_id" not in rec:
                    raise ValueError(f"{f}: not a result record")
            except (ValueError, UnicodeDecodeError) as exc:
                message = str(exc) if str(f) in str(exc) else f"{f}: {exc}"
                logging.getLogger(__name__).warning("warning: skipping damaged result record %s", message)
                if damaged is not None:
                    damaged.append(message)
                continue
            out.append(rec)
        return out


def metric(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit}


# unit by metric-name suffix (first match wins); task metrics are percentages by contract
_UNITS = (
    ("_bytes", "bytes"), ("size_mb", "MB"), ("_mb", "MB"), ("_ms", "ms"), ("_s", "s"), ("seconds", "s"),
    ("per_s", "1/s"), ("params", "count"), ("num_parameters", "count"), ("_count", "count"), ("steps", "count"),
    ("epoch", "count"), ("ratio", "ratio"), ("speedup", "ratio"), ("loss", "nats"), ("_mib", "MiB"),
)


_PERCENT_WORDS = ("accuracy", "acc", "f1", "precision", "recall", "exact", "agreement")


def guess_unit(key: str) -> str:
    k = key.lower()
    if "throughput" in k or k.endswith("per_s") or k.endswith("_qps"):
        return "1/s"
    for suffix, unit in _UNITS:
        if k.endswith(suffix):
            return unit
    if any(w in k for w in _PERCENT_WORDS):
        return "%"
    return "1"  # dimensionless


def flatten_metrics(prefix: str, values: Any, units: dict[str, str] | None = None) -> dict[str, dict]:
    """``{"dev": {"accuracy": 91.0}}`` -> ``{"<prefix>.dev.accuracy": {"value": 91.0, "unit": "%"}}``.

    Values already shaped ``{"value", "unit"}`` are kept; non-numeric leaves are dropped.
    """
    units = units or {}
    out: dict[str, dict] = {}

    def walk(key: str, v: Any) -> None:
        if isinstance(v, dict) and "value" in v and "unit" in v:
            out[key] = {"value": v["value"], "unit": v["unit"]}
        elif isinstance(v, dict):
            for k, sub in v.items():
                walk(f"{key}.{k}" if key else str(k), sub)
        elif isinstance(v, bool):
            return
        elif isinstance(v, (int, float)):
            leaf = key.rsplit(".", 1)[-1]
            out[key] = {"value": v, "unit": units.get(leaf) or guess_unit(leaf)}

    walk(prefix, values)
    return out


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, indent=2)
