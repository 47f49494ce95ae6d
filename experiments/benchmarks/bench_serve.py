"""Load test of ``tinydistill serve`` (a script, not a test), against 127.0.0.1 only, bounded in requests and time.

    python experiments/benchmarks/bench_serve.py MODEL_DIR [MODEL_DIR ...] [--requests 10000] [--clients 16] [--rounds 4]
    python experiments/benchmarks/bench_serve.py --build DIR      # first build nano SLU ONNX models in DIR

For each model directory, every server configuration (default: micro-batching on, ``--max-batch 32
--batch-window-ms 2``, and off, ``--max-batch 1``) runs as ``tinydistill serve MODEL_DIR --port 0`` in its own
process; after ``--warmup`` requests each gets ``--requests`` POST /predict requests of one text each from
``--clients`` concurrent clients (threads, one kept-alive connection each; texts from the project's SLU
templates), in ``--rounds`` rounds that alternate between the configurations (so load from other jobs that
drifts during the run falls on all of them alike).  Reported per configuration: errors (any
non-200 answer or failed connection; target 0), throughput, latency p50/p90/p99/max as the client sees it,
the mean texts per model call (from /health), and the server's RSS sampled every 50 ms: after warm-up, peak
(VmHWM), at half of the requests and at the end; "peak growth, 2nd half" is the largest RSS of the whole run
minus the largest of its first half (target: stable, 0), "trend, 2nd half" the least-squares RSS trend over the
second half.  The client threads share the machine with the server,
so throughput is a floor of what the server alone would do.  ``--out FILE`` also writes the table as
markdown with the command, machine, load average and date.

``--build DIR``: ``ernie-3.0-tiny-nano-v2-zh`` (4 layers, hidden 312) with random weights (latency and memory do
not depend on them), vocabulary pruned to the 6,000 most frequent tokens of the NLPCC training text, exported
to ONNX Runtime dynamic INT8 (``onnx-int8``, ``DIR/int8``; export check skipped: random weights have no accuracy
to keep) and to FP32 ONNX (``DIR/fp32-onnx``, checked); both are measured (needs the real data: ``--data-dir``,
default ``../shared/data``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = {"batching on": ["--max-batch", "32", "--batch-window-ms", "2"], "batching off": ["--max-batch", "1"]}


def build_models(out: Path, data_dir: str) -> list[Path]:
    from tinydistill import distill  # noqa: F401 - pins the legacy program format before paddle is imported
    from tinydistill.compress.export import export
    from tinydistill.compress.pipeline import run_steps
    from tinydistill.compress.steps import StepContext
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
    from tinydistill.teachers.base import build_model as build, save_model_dir

    task = build_task("nlpcc2018_slu", max_seq_length=16, data_dir=data_dir)
    tok = ErnieWordPieceTokenizer(Path(data_dir) / "vocab" / "ernie-3.0" / "vocab.txt")
    model = build("student", "ernie-3.0-tiny-nano-v2-zh", task.heads(), init="scratch", vocab_size=tok.vocab_size)
    save_model_dir(out / "fp32", model, tok, task=task)
    ctx = StepContext(data_dir=data_dir, max_dev_examples=200, latency_runs=5, log=lambda m: None)
    pruned = run_steps(out / "fp32", [{"step": "vocab_prune", "max_vocab_size": 6000}], out, ctx)[0]["out_dir"]
    export(pruned, "onnx-int8", out / "int8", check=False, data_dir=data_dir)
    export(pruned, "onnx", out / "fp32-onnx", data_dir=data_dir, max_check_examples=64)
    return [out / "int8", out / "fp32-onnx"]


def texts(n: int = 2000) -> list[str]:
    from tinydistill.experiments.slu_templates import generate

    return [row[1] for session in generate(n, seed=7) for row in session]


class Sampler(threading.Thread):
    """RSS of a process every ``every`` seconds, with the number of requests done at that moment."""

    def __init__(self, pid: int, progress, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.progress, self.every = pid, progress, every
        self.samples: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def status(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((self.progress(), self.status("VmRSS")))
            except (OSError, ValueError):
                return
            self.stop.wait(self.every)


def load(port: int, corpus: list[str], n: int, clients: int, deadline: float, progress: list) -> tuple:
    """``n`` requests from ``clients`` threads (one kept-alive connection each); returns (latencies in ms,
    errors, seconds).  ``progress[0]`` counts the requests sent, for the RSS sampler."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = random.Random(k * 7919 + progress[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if sent[0] >= n or time.monotonic() > deadline:
                    break
                sent[0] += 1
                progress[0] += 1
            body = json.dumps({"texts": [rng.choice(corpus)]}, ensure_ascii=False).encode()
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                ms = (time.perf_counter() - t) * 1000.0
                if r.status != 200 or b'"predictions"' not in payload:
                    with lock:
                        errors.append(f"{r.status} {payload[:200]!r}")
                    continue
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            with lock:
                latencies.append(ms)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class Served:
    """One server configuration in its own process, and what the load rounds measured on it."""

    def __init__(self, model_dir: str, name: str, extra: list[str]):
        self.name, self.extra = name, extra
        cmd = [sys.executable, "-m", "tinydistill.experiments.cli", "serve", model_dir, "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        if "http://127.0.0.1:" not in line:
            raise SystemExit(f"server did not start: {line}{self.proc.stdout.read()}")
        self.port = int(line.rsplit("http://127.0.0.1:", 1)[1].split()[0])
        self.latencies, self.errors, self.seconds, self.progress = [], [], 0.0, [0]
        self.sampler = Sampler(self.proc.pid, lambda: self.progress[0])

    def warm_up(self, corpus, n: int, clients: int) -> None:
        _, self.warmup_errors, _ = load(self.port, corpus, n, clients, time.monotonic() + 120, [0])
        self.rss_start = self.sampler.status("VmRSS")
        self.before = health(self.port)
        self.sampler.start()

    def round(self, corpus, n: int, clients: int, deadline: float) -> None:
        lat, err, sec = load(self.port, corpus, n, clients, deadline, self.progress)
        self.latencies += lat
        self.errors += err
        self.seconds += sec

    def finish(self) -> dict:
        self.sampler.stop.set()
        self.sampler.join()
        after = health(self.port)
        peak = self.sampler.status("VmHWM")
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        lat, samples = self.latencies, self.sampler.samples
        total = max(1, len(lat) + len(self.errors))
        first = [r for done, r in samples if done <= total // 2] or [self.rss_start]
        later = [(done, r) for done, r in samples if done > total // 2]
        second = [r for _, r in later] or first
        # the trend, not the largest sample: RSS moves up and down with the size of each batch
        slope = (statistics.linear_regression([d for d, _ in later], second).slope
                 if len(later) > 2 and len({d for d, _ in later}) > 1 else 0.0)
        tenths = [[r for done, r in samples if total * k // 10 < done <= total * (k + 1) // 10] for k in range(10)]
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [float("nan")] * 99
        calls = after["batches"] - self.before["batches"]
        return {"config": self.name, "server_args": " ".join(self.extra),
                "requests": len(lat) + len(self.errors), "errors": len(self.errors), "error_examples": self.errors[:3],
                "warmup_errors": len(self.warmup_errors), "seconds": self.seconds,
                "throughput_per_s": len(lat) / self.seconds if self.seconds else 0.0,
                "p50_ms": q[49], "p90_ms": q[89], "p99_ms": q[98], "max_ms": max(lat, default=float("nan")),
                "mean_batch": (after["batched_texts"] - self.before["batched_texts"]) / calls if calls else float("nan"),
                "rss_start_mib": self.rss_start, "rss_peak_mib": peak, "rss_half_mib": first[-1],
                "rss_end_mib": second[-1], "rss_trend_2nd_half_mib": slope * (total - total // 2),
                "rss_peak_growth_2nd_half_mib": max(max(second), max(first)) - max(first),
                "rss_samples": len(samples),
                "rss_median_by_tenth_mib": [round(statistics.median(t), 2) if t else None for t in tenths],
                "rss_max_by_tenth_mib": [round(max(t), 2) if t else None for t in tenths]}


def run_model(model_dir: str, configs: dict[str, str], args, corpus: list[str]) -> list[dict]:
    """Every configuration's server up at once; ``--rounds`` rounds of ``requests / rounds`` each, the order of
    the configurations alternating, so drifting load from other jobs falls on all of them alike."""
    servers = []
    try:
        for name, extra in configs.items():
            servers.append(Served(model_dir, name, extra.split()))
        for s in servers:
            s.warm_up(corpus, args.warmup, args.clients)
        deadline = time.monotonic() + args.max_seconds
        per_round = [args.requests // args.rounds + (r < args.requests % args.rounds) for r in range(args.rounds)]
        for r, n in enumerate(per_round):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                s.round(corpus, n, args.clients, deadline)
        return [s.finish() for s in servers]
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.communicate()


def describe(model_dir: str) -> str:
    from tinydistill.compress.common import deploy_size_bytes

    m = json.loads((Path(model_dir) / "manifest.json").read_text(encoding="utf-8"))
    return (f"{m.get('arch') or m.get('kind')} {m.get('precision', 'fp32').upper()} {m['format']}, "
            f"{deploy_size_bytes(model_dir) / 1e6:.1f} MB")


def table(rows: list[dict]) -> str:
    lines = ["| model | server | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | texts/call "
             "| RSS after warm-up | RSS peak | RSS at 50 % | RSS at end | peak growth, 2nd half | trend, 2nd half |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} (`{r['server_args']}`) | {r['requests']:,} | {r['errors']} | "
                     f"{r['throughput_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.1f} | {r['mean_batch']:.2f} | {r['rss_start_mib']:.1f} MiB | "
                     f"{r['rss_peak_mib']:.1f} MiB | {r['rss_half_mib']:.1f} MiB | {r['rss_end_mib']:.1f} MiB | "
                     f"{r['rss_peak_growth_2nd_half_mib']:+.2f} MiB | {r['rss_trend_2nd_half_mib']:+.2f} MiB |")
    return "\n".join(lines)


def machine() -> str:
    from tinydistill.experiments.store import cpu_model
    return f"{cpu_model()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR", help="exported model directories (default: --build's)")
    ap.add_argument("--build", metavar="DIR", help="build the nano SLU INT8 and FP32 ONNX models in DIR first")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests are split into")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop the rounds of a model after this long")
    ap.add_argument("--config", action="append", metavar="LABEL=ARGS",
                    help="a server configuration to measure instead of the defaults, e.g. "
                         "'batching on, 2 workers=--max-batch 32 --workers 2' (repeatable)")
    ap.add_argument("--out", metavar="FILE.md", help="also write the table and the set-up here (and FILE.json)")
    args = ap.parse_args()
    model_dirs = list(args.model_dirs)
    if args.build:
        t = time.time()
        built = [str(d) for d in build_models(Path(args.build), args.data_dir)]
        model_dirs += built
        print(f"[bench_serve] built {', '.join(built)} in {time.time() - t:.0f}s", flush=True)
    if not model_dirs:
        ap.error("give MODEL_DIR or --build DIR")
    corpus = texts()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    configs = dict(c.split("=", 1) for c in args.config) if args.config else {k: " ".join(v) for k, v in CONFIGS.items()}
    for model_dir in model_dirs:
        for row in run_model(model_dir, configs, args, corpus):
            rows.append({"model": describe(model_dir), "model_dir": model_dir, "clients": args.clients, **row})
            print(f"[bench_serve] {rows[-1]['model']}, {row['config']}: {row['requests']} requests, "
                  f"{row['errors']} errors, {row['throughput_per_s']:.0f} req/s", flush=True)
    load_after = os.getloadavg()
    out = table(rows)
    print(out)
    for r in rows:
        print(f"  {r['model']}, {r['config']}: RSS median (max) in each tenth of the requests, MiB: "
              + ", ".join(f"{m} ({x})" for m, x in zip(r["rss_median_by_tenth_mib"], r["rss_max_by_tenth_mib"])))
        for e in r["error_examples"]:
            print(f"  {r['config']}: error: {e}")
    if args.out:
        command = "python experiments/benchmarks/bench_serve.py " + shlex.join(sys.argv[1:])
        from tinydistill.experiments.store import git_commit

        md = ["# `tinydistill serve` under load", "",
              f"Command: `{command}`  ", f"Date: {started}  ", f"Code: {git_commit()}  ", f"Machine: {machine()}  ",
              f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in load_before)}, after: "
              f"{' / '.join(f'{x:.2f}' for x in load_after)} (the machine is shared with other jobs)  ",
              "Models: " + "; ".join(f"`{d}` ({describe(d)})" for d in model_dirs) + ", served on `onnxruntime-c`, "
              "1 intra-op thread, 1 worker (the server's defaults) unless the table says otherwise  ",
              f"Load: {args.clients} concurrent clients (threads of the load script, one kept-alive connection "
              f"each), one text per request, {args.warmup} warm-up requests first, then {args.requests:,} timed; "
              "latency as the client sees it (send to full response).", "", out, "",
              "RSS of the server process, sampled every 50 ms: after warm-up, peak (VmHWM), at half of the "
              "requests, at the end; peak growth, 2nd half = the largest RSS sampled over the whole run minus the "
              "largest over its first half (target 0); trend, 2nd half = the least-squares slope of RSS against "
              "requests over the second half, times its number of requests (RSS moves up and down with each "
              "batch's size, and drops when an idle worker trims the heap between rounds). Median (max) RSS in "
              "each tenth of the requests, MiB:", ""]
        md += [f"- {r['model']}, {r['config']}: "
               + ", ".join(f"{m} ({x})" for m, x in zip(r["rss_median_by_tenth_mib"], r["rss_max_by_tenth_mib"]))
               for r in rows]
        md += ["", "RSS from /proc/PID/status is approximate to a few hundred KiB (the kernel folds per-thread "
               "counters in lazily), which is why VmHWM can read a little below an earlier VmRSS."]
        Path(args.out).write_text("\n".join(md) + "\n", encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"command": command, "date": started,
                                                                   "code": git_commit(),
                                                                   "machine": machine(), "load_before": load_before,
                                                                   "load_after": load_after, "rows": rows},
                                                                  indent=2) + "\n", encoding="utf-8")
        print(f"[bench_serve] wrote {args.out}")
    if any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
