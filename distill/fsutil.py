"""Atomic file writes and small JSON helpers shared by every stage.

Everything the pipeline writes (checkpoints, manifests, metrics, results) goes through these helpers:
the content is written to a temporary file in the same directory and renamed over the target, so a
killed process leaves either the old file or the new one, never half of one.  Content is fsynced
before the rename (a crash after it cannot leave an empty file under the final name), and what lands
gets the usual permissions (0644 / 0755 under the process umask; ``mkstemp`` alone gives 0600, which
would make a shared result store unreadable to others).
"""
from __future__ import annotations

import json
import os
# shutil and tempfile are imported where they are used: a deployed predictor process reads manifests through
# this module and writes nothing (compress/ort_capi.py, lean_process: the lean process's imports)
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


#: name pattern of the temporaries below (``.<name>.<random>.tmp``): what ``clean_stale_temporaries`` removes
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_tree(root: Path) -> None:
    """fsync every file under ``root`` (and the directories) and give them 0644 / 0755 under the umask."""
    mask = _umask()
    for dirpath, _, files in os.walk(root):
        for name in files:
            f = Path(dirpath) / name
            if not f.is_symlink():
                _fsync(f)
                os.chmod(f, (f.stat().st_mode | 0o644) & ~mask & 0o7777)
        os.chmod(dirpath, 0o777 & ~mask)
        _fsync(Path(dirpath))


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is fsynced, made 0644 (under the umask) and
    renamed onto ``target``."""
    target = Path(target)
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
        _fsync(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it onto ``target`` when complete.

    An existing ``target`` is replaced only after the new one is fully written.
    """
    target = Path(target)
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        yield tmp
        _finish_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_stale_temporaries(root: str | os.PathLike, max_depth: int = 2) -> list[Path]:
    """Remove the temporaries (``.*.tmp`` files and directories) a killed writer left under ``root``, down
    to ``max_depth`` levels.  Only call it while holding the lock of whatever writes under ``root``."""
    import shutil

    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    level = [root]
    for _ in range(max_depth + 1):
        below = []
        for folder in level:
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    removed.append(p)
                elif p.is_dir() and not p.is_symlink():
                    below.append(p)
        level = below
    return removed


def dir_size_bytes(path: str | os.PathLike) -> int:
    """Total size on disk of the files under ``path`` (a file's own size if ``path`` is a file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def link_atomically(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target`` (a run directory's view of a shared stage), replacing an
    older link in one rename so a reader never sees it missing."""
    link, rel = Path(link), os.path.relpath(target, Path(link).parent)
    if link.is_symlink() and os.readlink(link) == rel:
        return
    tmp = link.parent / f".{link.name}.link"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(rel)
    os.replace(tmp, link)


def cache_dir(name: str) -> Path:
    """``$TINYDISTILL_CACHE/<name>`` (``~`` expanded), by default ``~/.cache/tinydistill/<name>``: the one root
    of every on-disk cache (``data`` for downloads, ``teacher_logits`` for teacher outputs)."""
    base = os.environ.get("TINYDISTILL_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "tinydistill") / name
