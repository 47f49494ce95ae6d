"""Load test of ``tinydistill serve`` (a script, not a test), against 127.0.0.1 only, bounded in requests and time.

    python experiments/benchmarks/bench_serve.py MODEL_DIR [--requests 10000] [--clients 16] [--max-seconds 300]
    python experiments/benchmarks/bench_serve.py --build DIR      # first build a nano SLU INT8 ONNX model in DIR

For each server configuration (default: micro-batching on, ``--max-batch 32 --batch-window-ms 2``, and off,
``--max-batch 1``) it starts ``tinydistill serve MODEL_DIR --port 0`` in a fresh process, sends ``--warmup``
requests, then ``--requests`` POST /predict requests of one text each from ``--clients`` concurrent clients
(threads, one kept-alive connection each; texts from the project's SLU templates) and reports: errors (any
non-200 answer or failed connection; target 0), throughput, latency p50/p90/p99/max as the client sees it,
the mean texts per model call (from /health), and the server's RSS sampled every 50 ms: after warm-up, peak
(VmHWM), at half of the requests and at the end; "growth, 2nd half" is the largest RSS of the second half
minus the largest of the first (target: stable, ~0).  The client threads share the machine with the server,
so throughput is a floor of what the server alone would do.  ``--out FILE`` also writes the table as
markdown with the command, machine, load average and date.

``--build DIR``: ``ernie-3.0-tiny-nano-v2-zh`` (4 layers, hidden 312) with random weights (latency and memory do
not depend on them), vocabulary pruned to the 6,000 most frequent tokens of the NLPCC training text, exported
to ONNX Runtime dynamic INT8 (``onnx-int8``, export check skipped: random weights have no accuracy to keep);
the model directory is ``DIR/export`` (needs the real data: ``--data-dir``, default ``../shared/data``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = {"batching on": ["--max-batch", "32", "--batch-window-ms", "2"], "batching off": ["--max-batch", "1"]}


def build_model(out: Path, data_dir: str) -> Path:
    import distill  # noqa: F401 - pins the legacy program format before paddle is imported
    from compress import STEPS
    from compress.export import export
    from compress.steps import StepContext
    from tasks import build_task
    from tasks.tokenization import ErnieWordPieceTokenizer
    from teachers.base import build_model as build, save_model_dir

    task = build_task("nlpcc2018_slu", max_seq_length=16, data_dir=data_dir)
    tok = ErnieWordPieceTokenizer(Path(data_dir) / "vocab" / "ernie-3.0" / "vocab.txt")
    model = build("student", "ernie-3.0-tiny-nano-v2-zh", task.heads(), init="scratch", vocab_size=tok.vocab_size)
    save_model_dir(out / "fp32", model, tok, task=task)
    ctx = StepContext(data_dir=data_dir, max_dev_examples=200, latency_runs=5, log=lambda m: None)
    STEPS.get("vocab_prune")(out / "fp32", out / "vocab6000", {"max_vocab_size": 6000}, ctx)
    export(out / "vocab6000", "onnx-int8", out / "export", check=False, data_dir=data_dir)
    return out / "export"


def texts(n: int = 2000) -> list[str]:
    from experiments.slu_templates import generate

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


def load(port: int, corpus: list[str], n: int, clients: int, deadline: float) -> tuple[list[float], list[str], list]:
    """``n`` requests from ``clients`` threads; returns latencies (ms), errors, and a live request counter."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        rng = random.Random(k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if counter[0] >= n or time.monotonic() > deadline:
                    break
                counter[0] += 1
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
    return latencies, errors, (threads, counter)


def run_config(model_dir: str, name: str, extra: list[str], args, corpus: list[str]) -> dict:
    cmd = [sys.executable, "-m", "experiments.cli", "serve", model_dir, "--port", "0", *extra]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        if "http://127.0.0.1:" not in line:
            raise SystemExit(f"server did not start: {line}{server.stdout.read()}")
        port = int(line.rsplit("http://127.0.0.1:", 1)[1].split()[0])
        warm, warm_errors, (threads, _) = load(port, corpus, args.warmup, args.clients, time.monotonic() + 60)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        latencies, errors, (threads, counter) = load(port, corpus, args.requests, args.clients,
                                                     time.monotonic() + args.max_seconds)
        sampler = Sampler(server.pid, lambda: counter[0])
        rss_start = sampler.status("VmRSS")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        before = json.loads(conn.getresponse().read())
        conn.close()
        sampler.start()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        conn.close()  # a new connection: the server drops ones idle for longer than its 30 s timeout
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        health = json.loads(conn.getresponse().read())
        conn.close()
        peak = sampler.status("VmHWM")
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    total = max(1, len(latencies) + len(errors))
    half = total // 2
    first = [r for done, r in sampler.samples if done <= half] or [rss_start]
    second = [r for done, r in sampler.samples if done > half] or first
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [float("nan")] * 99
    texts_run = health["batched_texts"] - before["batched_texts"]
    calls = health["batches"] - before["batches"]
    return {"config": name, "server_args": " ".join(extra), "clients": args.clients,
            "requests": len(latencies) + len(errors), "errors": len(errors), "error_examples": errors[:3],
            "warmup_errors": len(warm_errors), "seconds": seconds,
            "throughput_per_s": len(latencies) / seconds if seconds else 0.0,
            "p50_ms": q[49], "p90_ms": q[89], "p99_ms": q[98], "max_ms": max(latencies, default=float("nan")),
            "mean_batch": texts_run / calls if calls else float("nan"),
            "rss_start_mib": rss_start, "rss_peak_mib": peak, "rss_half_mib": first[-1], "rss_end_mib": second[-1],
            "rss_growth_2nd_half_mib": max(second) - max(first), "rss_samples": len(sampler.samples),
            "rss_by_tenth_mib": [round(max([r for done, r in sampler.samples if done <= total * k // 10] or [rss_start]), 2)
                                 for k in range(1, 11)]}


def table(rows: list[dict]) -> str:
    lines = ["| server | clients | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms | texts/call "
             "| RSS after warm-up | RSS peak | RSS at 50 % | RSS at end | growth, 2nd half |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} (`{r['server_args']}`) | {r['clients']} | {r['requests']:,} | {r['errors']} | "
                     f"{r['throughput_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.1f} | {r['mean_batch']:.2f} | {r['rss_start_mib']:.1f} MiB | "
                     f"{r['rss_peak_mib']:.1f} MiB | {r['rss_half_mib']:.1f} MiB | {r['rss_end_mib']:.1f} MiB | "
                     f"{r['rss_growth_2nd_half_mib']:+.2f} MiB |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.platform()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", help="an exported model directory (default: the --build one)")
    ap.add_argument("--build", metavar="DIR", help="build the nano SLU INT8 ONNX model in DIR first")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop each configuration after this long")
    ap.add_argument("--config", action="append", metavar="LABEL=ARGS",
                    help="a server configuration to measure instead of the defaults, e.g. "
                         "'batching on, 2 workers=--max-batch 32 --workers 2' (repeatable)")
    ap.add_argument("--out", metavar="FILE.md", help="also write the table and the set-up here (and FILE.json)")
    args = ap.parse_args()
    model_dir = args.model_dir
    if args.build:
        t = time.time()
        model_dir = str(build_model(Path(args.build), args.data_dir))
        print(f"[bench_serve] built {model_dir} in {time.time() - t:.0f}s", flush=True)
    if not model_dir:
        ap.error("give MODEL_DIR or --build DIR")
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text(encoding="utf-8"))
    corpus = texts()
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    configs = dict(c.split("=", 1) for c in args.config) if args.config else {k: " ".join(v) for k, v in CONFIGS.items()}
    for name, server_args in configs.items():
        rows.append(run_config(model_dir, name, server_args.split(), args, corpus))
        print(f"[bench_serve] {name}: {rows[-1]['requests']} requests, {rows[-1]['errors']} errors, "
              f"{rows[-1]['throughput_per_s']:.0f} req/s", flush=True)
    load_after = os.getloadavg()
    from compress.common import deploy_size_bytes

    out = table(rows)
    print(out)
    for r in rows:
        print(f"  {r['config']}: largest RSS up to each tenth of the requests (MiB): {r['rss_by_tenth_mib']}")
        for e in r["error_examples"]:
            print(f"  {r['config']}: error: {e}")
    if args.out:
        command = "python experiments/benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
        size = deploy_size_bytes(model_dir) / 1e6
        md = [f"# `tinydistill serve` under load", "",
              f"Command: `{command}`  ", f"Date: {started}  ", f"Machine: {machine()}  ",
              f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in load_before)}, after: "
              f"{' / '.join(f'{x:.2f}' for x in load_after)} (the machine is shared with other jobs)  ",
              f"Model: `{model_dir}`: {manifest.get('arch') or manifest.get('kind')}, format {manifest['format']}, "
              f"precision {manifest.get('precision', 'fp32')}, {size:.2f} MB on disk, served on `onnxruntime-c`, "
              "server options as in the table (defaults otherwise: 1 intra-op thread, 1 worker)  ",
              f"Load: {args.clients} concurrent clients (threads of the load script, one kept-alive connection "
              f"each), one text per request, {args.warmup} warm-up requests first, then {args.requests:,} timed; "
              "latency as the client sees it (send to full response).", "", out, "",
              "RSS of the server process: after warm-up, peak (VmHWM), at half of the requests, at the end; "
              "growth, 2nd half = largest RSS sampled in the second half of the requests minus the largest in "
              "the first half (sampled every 50 ms)."]
        Path(args.out).write_text("\n".join(md) + "\n", encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"command": command, "date": started,
                                                                   "machine": machine(), "load_before": load_before,
                                                                   "load_after": load_after, "rows": rows},
                                                                  indent=2) + "\n", encoding="utf-8")
        print(f"[bench_serve] wrote {args.out}")
    if any(r["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
