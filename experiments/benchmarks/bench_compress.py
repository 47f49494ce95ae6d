"""Compression-stage benchmark (a script, not a test): nano SLU student -> vocab_prune 6000 -> width_prune 0.75
-> qat -> embedding_int8 -> export, then one bench over the FP32 model and every step.

    python experiments/benchmarks/bench_compress.py [--model-dir DIR] [--out DIR] [--data-dir DIR]

Without ``--model-dir`` it first trains ``ernie-3.0-tiny-nano-v2-zh`` from scratch (no pretrained weights here)
briefly on the real NLPCC 2018 task 4 data, max_seq_length 16.  Prints size / latency / peak RSS / dev accuracy
and the ratios against the FP32 model measured on the same runtime, and checks the acceptance targets:
final size <= 7.8 % of FP32, end-to-end speed-up >= 2.13x (batch 1, seq 16, 1 thread), peak RSS >= 62 % lower,
dev sentence accuracy within 0.5 points.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import distill  # noqa: E402,F401  (pins the legacy program format before paddle is imported)


def train_student(out: Path, data_dir: str, epochs: int, max_train: int | None) -> Path:
    from distill.config import DistillConfig
    from distill.trainer import train
    from tasks import build_task
    from tasks.tokenization import ErnieWordPieceTokenizer
    from teachers.base import build_model

    task = build_task("nlpcc2018_slu", max_seq_length=16, data_dir=data_dir)
    tok = ErnieWordPieceTokenizer(Path(data_dir) / "vocab" / "ernie-3.0" / "vocab.txt")
    model = build_model("student", "ernie-3.0-tiny-nano-v2-zh", task.heads(), init="scratch",
                        vocab_size=tok.vocab_size)
    train_ex = task.load("train")[: max_train or None]
    cfg = DistillConfig(epochs=epochs, lr=5e-4, batch_size=64, warmup_ratio=0.1, seed=1, progress=True)
    result = train(model, tok, task, train_ex, task.load("dev"), cfg, out / "train")
    print(f"[bench_compress] FP32 student: dev {result.best_metrics}", flush=True)
    return Path(result.best_dir)


def dev_accuracy(model_dir: Path, data_dir: str) -> float:
    from compress.predictor import Predictor

    p = Predictor.from_dir(model_dir, data_dir=data_dir)
    return float(p.evaluate(p.task.load("dev"))[p.task.main_metric])


def rss_floor(model_dir: Path) -> float:
    """Peak RSS (MiB) of a process that sets up everything of the ONNX Runtime predictor but the session."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import numpy, onnxruntime\n"
            "from compress.common import read_manifest, build_task\n"
            "from compress.bench import peak_rss_kib\n"
            "from tasks.tokenization import load_tokenizer\n"
            "m = read_manifest(%r); t = load_tokenizer(%r, m['tokenizer']); task = build_task(m)\n"
            "print(peak_rss_kib() / 1024)") % (str(ROOT), str(model_dir), str(model_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a trained dygraph SLU model directory (default: train one)")
    ap.add_argument("--out", default="bench_compress_out")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of the FP32 student")
    ap.add_argument("--max-train", type=int, default=8000,
                    help="training examples for the student and the recovery/QAT steps (0: all ~17k)")
    ap.add_argument("--recover-epochs", type=int, default=1)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench-only", action="store_true", help="only measure the directories an earlier run left in --out")
    ap.add_argument("--fallback-tolerance", type=float, default=5.0,
                    help="dev points a quantisation step may lose on a retry after failing its 0.5-point check")
    args = ap.parse_args()

    from compress.common import ExportError
    from compress.export import export
    from compress.pipeline import run_steps
    from compress.steps import StepContext

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fp32 = Path(args.model_dir) if args.model_dir else train_student(out, args.data_dir, args.epochs, args.max_train)
    train_s = time.time() - t0

    ctx = StepContext(data_dir=args.data_dir, threads=args.threads, progress=False,
                      max_train_examples=args.max_train or None, log=lambda m: print(m, flush=True))
    steps = [{"step": "vocab_prune", "max_vocab_size": 6000},
             {"step": "width_prune", "width": 0.75, "recover": {"epochs": args.recover_epochs, "lr": 1e-4,
                                                                "batch_size": 64}},
             {"step": "qat", "epochs": args.qat_epochs, "lr": 2e-5, "batch_size": 64},
             {"step": "embedding_int8"}]
    t1 = time.time()
    if args.bench_only:  # measure the directories of an earlier run of this script in --out again
        return bench_and_report(args, out, fp32, train_s, None)
    reports = run_steps(fp32, steps[:2], out / "compressed", ctx)
    for i, step in enumerate(steps[2:], 3):
        try:
            reports += run_steps(reports[-1]["out_dir"], [step], out / "compressed", ctx, first=i)
        except ExportError as exc:  # report it, then go on with a looser check so the chain still finishes
            print(f"[bench_compress] CHECK FAILED: {exc}\n[bench_compress] retrying {step['step']} with tolerance "
                  f"{args.fallback_tolerance} to finish the chain (the miss is part of the result)", flush=True)
            reports += run_steps(reports[-1]["out_dir"], [{**step, "tolerance": args.fallback_tolerance}],
                                 out / "compressed", ctx, first=i)
    dirs = {r["step"]: Path(r["out_dir"]) for r in reports}
    for name, backend in (("onnx-int8", "onnx-int8"), ("ort-mobile", "ort-mobile")):
        r = export(dirs["embedding_int8"], backend, out / "export" / name, data_dir=args.data_dir)
        print(f"[bench_compress] export {name}: check {json.dumps(r['check'], default=str)[:300]}")
    compress_s = time.time() - t1
    # same-runtime references: the FP32 model and the pruned steps exported to ONNX / Paddle Inference
    for name, src in (("fp32", fp32), ("vocab_prune", dirs["vocab_prune"]), ("width_prune", dirs["width_prune"])):
        export(src, "onnx", out / "export" / f"{name}-onnx")
    export(fp32, "paddle-inference", out / "export" / "fp32-paddle-inference")
    return bench_and_report(args, out, fp32, train_s, compress_s, reports)


def bench_and_report(args, out: Path, fp32: Path, train_s: float, compress_s, reports=None) -> int:
    from compress.bench import bench_dirs, format_table

    c, e = out / "compressed", out / "export"
    if reports is None:
        reports = [json.loads((c / d / "report.json").read_text()) for d in
                   ("1-vocab_prune", "2-width_prune", "3-qat", "4-embedding_int8")]
    table = [("FP32 (paddle dygraph)", fp32), ("FP32 onnx", e / "fp32-onnx"),
             ("FP32 paddle-inference", e / "fp32-paddle-inference"),
             ("vocab_prune onnx", e / "vocab_prune-onnx"), ("width_prune onnx", e / "width_prune-onnx"),
             ("qat paddle-inference", c / "3-qat"), ("emb_int8 paddle-inference", c / "4-embedding_int8"),
             ("final onnx-int8", e / "onnx-int8"), ("final ort-mobile", e / "ort-mobile")]
    results = bench_dirs([d for _, d in table], threads=args.threads, runs=args.runs,
                         log=lambda m: print(m, flush=True))
    for (name, d), r in zip(table, results):
        r["name"], r["dev_accuracy"] = name, dev_accuracy(d, args.data_dir)
    print()
    print(format_table(results, [n for n, _ in table]))
    print("\ndev sentence accuracy: " + ", ".join(f"{r['name']} {r['dev_accuracy']:.2f}" for r in results))

    by = {r["name"]: r for r in results}

    def versus(a: str, b: str) -> dict:
        x, y = by[a], by[b]
        return {"size_pct": 100.0 * y["size_bytes"] / x["size_bytes"],
                "e2e_speedup": x["e2e_ms"]["p50"] / y["e2e_ms"]["p50"],
                "model_speedup": x["model_ms"]["p50"] / y["model_ms"]["p50"],
                "rss_reduction_pct": 100.0 * (1 - y["peak_rss_mib"] / x["peak_rss_mib"]),
                "accuracy_delta": y["dev_accuracy"] - x["dev_accuracy"]}

    acceptance = {"onnxruntime: FP32 onnx -> final onnx-int8": versus("FP32 onnx", "final onnx-int8"),
                  "onnxruntime: FP32 onnx -> final ort-mobile": versus("FP32 onnx", "final ort-mobile"),
                  "paddle-inference: FP32 -> emb_int8": versus("FP32 paddle-inference", "emb_int8 paddle-inference")}
    print("\nacceptance (targets: size <= 7.8 %, e2e speed-up >= 2.13x, RSS >= 62 % lower, accuracy >= -0.5):")
    for name, v in acceptance.items():
        ok = {"size": v["size_pct"] <= 7.8, "speed": v["e2e_speedup"] >= 2.13, "rss": v["rss_reduction_pct"] >= 62,
              "acc": v["accuracy_delta"] >= -0.5}
        v["met"] = ok
        print(f"  {name}: size {v['size_pct']:.1f} % [{'ok' if ok['size'] else 'MISSED'}], e2e speed-up "
              f"{v['e2e_speedup']:.2f}x [{'ok' if ok['speed'] else 'MISSED'}] (model-only {v['model_speedup']:.2f}x), "
              f"peak RSS -{v['rss_reduction_pct']:.1f} % [{'ok' if ok['rss'] else 'MISSED'}], accuracy "
              f"{v['accuracy_delta']:+.2f} [{'ok' if ok['acc'] else 'MISSED'}]")
    floor = rss_floor(e / "ort-mobile")
    print(f"  RSS floor of the ONNX Runtime predictor process (python + numpy + onnxruntime + tokenizer + task, "
          f"no model session): {floor:.1f} MiB; model-attributable peak RSS: FP32 onnx "
          f"{by['FP32 onnx']['peak_rss_mib'] - floor:.1f} MiB -> final ort-mobile "
          f"{by['final ort-mobile']['peak_rss_mib'] - floor:.1f} MiB")
    per_step = ", ".join(f"{r['step']} {r.get('seconds', 0):.0f} s" for r in reports)
    total = f"{compress_s:.0f} s" if compress_s is not None else "(earlier run)"
    print(f"\ntime: FP32 training {train_s:.0f} s; compression steps + exports {total} ({per_step})")
    from distill.fsutil import write_json

    write_json(out / "bench_compress.json", {"results": results, "acceptance": acceptance, "steps": reports,
                                             "train_seconds": train_s, "compress_seconds": compress_s})
    return 0


if __name__ == "__main__":
    sys.exit(main())
