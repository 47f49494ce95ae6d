"""The result store: one JSON record per finished run, safe under concurrent writers.

Layout: ``<store>/<run-id>.json``, each written atomically (temp file + rename in the same directory),
so any number of processes (parallel sweep workers, several sweeps at once) can write into one store
without a lock: a reader sees a record completely or not at all, and two runs never share a file.
A record holds the run's identity (name, recipe, task, teacher, student, seed, config hash, resolved
config), provenance (git commit, package versions, host) and results (every metric as
``{"value", "unit"}``, durations per stage in seconds).

Work that must happen once across every process and machine sharing the store (training a shared teacher,
running one run) is guarded by ``ResultStore.lock(name)``: a ``StoreLock`` file in ``<store>/.locks/`` that a
crashed holder does not keep (see ``StoreLock`` for the stale-holder rule).
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import threading
import time
import uuid
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from tinydistill.distill.fsutil import read_json, write_json
from tinydistill.distill.logs import get_logger

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


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere): one seed and one thread are
    bit-for-bit repeatable on one CPU model, not across models, so a record says which one it ran on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": package_versions(),
            "python": platform.python_version(), "host": platform.node(), "cpu_count": os.cpu_count(),
            "cpu": cpu_model()}


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

    def lock(self, name: str, **kwargs) -> "StoreLock":
        """``with store.lock("teacher-<key>"):`` one holder at a time over every machine sharing the store
        (``<store>/.locks/<name>.lock``; see ``StoreLock``)."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid lock name {name!r}")
        return StoreLock(self.path / LOCKS_DIRNAME / f"{name}.lock", **kwargs)

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
                get_logger(__name__).warning("warning: skipping damaged result record %s", message)
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


# ----------------------------------------------------------------------------------------------
# locks: mutual exclusion between processes on any machines that share the store's file system

LOCKS_DIRNAME = ".locks"
STALE_ENV, HEARTBEAT_ENV = "TINYDISTILL_LOCK_STALE_S", "TINYDISTILL_LOCK_HEARTBEAT_S"


def _host() -> str:
    """This host as a lock holder: host name plus pid namespace (containers sharing a host name, e.g.
    ``--network host``, have their own pids)."""
    try:
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


class StoreLock:
    """An exclusive lock file that other machines see and that a crashed holder does not keep.

    ``fcntl.flock`` is not used: on network file systems it is either local to one client or
    unsupported (Lustre without ``-o flock``, s3fs/gcsfuse, some SMB mounts), which is where a sweep
    spread over machines keeps its store.  Instead the holder creates the file with ``link()`` (atomic
    with complete content, also on NFS), writes ``{token, pid, host, start, since}`` into it and touches
    it every ``heartbeat`` seconds from a daemon thread.  A waiter takes the lock over when its holder is
    gone: on the same host, the pid no longer runs (or is a different process: its start time differs);
    on any host, no heartbeat for ``stale_after`` seconds, measured on the file system's clock (a file
    the waiter touches there), so clocks of different machines need not agree.  Breaking a stale lock
    is itself serialised by ``<lock>.break`` and re-checked under it, so two waiters never remove a
    lock that a third has just taken.  A holder that is merely slow keeps heartbeating and is never
    broken; a suspended one (SIGSTOP, a frozen VM) for longer than ``stale_after`` is, and warns when it
    wakes up (``lost``).
    """

    def __init__(self, path: str | os.PathLike, stale_after: float | None = None, heartbeat: float | None = None,
                 poll: float = 0.5, timeout: float | None = None, log=None):
        self.path = Path(path)
        self.stale_after = float(stale_after if stale_after is not None else os.environ.get(STALE_ENV, 120))
        self.heartbeat = float(heartbeat if heartbeat is not None
                               else os.environ.get(HEARTBEAT_ENV, max(0.05, min(10.0, self.stale_after / 6))))
        self.poll, self.timeout, self.log = poll, timeout, log or (lambda message: None)
        self.token: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- identity and staleness ---------------------------------------------------------------
    @staticmethod
    def _start_time(pid: int) -> str | None:
        """Start time of ``pid`` (clock ticks since boot; Linux), None if unknown or not running."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has finished

    def _holder(self) -> tuple[dict | None, float] | None:
        """(holder info or None if unreadable, mtime) of the lock file; None when there is none."""
        try:
            mtime = self.path.stat().st_mtime
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None, mtime
        return (info if isinstance(info, dict) else None), mtime

    def _fs_now(self) -> float:
        probe = self.path.parent / f".clock-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        probe.touch()
        os.utime(probe, None)  # NULL times: the file server's clock on NFS
        now = probe.stat().st_mtime
        probe.unlink(missing_ok=True)
        return now

    def stale_reason(self, info: dict | None, mtime: float) -> str | None:
        """Why the lock held by ``info`` (last touched at ``mtime``) is stale, or None if it is not."""
        if info and info.get("host") == _host() and isinstance(info.get("pid"), int):
            pid = info["pid"]
            if Path("/proc").is_dir():  # Linux: also tells a reused pid (other start time) and a zombie
                start = self._start_time(pid)
                if start is None or (info.get("start") and start != info["start"]):
                    return f"pid {pid} on this host has exited"
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return f"pid {pid} on this host has exited"
                except PermissionError:
                    pass
        age = self._fs_now() - mtime
        if age > self.stale_after:
            return f"no heartbeat for {age:.0f}s (> {self.stale_after:g}s)"
        return None

    @staticmethod
    def describe(info: dict | None) -> str:
        if not info:
            return "an unknown holder"
        host = str(info.get("host")).split("/")[0]
        return f"pid {info.get('pid')} on {host} since {time.strftime('%H:%M:%S', time.localtime(info.get('since', 0)))}"

    # -- acquire / release --------------------------------------------------------------------
    def _try_create(self) -> bool:
        token = uuid.uuid4().hex
        info = {"token": token, "pid": os.getpid(), "host": _host(),
                "start": self._start_time(os.getpid()), "since": time.time()}
        tmp = self.path.parent / f".{self.path.name}.{token}.tmp"
        tmp.write_text(json.dumps(info), encoding="utf-8")
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # NFS may report a failed link() that did happen: the link count tells
            if tmp.stat().st_nlink != 2:
                return False
        finally:
            tmp.unlink(missing_ok=True)
        self.token = token
        return True

    def _break(self, info: dict | None, mtime: float, reason: str) -> bool:
        """Remove the stale lock (re-checked under ``<lock>.break``); False when another waiter holds the guard."""
        guard = self.path.with_name(self.path.name + ".break")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another waiter is breaking it; a guard left by a crashed one expires
            try:
                if self._fs_now() - guard.stat().st_mtime > self.stale_after:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        try:
            now = self._holder()
            if now is not None and now[0] == info and now[1] == mtime and self.stale_reason(*now):
                self.path.unlink(missing_ok=True)
                self.log(f"lock {self.path.name}: took over from {self.describe(info)}: {reason}")
        finally:
            guard.unlink(missing_ok=True)
        return True

    def acquire(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        waiting_for, delay, started = None, self.poll, time.monotonic()
        while not self._try_create():
            holder = self._holder()
            if holder is None:
                continue
            info, mtime = holder
            reason = self.stale_reason(info, mtime)
            if reason:
                if not self._break(info, mtime, reason):
                    time.sleep(self.poll)
                continue
            if waiting_for != (info or {}).get("token"):
                waiting_for, delay = (info or {}).get("token"), self.poll
                self.log(f"lock {self.path.name}: waiting for {self.describe(info)}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: still held by {self.describe(info)} after {self.timeout:g}s")
            # after 30 s, back off to one look every 5 s: a teacher may train for hours, and on NFS each look is
            # a few metadata operations on the server
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            if time.monotonic() - started > 30:
                delay = min(delay * 1.5, max(self.poll, 5.0))
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            holder = self._holder()
            if holder is None or (holder[0] or {}).get("token") != self.token:
                self.lost = True
                self.log(f"lock {self.path.name}: WARNING: lost (taken over after a missed heartbeat)")
                return
            try:
                os.utime(self.path, None)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = self._holder()
        if holder is not None and (holder[0] or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
