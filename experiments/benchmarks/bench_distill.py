"""Training throughput of distillation vs plain fine-tuning of the same student, and the teacher-cache
speed-up, measured in one run (CPU, random-initialised models, real ChnSentiCorp lines).

    python experiments/benchmarks/bench_distill.py [--data-dir DIR] [--teacher ernie-3.0-tiny-mini-v2-zh]
        [--student ernie-3.0-tiny-pico-v2-zh] [--n-train 512] [--epochs 2] [--max-len 64] [--batch-size 32]

Runs, each from the same initial student weights:
  finetune      hard_ce only, no teacher (the no-KD baseline)
  kd-online     soft_ce + hard_ce, teacher forward on every step (teacher_cache: off)
  kd-cache-cold same with the teacher-output cache, empty cache (teacher logits computed once, stored)
  kd-cache-warm same again: every teacher output read from the cache (e.g. the next student of a sweep)
Examples/s count optimisation steps only (no evaluation); "end-to-end" adds the up-front teacher pass.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--teacher", default="ernie-3.0-tiny-mini-v2-zh")
    ap.add_argument("--student", default="ernie-3.0-tiny-pico-v2-zh")
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-dev", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="OMP threads (default: paddle's)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import paddle
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.trainer import train
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
    from tinydistill.teachers.base import build_model

    data = Path(args.data_dir)
    task = build_task("chnsenticorp", data_dir=str(data), max_seq_length=args.max_len)
    tok = ErnieWordPieceTokenizer(data / "vocab" / "ernie-3.0" / "vocab.txt")
    train_ex, dev_ex = task.load("train")[:args.n_train], task.load("dev")[:args.n_dev]
    paddle.seed(0)
    teacher = build_model("teacher", args.teacher, task.heads(), vocab_size=tok.vocab_size)
    student0 = build_model("student", args.student, task.heads(), vocab_size=tok.vocab_size)
    init_state = {k: v.clone() for k, v in student0.state_dict().items()}

    base = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 5e-5, "progress": False,
            "eval_batch_size": 64}
    kd = [{"type": "soft_ce", "temperature": 2.0}, {"type": "hard_ce", "weight": 0.5}]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("finetune", {"losses": [{"type": "hard_ce"}]}, False),
                ("kd-online", {"losses": kd, "teacher_cache": "off"}, True),
                ("kd-cache-cold", {"losses": kd, "cache_dir": f"{tmp}/cache"}, True),
                ("kd-cache-warm", {"losses": kd, "cache_dir": f"{tmp}/cache"}, True)]
        for name, extra, with_teacher in runs:
            student = copy.deepcopy(student0)
            student.set_state_dict(init_state)
            cfg = DistillConfig.from_dict({**base, **extra})
            t0 = time.perf_counter()
            res = train(student, tok, task, train_ex, dev_ex, cfg, f"{tmp}/{name}",
                        teachers=[(teacher, tok)] if with_teacher else [])
            wall = time.perf_counter() - t0
            rows.append({"run": name, "examples_per_s": res.examples_per_second, "train_s": res.train_seconds,
                         "teacher_s": res.teacher_seconds, "end_to_end_s": res.train_seconds + res.teacher_seconds,
                         "wall_s": wall, "cache": res.cache, "dev": res.best_metrics.get(task.main_metric)})
    by = {r["run"]: r for r in rows}
    print(f"teacher {args.teacher}, student {args.student}, {len(train_ex)} ChnSentiCorp lines x {args.epochs} "
          f"epochs, max_len {args.max_len}, batch {args.batch_size}, threads {os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'run':<15}{'train ex/s':>12}{'train s':>10}{'teacher s':>11}{'end-to-end s':>14}  cache")
    for r in rows:
        print(f"{r['run']:<15}{r['examples_per_s']:>12.1f}{r['train_s']:>10.2f}{r['teacher_s']:>11.2f}"
              f"{r['end_to_end_s']:>14.2f}  {r['cache'] or '-'}")
    ft = by["finetune"]["examples_per_s"]
    ratios = {
        "kd_online_vs_finetune_throughput": by["kd-online"]["examples_per_s"] / ft,
        "kd_cached_vs_finetune_throughput": by["kd-cache-warm"]["examples_per_s"] / ft,
        "cache_speedup_warm_vs_online_end_to_end": by["kd-online"]["end_to_end_s"] / by["kd-cache-warm"]["end_to_end_s"],
        "cache_speedup_cold_vs_online_end_to_end": by["kd-online"]["end_to_end_s"] / by["kd-cache-cold"]["end_to_end_s"],
    }
    print("ratios (same run):")
    for k, v in ratios.items():
        print(f"  {k:<42} {v:6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
