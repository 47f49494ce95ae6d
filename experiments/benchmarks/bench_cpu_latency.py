"""End-to-end CPU time per call of model directories against a baseline, interleaved rounds (a script, not a test).

    python experiments/benchmarks/bench_cpu_latency.py BASELINE DIR [DIR ...] [--runtime onnxruntime-c] [--rounds 5]

Batch 1, 16 tokens, 1 thread, p50 over ``--runs`` calls after ``--warmup``, every directory in a fresh process,
the directories in alternating order each round (``make_slu_table.cpu_latencies``, the SLU table's own
measurement).  Prints each directory's per-round CPU p50 and its speed-up over BASELINE per round and their median:
for comparing two compressed models on this shared machine in one run (e.g. FFN-only against heads-and-FFN width
pruning, README "Results").
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("baseline")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--runtime", default="onnxruntime-c")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    dirs = [Path(d) for d in (args.baseline, *args.dirs)]
    for d in dirs:
        if not (d / "manifest.json").is_file():
            raise SystemExit(f"{d}: not a model directory (no manifest.json)")
    spec = importlib.util.spec_from_file_location("make_slu_table", ROOT / "experiments" / "results" / "make_slu_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    load = os.getloadavg()[0]
    cpu = table.cpu_latencies(dirs, args.runs, args.warmup, args.rounds, [args.runtime] * len(dirs))
    print(f"\nload average (1 min) {load:.2f} -> {os.getloadavg()[0]:.2f}; {args.runtime}, {args.rounds} rounds")
    for d, c in zip(dirs, cpu):
        print(f"{d}: CPU p50 ms per round {[round(x['cpu_p50'], 3) for x in c]}")
    for d, c in zip(dirs[1:], cpu[1:]):
        r = [a["cpu_p50"] / b["cpu_p50"] for a, b in zip(cpu[0], c)]
        print(f"{d}: speed-up over the baseline per round {[round(x, 2) for x in r]}, median {statistics.median(r):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
