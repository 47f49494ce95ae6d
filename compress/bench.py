"""``tinydistill bench DIR [DIR ...]``: size, latency, peak RSS and throughput of model directories.

Every directory is measured in its own fresh Python process (``python -m tinydistill.compress.bench --worker ...``), so
the peak RSS is that of a predictor process that loaded only this model on its runtime.  Per directory:

* size on disk of what a deployment needs (``source/`` and ``report.json`` excluded);
* end-to-end latency (tokenise + run + decode) and model-only latency at ``batch_size`` x ``seq_len`` tokens
  with ``threads`` threads: p50/p90 over ``runs`` timed runs after ``warmup`` runs;
* peak RSS (``VmHWM``) of the process after loading and running the model at the benchmark setting (and
  again after the throughput runs);
* throughput (examples/s, end to end) at larger batches.

The first directory is the baseline of the ratio columns; ratios are only comparable on the same runtime,
which the table marks.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class BenchError(RuntimeError):
    """A benchmark worker process failed; the message carries its last line of output (the error)."""


SAMPLE = ("请帮我播放一首周杰伦的稻香然后导航到最近的加油站顺便把空调温度调到二十三度再给妈妈打个电话告诉她"
          "我大概半个小时以后到家今天晚上想吃红烧肉和番茄炒蛋")


def texts_of_length(predictor, seq_len: int, n: int) -> list[str]:
    """``n`` different texts that each encode to exactly ``seq_len`` tokens (or the longest possible)."""
    out = []
    for k in range(n):
        base = SAMPLE[k % len(SAMPLE):] + SAMPLE[: k % len(SAMPLE)]
        best = base[:1]
        for cut in range(1, len(base) + 1):
            enc = predictor.encode(predictor.examples([base[:cut]]))[0]
            if len(enc.input_ids) > seq_len:
                break
            best = base[:cut]
            if len(enc.input_ids) == seq_len:
                break
        out.append(best)
    return out


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics, as ``numpy.percentile`` (written out rather than
    ``statistics``, whose import would count in the worker's peak RSS)."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _percentiles(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50": _quantile(ordered, 0.5), "p90": _quantile(ordered, 0.9), "mean": sum(times) / len(times),
            "runs": len(times)}


def time_ms(fn, runs: int, warmup: int, clock=time.perf_counter) -> dict:
    """Milliseconds per call of ``fn()`` (p50, p90, mean) over ``runs`` timed calls after ``warmup`` untimed
    ones.  ``clock=time.process_time`` measures process CPU time instead, which leaves out the waits for a
    core on a loaded machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = clock()
        fn()
        times.append((clock() - t) * 1000.0)
    return _percentiles(times)


def peak_rss_kib() -> float:
    """Peak resident set size of this process in KiB: ``VmHWM`` (the high-water mark of this process's own
    address space; ``ru_maxrss`` would carry over the parent's peak across fork + exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def load_runtime_library(runtime: str) -> None:
    """Import/load what a runtime needs before any model (its ``preload`` meta; for the memory breakdown)."""
    import importlib

    from tinydistill.compress import RUNTIMES

    module, _, func = RUNTIMES.entry(runtime).meta["preload"].partition(":")
    loaded = importlib.import_module(module)
    if func:
        getattr(loaded, func)()


def rss_split_mib() -> dict:
    """This process's resident memory now, by kind (``/proc/self/status``): ``anon`` (heap, stacks: private to the
    process), ``file`` (mapped files: the code and read-only data of the interpreter, its extension modules and
    libonnxruntime, shared with every process that maps them), ``shmem``.  Read at the end of the timed runs,
    where RSS sits at (or near) its peak."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            for key, name in (("RssAnon:", "anon"), ("RssFile:", "file"), ("RssShmem:", "shmem")):
                if line.startswith(key):
                    out[name] = float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out


def memory_breakdown(marks: list[tuple[str, float]], peak_kib: float) -> dict:
    """MiB per stage from ``(stage, VmRSS KiB after it)`` marks; ``running`` is the peak above the last mark."""
    out, prev = {}, 0.0
    for name, kib in marks:
        out[name] = (kib - prev) / 1024.0
        prev = kib
    out["running"] = max(0.0, peak_kib - prev) / 1024.0
    return out


def measure(model_dir: str, runtime: str | None, batch_size: int, seq_len: int, threads: int, runs: int,
            warmup: int, throughput_batches: list[int]) -> dict:
    """Measure one model directory in this process (the worker side of ``tinydistill bench``)."""
    from tinydistill.compress import RUNTIMES
    from tinydistill.compress.common import deploy_size_bytes, read_manifest, rss_kib, runtime_of
    from tinydistill.compress.predictors import open_predictor

    runtime = runtime_of(read_manifest(model_dir), runtime)
    if RUNTIMES.entry(runtime).meta.get("lean"):
        from tinydistill.compress.ort_capi import lean_process

        lean_process()  # as `tinydistill predict --runtime onnxruntime-c` does
    marks = [("interpreter", rss_kib())]
    load_runtime_library(runtime)
    marks.append(("runtime library", rss_kib()))
    t0 = time.perf_counter()
    predictor = open_predictor(model_dir, runtime=runtime, threads=threads, rss_marks=marks)
    load_s = time.perf_counter() - t0
    texts = texts_of_length(predictor, seq_len, max([batch_size] + throughput_batches))
    batch = texts[:batch_size]
    encoded = predictor.encode(predictor.examples(batch))
    feed = predictor.collate(encoded)
    e2e = time_ms(lambda: predictor.predict(batch, batch_size=batch_size), runs, warmup)
    model = time_ms(lambda: predictor.logits(feed), runs, warmup)
    e2e_cpu = time_ms(lambda: predictor.predict(batch, batch_size=batch_size), runs, 0, clock=time.process_time)
    peak_kib = peak_rss_kib()  # at the benchmark setting; larger throughput batches may raise it further
    split = rss_split_mib()
    throughput = {}
    for b in throughput_batches:
        chunk = texts[:b]
        stats = time_ms(lambda: predictor.predict(chunk, batch_size=b), max(10, runs // 10), 3)
        throughput[str(b)] = b / (stats["p50"] / 1000.0)
    m = predictor.manifest
    return {
        "model_dir": str(model_dir), "runtime": predictor.runtime, "format": m["format"],
        "precision": m.get("precision", "fp32"), "size_bytes": deploy_size_bytes(model_dir),
        "seq_len": max(len(e.input_ids) for e in encoded), "batch_size": batch_size, "threads": threads,
        "load_s": load_s, "e2e_ms": e2e, "model_ms": model, "e2e_cpu_ms": e2e_cpu, "peak_rss_mib": peak_kib / 1024.0,
        "memory_mib": memory_breakdown(marks, peak_kib), "rss_split_mib": split,
        "peak_rss_mib_after_throughput": peak_rss_kib() / 1024.0,
        "throughput_per_s": throughput, "paddle_imported": "paddle" in sys.modules,
        "numpy_imported": "numpy" in sys.modules,
    }


def bench_dirs(model_dirs, runtime=None, batch_size=1, seq_len=16, threads=1, runs=200, warmup=20,
               throughput_batches=(8, 32), log=None, *, backend=None) -> list[dict]:
    """Measure every directory in a fresh subprocess; returns one record per directory.  ``runtime``: one for
    every directory (``backend``: its deprecated old name)."""
    from tinydistill.compress.common import runtime_or_backend

    runtime = runtime_or_backend(runtime, backend)
    import subprocess  # here: the worker process (this module) stays as small as a predictor process

    results = []
    for d in model_dirs:
        cmd = [sys.executable, "-m", "tinydistill.compress.bench", "--worker", str(d), "--runtime", runtime or "",
               "--batch-size", str(batch_size), "--seq-len", str(seq_len), "--threads", str(threads),
               "--runs", str(runs), "--warmup", str(warmup),
               "--throughput-batches", ",".join(str(b) for b in throughput_batches)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if log:
            log(f"[bench] {d}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("BENCH_RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BenchError(f"bench of {d} failed (exit {proc.returncode}): {tail[0]}")
        results.append(json.loads(lines[-1][len("BENCH_RESULT "):]))
    add_ratios(results)
    return results


def add_ratios(results: list[dict]) -> None:
    if not results:
        return
    base = results[0]
    for r in results:
        r["vs_first"] = {
            "same_runtime": r["runtime"] == base["runtime"],
            "size_pct": 100.0 * r["size_bytes"] / base["size_bytes"],
            "e2e_speedup": base["e2e_ms"]["p50"] / r["e2e_ms"]["p50"],
            "model_speedup": base["model_ms"]["p50"] / r["model_ms"]["p50"],
            "rss_reduction_pct": 100.0 * (1 - r["peak_rss_mib"] / base["peak_rss_mib"]),
        }


def format_table(results: list[dict], names: list[str] | None = None) -> str:
    names = names or [_short(r["model_dir"]) for r in results]
    tb = sorted({b for r in results for b in r["throughput_per_s"]}, key=int)
    head = ["model", "runtime", "prec", "size MB", "size %", "e2e p50", "e2e p90", "model p50", "model p90",
            "speed-up", "RSS MiB", "RSS -%"] + [f"thr b{b}/s" for b in tb]
    rows = [head]
    for name, r in zip(names, results):
        v = r["vs_first"]
        mark = "" if v["same_runtime"] else "*"
        rows.append([name, r["runtime"], r["precision"], f"{r['size_bytes'] / 1e6:.2f}", f"{v['size_pct']:.1f}",
                     f"{r['e2e_ms']['p50']:.3f}", f"{r['e2e_ms']['p90']:.3f}", f"{r['model_ms']['p50']:.3f}",
                     f"{r['model_ms']['p90']:.3f}", f"{v['e2e_speedup']:.2f}x{mark}", f"{r['peak_rss_mib']:.1f}",
                     f"{v['rss_reduction_pct']:.1f}{mark}"] +
                    [f"{r['throughput_per_s'].get(b, float('nan')):.0f}" for b in tb])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    r0 = results[0]
    lines.append(f"latency in ms at batch {r0['batch_size']} x {r0['seq_len']} tokens, {r0['threads']} thread(s), "
                 f"{r0['e2e_ms']['runs']} runs; ratios vs the first row (* = different runtime, not comparable)")
    return "\n".join(lines)


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else path


def cli_bench(args) -> int:
    batches = [int(b) for b in str(getattr(args, "throughput_batches", "8,32") or "").split(",") if b.strip()]
    for d in args.model_dirs:
        from tinydistill.compress.common import read_manifest

        read_manifest(d)  # a clear error before any subprocess runs
    from tinydistill.distill.logs import progress

    results = bench_dirs(args.model_dirs, runtime=args.runtime, batch_size=args.batch_size, seq_len=args.seq_len,
                         threads=args.threads, runs=args.runs, warmup=getattr(args, "warmup", 20),
                         throughput_batches=batches, log=progress)
    print(format_table(results))
    if args.json:
        from tinydistill.distill.fsutil import write_json

        write_json(args.json, results)
    return 0


def _worker(argv: list[str]) -> int:
    import argparse
    import functools

    # a fixed help width: argparse's terminal-width lookup imports shutil (bz2, lzma), which a predictor does not
    p = argparse.ArgumentParser(formatter_class=functools.partial(argparse.HelpFormatter, width=100))
    p.add_argument("--worker", required=True)
    p.add_argument("--runtime", default="")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--throughput-batches", default="8,32")
    a = p.parse_args(argv)
    batches = [int(b) for b in a.throughput_batches.split(",") if b.strip()]
    result = measure(a.worker, a.runtime or None, a.batch_size, a.seq_len, a.threads, a.runs, a.warmup, batches)
    print("BENCH_RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
