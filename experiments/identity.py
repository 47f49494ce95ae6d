"""What identifies a run, a teacher or any shared model: content hashes of the resolved config and of the data.

``run_hash(cfg, data)`` hashes a single-run ``ExperimentConfig`` (``ExperimentConfig.for_run``) through its
canonical mapping (``to_raw``, the form saved as config.yaml) without its labels, seeds, execution settings and
machine paths, plus the content fingerprint of the data files.  The run ids of an existing result store are
keyed by these hashes: any change to what they cover renames every run, so tests pin shipped configs' ids.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinydistill.experiments.config_sections import TaskSection


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


#: distill settings that change how fast or how visibly a run trains, not its result
EXECUTION_KEYS = ("threads", "progress", "log_every", "teacher_cache", "cache_dir")


def config_hash(raw: dict, *, drop: tuple[str, ...] = ("seeds", "sweep", "name", "recipe"),
                seedless: bool = False) -> str:
    """Stable hash of what determines a run's results (the resolved config without labels and seeds).
    ``seedless``: also ignore the training seeds (``distill.seed``, ``teacher.train.seed``)."""
    from tinydistill.distill.config import loss_identity

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
    from tinydistill.tasks.datasets import DATASETS, get_dataset, resolve_data_dir

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


def _registry(kind: str):
    from tinydistill.distill.registry import get_registry

    return get_registry(kind)


def hash_view(raw: dict, data: dict) -> dict:
    """What identifies results: the raw config without the (machine-specific) data directory, plus the
    content fingerprint of the data files (``data_fingerprint``)."""
    from tinydistill.experiments.protocol import hash_task

    task = hash_task({k: v for k, v in raw["task"].items() if k != "data_dir"})
    return dict(raw, task=dict(task, data_fingerprint=data))


def run_hash(cfg, data: dict, seedless: bool = False) -> str:
    """Hash of a single-run config ``cfg`` (an ``ExperimentConfig``) on data with fingerprint ``data``;
    ``seedless``: the same whatever the seed (the runs a report row aggregates)."""
    return config_hash(hash_view(cfg.to_raw(), data), seedless=seedless)


def short_name(name: str) -> str:
    return name.replace("ernie-3.0-tiny-", "").replace("-v2-zh", "").replace("-zh", "")
