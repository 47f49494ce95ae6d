"""What the stages of a run share (experiments/runner.py, teachers, assistants, multi-task teachers): resumable
training with a readable error for a damaged checkpoint, scratch space inside the run directory, and the facts
recorded for every model directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from tinydistill.distill.fsutil import read_json
from tinydistill.distill.schema import ConfigError

TMP_DIR = ".tmp"  # scratch space of the running stage (tempfile.tempdir)


class CheckpointError(RuntimeError):
    """A stage's checkpoint cannot be read back (damaged, e.g. written by a tool outside the atomic path)."""


def resumable(stage_dir: Path, stage: str, train: Callable[[], Any]) -> Any:
    """``train()``; a failure while it reads the checkpoint back becomes one line naming what to delete."""
    try:
        return train()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - paddle and pickle raise many types for a truncated file
        tb = exc.__traceback__
        while tb is not None and "load_checkpoint" not in tb.tb_frame.f_code.co_name:  # the engine's reader
            tb = tb.tb_next
        if tb is None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{stage_dir / 'checkpoint'}: damaged checkpoint, cannot resume ({first}); delete "
                              f"{stage_dir} to restart the {stage} stage") from None


class TemporariesInside:
    """Point ``tempfile`` (and subprocesses, via ``TMPDIR``) at ``<run dir>/.tmp`` while a stage runs, so a
    killed stage leaves its scratch files in the run directory, where the next run removes them."""

    def __init__(self, run_dir: Path, stage: str = ""):
        self.dir, self.where = run_dir / TMP_DIR, f"{run_dir} (stage {stage})"

    def __enter__(self):
        import tempfile

        self.dir.mkdir(parents=True, exist_ok=True)
        self._saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
        tempfile.tempdir = str(self.dir)
        os.environ["TMPDIR"] = str(self.dir)

    def __exit__(self, kind, exc, tb):
        import errno
        import shutil
        import tempfile

        tempfile.tempdir, tmpdir = self._saved
        if tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = tmpdir
        shutil.rmtree(self.dir, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            # paddle.save and friends report a full disk without the file: name the stage that was writing
            raise OSError(exc.errno, exc.strerror, self.where) from exc
        return False


def size_mb(model_dir: Path) -> float:
    """MB on disk of what a deployment of ``model_dir`` needs (0 when it is missing)."""
    from tinydistill.compress.common import deploy_size_bytes

    return round((deploy_size_bytes(model_dir) if model_dir.exists() else 0) / 1e6, 4)


def num_parameters(model_dir: Path) -> dict:
    """``{"num_parameters": n}`` from the model directory's manifest (empty when it does not say)."""
    f = model_dir / "manifest.json"
    n = read_json(f).get("num_parameters") if f.is_file() else None
    return {"num_parameters": n} if isinstance(n, int) else {}


def model_facts(model_dir: Path) -> dict:
    """The size and parameter count every stage records for a model directory it produced."""
    return {"size_mb": size_mb(model_dir), **num_parameters(model_dir)}
