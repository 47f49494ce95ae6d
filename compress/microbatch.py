"""Micro-batching of concurrent requests for the serving process, and the glibc memory settings it runs with.

``Batcher`` is independent of HTTP (``compress/serve.py`` puts it behind its handler): jobs of one or more texts
are queued, inference worker threads merge them into model calls and hand each job its own results back.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time


class Refused(Exception):
    """``Batcher.submit`` would not take the job (queue full, or closing); ``retry`` says whether trying later
    may succeed."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.message, self.retry = message, retry


class _Job:
    __slots__ = ("texts", "done", "result", "error", "abandoned")

    def __init__(self, texts: list[str]):
        self.texts, self.done, self.result, self.error, self.abandoned = texts, threading.Event(), None, None, False


class Batcher:
    """Micro-batching of concurrent requests over ``len(runners)`` inference worker threads.

    ``runners[i](texts) -> results`` is worker i's model call (several workers may share one thread-safe
    predictor).  A worker takes the oldest job and what else is queued, up to ``max_batch`` texts; while a
    request is still being read or parsed (``arriving``) it waits for it, at most ``window_s``.  It never
    waits for requests that have not arrived: with closed-loop clients that are all in the batch already,
    a fixed window would only add its length to every call.  A job larger than ``max_batch`` runs alone
    (the runner chunks it).
    At most ``max_queued`` texts wait; beyond that ``submit`` raises ``Refused`` instead of queueing without end.
    """

    def __init__(self, runners: list, max_batch: int = 32, window_s: float = 0.002, max_queued: int = 1024,
                 housekeeping=None, housekeeping_every: int = 100):
        self.max_batch, self.window_s, self.max_queued = max(1, max_batch), max(0.0, window_s), max_queued
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._arriving = 0  # requests being read or parsed: the only ones worth waiting for
        self.batches = self.batched_texts = 0
        self._housekeeping, self._every, self._since = housekeeping, housekeeping_every, 0
        self._threads = [threading.Thread(target=self._loop, args=(run,), name=f"infer-{i}", daemon=True)
                         for i, run in enumerate(runners)]
        for t in self._threads:
            t.start()

    @property
    def queued_texts(self) -> int:
        return self._queued

    @contextlib.contextmanager
    def arriving(self):
        """Around reading, parsing and submitting one request: while any is in there, a worker with room
        left in its batch waits (up to the window) for it; otherwise it runs at once."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def submit(self, texts: list[str]) -> _Job:
        job = _Job(texts)
        with self._cond:
            if self._closed:
                raise Refused("shutting down", retry=False)
            if self._queued and self._queued + len(texts) > self.max_queued:
                raise Refused(f"overloaded: {self._queued} texts queued", retry=True)
            self._queue.append(job)
            self._queued += len(texts)
            self._cond.notify()
        return job

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch, n = [], 0
            deadline = time.monotonic() + self.window_s
            while True:
                while self._queue and (not batch or n + len(self._queue[0].texts) <= self.max_batch):
                    job = self._queue.popleft()
                    self._queued -= len(job.texts)
                    if not job.abandoned:  # its client gave up (timeout): do not spend the model on it
                        batch.append(job)
                        n += len(job.texts)
                left = deadline - time.monotonic()
                if n >= self.max_batch or self._queue or left <= 0 or self._closed or not self._arriving:
                    return batch
                self._cond.wait(left)

    def _loop(self, run) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._run(run, batch)
                self._since += 1
            if self._housekeeping and self._since >= self._every and not self._queue:  # idle moment
                self._since = 0
                self._housekeeping()

    def _run(self, run, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        try:
            results = run(texts)
            if len(results) != len(texts):
                raise RuntimeError(f"the model returned {len(results)} results for {len(texts)} texts")
        except Exception as exc:  # noqa: BLE001 - answered as 500, the server keeps serving
            if len(batch) > 1:  # find the request that breaks the model; the others still get answers
                for job in batch:
                    self._run(run, [job])
                return
            batch[0].error = exc
            batch[0].done.set()
            return
        self.batches += 1
        self.batched_texts += len(texts)
        start = 0
        for job in batch:
            job.result = results[start:start + len(job.texts)]
            start += len(job.texts)
            job.done.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking new jobs; the workers finish what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``).  A batch's buffers have sizes that vary
    with its texts; the holes they leave in the heap otherwise keep the RSS of a batching server creeping up
    (+1.8 MiB over the second half of 10,000 requests on the FP32 nano model).  Called by an inference worker
    every 100 model calls when nothing is queued (about a millisecond)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(n: int = 1) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``) before any thread starts.  By default glibc gives threads
    their own arenas (up to 8 per core); memory freed by one handler thread and allocated by another then
    fragments them, and the server's RSS crept up without end under load (+3 MiB over 10,000 requests on the
    nano INT8 model, still rising; measured with experiments/benchmarks/bench_serve.py), while with one or
    two arenas it levels off.  The GIL serialises the Python side anyway, so the shared arenas cost nothing
    measurable.  No-op off glibc."""
    libc = _libc()
    # M_ARENA_MAX; and a fixed M_MMAP_THRESHOLD: glibc otherwise raises it after each large free, so the
    # model's activation buffers (ONNX Runtime without its arena) move into the heap and fragment it
    return libc is not None and bool(libc.mallopt(-8, n)) and bool(libc.mallopt(-3, 128 * 1024))
